"""``ltprune report RUN_DIR``: one self-contained HTML page for a run folder.

Why: a run folder holds many plots and JSON files spread over sub-folders; the page gathers
them (images embedded as base64 data URIs, so the single file can be mailed or archived with no
broken links), the tables the experiments write, and what no plot shows: for a few dev
texts, each token shaded by the layer at which the model removed it (``outputs.ltp.pruned_at``),
with a legend. That needs a checkpoint (``--model``, else the first ``.../hard/final`` found in
the folder) and texts (``--texts-file``, ``--task`` with the data options, ``--squad-file`` for a
QA model, else the task named in the folder's ``metrics.json`` when it loads offline).
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
from pathlib import Path

import numpy as np
import torch

from . import __version__, checkpoint, data
from .errors import ConfigError, LTPError, read_json
from .loading import load_tokenizer
from .names import CONFIG_KEY, is_qa_class
from .qa import read_squad_json
from .sweep import format_table1, load_points, table1

log = logging.getLogger("ltprune")

#: Plots listed first, in this order (others follow, sorted by path).
KNOWN_PLOTS = ("curve.png", "qa_curve.png", "robustness.png", "lengths.png", "kept_per_layer.png",
               "length_correct.png", "bench.png")
TABLES = ("robustness.md", "lengths.md")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;
color:#1b1b1b;line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{margin:12px 0 24px}figure img{max-width:100%;border:1px solid #e3e3e3}
figcaption{color:#555;font-size:.85em}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.8em}
.legend{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 16px;font-size:.85em;align-items:center}
.legend span.sw{display:inline-block;padding:2px 8px;border-radius:3px;border:1px solid #bbb}
.example{border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:12px 0}
.example .info{color:#555;font-size:.85em;margin-bottom:6px}
.text{font-size:1.05em;line-height:2.0}
.tok{padding:2px 1px;border-radius:3px}
.special{font-size:.75em;font-variant:small-caps;border:1px dashed #999}
"""


# --------------------------------------------------------------------------------------------
# pieces of the page
# --------------------------------------------------------------------------------------------


def data_uri(png: Path) -> str:
    data = Path(png).read_bytes()
    if not data.startswith(PNG_MAGIC):
        raise LTPError(f"{png}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def find_plots(run_dir, limit: int = 60) -> list[Path]:
    """PNG files under ``run_dir`` (not inside Trainer checkpoints), known plots first."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.rglob("*.png")
             if not any(part.startswith("checkpoint-") for part in p.relative_to(run_dir).parts)]
    rank = {name: i for i, name in enumerate(KNOWN_PLOTS)}
    found.sort(key=lambda p: (rank.get(p.name, len(rank)), len(p.relative_to(run_dir).parts), str(p)))
    return found[:limit]


def find_checkpoint(run_dir) -> Path | None:
    """The shallowest ltprune checkpoint named ``hard/final`` under ``run_dir`` (else any ``final``)."""
    run_dir = Path(run_dir)
    finals = []
    for config in run_dir.rglob("final/config.json"):
        try:
            if CONFIG_KEY not in read_json(config):
                continue
        except LTPError:  # unreadable: not a checkpoint this page can show
            continue
        folder = config.parent
        finals.append((folder.parent.name != "hard", len(folder.relative_to(run_dir).parts), str(folder), folder))
    return min(finals)[3] if finals else None


def markdown_to_html(text: str) -> str:
    """The markdown the experiments write: pipe tables and plain paragraphs (``**bold**`` kept)."""
    def inline(s: str) -> str:
        s = html.escape(s)
        parts = s.split("**")
        return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

    out, table = [], []

    def flush():
        if not table:
            return
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
        body = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
        out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in body[0]) + "</tr>" +
                   "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body[1:]) +
                   "</table>")
        table.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def metrics_table(run_dir, limit: int = 40) -> str:
    """One row per ``metrics.json`` under ``run_dir``: metric, relative FLOPs, GFLOPs, mode."""
    run_dir = Path(run_dir)
    rows = []
    for path in sorted(run_dir.rglob("metrics.json"), key=lambda p: (len(p.parts), str(p)))[:limit]:
        if any(part.startswith("checkpoint-") for part in path.relative_to(run_dir).parts):
            continue
        try:
            m = read_json(path)
        except LTPError:
            continue
        if "metric" not in m:
            continue
        rel = path.parent.relative_to(run_dir).as_posix() or "."
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            rel, m.get("task", ""), m.get("metric_name", ""), _fmt(m.get("metric"), 4),
            _fmt(m.get("relative_flops"), 3), _fmt(m.get("gflops"), 4), m.get("num_examples", ""),
            m.get("mode", ""))) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("folder", "task", "metric", "value", "relative FLOPs", "GFLOPs",
                                              "examples", "mode"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _fmt(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


# --------------------------------------------------------------------------------------------
# tokens shaded by the layer that removed them
# --------------------------------------------------------------------------------------------


def layer_colors(num_layers: int) -> list[str]:
    """num_layers + 1 background colours: pruned at layer 1 (palest) ... kept to the end (darkest)."""
    import matplotlib

    cmap = matplotlib.colormaps["YlGnBu"]
    return [matplotlib.colors.to_hex(cmap(v)) for v in np.linspace(0.08, 0.95, num_layers + 1)]


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#fff" if 0.299 * r + 0.587 * g + 0.114 * b < 140 else "#111"


def legend_html(num_layers: int) -> str:
    colors = layer_colors(num_layers)
    items = [f'<span class="sw" style="background:{c};color:{_text_colour(c)}">'
             f'{"pruned at layer " + str(i + 1) if i < num_layers else f"kept (all {num_layers} layers)"}</span>'
             for i, c in enumerate(colors)]
    return '<div class="legend"><b>Legend:</b> ' + "".join(items) + "</div>"


def prune_tokens(model, tokenizer, texts, max_length: int = 256) -> list[dict]:
    """Run ``model`` (hard pruning, eval) on each text; per text its tokens with character spans,
    the layer that removed each (``pruned_at``; num_layers = kept) and the prediction."""
    model.eval()
    device = next(model.parameters()).device
    is_qa = is_qa_class(type(model).__name__)
    id2label = getattr(model.config, "id2label", None) or {}
    out = []
    for item in texts:
        parts = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        enc = tokenizer(*parts, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        seq_ids = enc.sequence_ids(0)
        with torch.no_grad():
            res = model(**{k: v.to(device) for k, v in enc.items()})
        rec = res.ltp
        pruned_at = rec.pruned_at[0].tolist()
        names = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        tokens = [{"token": name, "segment": s, "start": o[0], "end": o[1], "pruned_at": p}
                  for name, s, o, p in zip(names, seq_ids, offsets, pruned_at)]
        entry = {"parts": parts, "tokens": tokens, "num_layers": rec.num_layers,
                 "tokens_kept": rec.tokens_kept[0].tolist(), "relative_flops": rec.relative_flops}
        if not is_qa and getattr(res, "logits", None) is not None:
            logits = res.logits[0].float()
            if logits.numel() == 1:
                entry["prediction"] = f"score {float(logits[0]):.3f}"
            else:
                probs = logits.softmax(-1)
                cls = int(probs.argmax())
                entry["prediction"] = f"{id2label.get(cls, cls)} ({float(probs[cls]):.2f})"
        out.append(entry)
    return out


def tokens_html(entry: dict) -> str:
    """One text as spans shaded by pruning layer; the original spacing is kept between tokens."""
    colors = layer_colors(entry["num_layers"])
    parts, pieces = entry["parts"], []
    prev_segment, prev_end = None, 0
    for tok in entry["tokens"]:
        layer = tok["pruned_at"]
        if layer < 0:  # padding
            continue
        color = colors[min(layer, entry["num_layers"])]
        title = (f"kept through all {entry['num_layers']} layers" if layer >= entry["num_layers"]
                 else f"pruned at layer {layer + 1} of {entry['num_layers']}")
        seg = tok["segment"]
        special = seg is None or tok["end"] <= tok["start"]
        if special:
            label, cls = tok["token"], "tok special"
            if pieces:
                pieces.append(" ")
            prev_segment = None  # the next text starts afresh after [SEP] / </s>
        else:
            if seg == prev_segment:
                pieces.append(html.escape(parts[seg][prev_end:tok["start"]]))  # the original spacing
            label, cls = parts[seg][tok["start"]:tok["end"]], "tok"
            prev_segment, prev_end = seg, tok["end"]
        pieces.append(f'<span class="{cls}" data-layer="{layer}" title="{html.escape(title)}" '
                      f'style="background:{color};color:{_text_colour(color)}">{html.escape(label)}</span>')
        if special:
            pieces.append(" ")
    kept = " → ".join(str(k) for k in entry["tokens_kept"])
    n = sum(1 for t in entry["tokens"] if t["pruned_at"] >= 0)
    info = f"{n} tokens; alive after each layer: {kept}; relative FLOPs {entry['relative_flops']:.3f}"
    if "prediction" in entry:
        info += f"; prediction: {html.escape(str(entry['prediction']))}"
    return f'<div class="example"><div class="info">{info}</div><div class="text">{"".join(pieces)}</div></div>'


def pick_texts(dataset, num: int) -> list:
    """``num`` texts spread over the length range (shortest, ..., longest) of a load_task split."""
    texts = dataset["text"]
    pairs = dataset["text_pair"] if "text_pair" in dataset.column_names else None
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]) + (len(pairs[i]) if pairs else 0), i))
    picks = sorted({order[int(round(x))] for x in np.linspace(0, len(order) - 1, min(num, len(order)))},
                   key=order.index)
    return [(texts[i], pairs[i]) if pairs else texts[i] for i in picks]


def _texts_from_folder(run_dir: Path, num: int):
    """The task named by the folder's metrics.json, when it loads (offline names, local paths)."""
    for path in sorted(run_dir.rglob("metrics.json"), key=lambda p: len(p.parts)):
        try:
            task = read_json(path).get("task")
        except LTPError:
            continue
        if not task or task == "squad_v2":
            continue
        try:
            dsd, _ = data.load_task(task)
        except Exception:  # not loadable from here (a custom file's stem, no hub): try the next
            continue
        split = dsd["validation"] if "validation" in dsd else dsd["train"]
        return pick_texts(split, num), f"dev texts of {task} (named in {path.relative_to(run_dir)})"
    return None, None


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------


def build_report(run_dir, output=None, *, model=None, texts=None, task=None, data_kwargs: dict | None = None,
                 squad_file=None, num_examples: int = 4, max_length: int = 256, title: str | None = None) -> Path:
    """Write the page (default ``RUN_DIR/report.html``) and return its path.

    ``texts``: strings or (text, pair) tuples to shade; else ``task`` (+ ``data_kwargs``) picks
    ``num_examples`` dev texts across the length range; else ``squad_file`` (question, context)
    pairs; else the task named in the folder's metrics.json. ``model``: the checkpoint to run
    (default: the folder's ``hard/final``).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LTPError(f"{run_dir}: no such folder")
    if num_examples < 0:
        raise ConfigError(f"num_examples must be >= 0, got {num_examples}")
    output = Path(output) if output is not None else run_dir / "report.html"
    sections = []

    summary = metrics_table(run_dir)
    points = run_dir / "points.json"
    if points.is_file():
        try:
            summary += "<h3>Table 1 (lowest FLOPs within 1 point)</h3><pre>" + \
                       html.escape(format_table1(table1(load_points(run_dir)))) + "</pre>"
        except (LTPError, KeyError, TypeError) as exc:
            log.warning("report: cannot make Table 1 from %s (%s)", points, exc)
    for name in TABLES:
        for path in sorted(run_dir.rglob(name))[:4]:
            summary += f"<h3>{html.escape(path.relative_to(run_dir).as_posix())}</h3>" + \
                       markdown_to_html(path.read_text())
    if summary:
        sections.append(f'<section id="summary"><h2>Results</h2>{summary}</section>')

    figures = []
    for png in find_plots(run_dir):
        try:
            uri = data_uri(png)
        except LTPError as exc:
            log.warning("report: %s", exc)
            continue
        rel = html.escape(png.relative_to(run_dir).as_posix())
        figures.append(f'<figure><img src="{uri}" alt="{rel}"><figcaption>{rel}</figcaption></figure>')
    sections.append('<section id="plots"><h2>Plots</h2>' +
                    ("".join(figures) or "<p>No plots (PNG files) in this folder.</p>") + "</section>")

    sections.append(_token_section(run_dir, model, texts, task, data_kwargs, squad_file, num_examples, max_length))


    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    heading = html.escape(title or f"ltprune report: {run_dir.resolve().name}")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{heading}</title>'
            f"<style>{_CSS}</style></head><body><h1>{heading}</h1>"
            f'<p class="meta">{html.escape(str(run_dir.resolve()))} · ltprune {__version__} · {stamp}</p>'
            + "\n".join(sections) + "</body></html>\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output


def _token_section(run_dir, model, texts, task, data_kwargs, squad_file, num_examples, max_length) -> str:
    head = '<section id="tokens"><h2>Where tokens are pruned</h2>'
    if num_examples == 0:
        return head + "<p>Skipped (no examples asked for).</p></section>"
    ckpt = Path(model) if model is not None else find_checkpoint(run_dir)
    if ckpt is None:
        return head + ("<p>No checkpoint found (no <code>.../hard/final</code>); pass <code>--model</code>.</p>"
                       "</section>")
    source = "the given texts"
    if texts is None and task is not None:
        dsd, _ = data.load_task(task, **(data_kwargs or {}))
        texts = pick_texts(dsd["validation"] if "validation" in dsd else dsd["train"], num_examples)
        source = f"dev texts of {task}"
    if texts is None and squad_file is not None:
        ds = read_squad_json(squad_file)
        idx = np.linspace(0, len(ds) - 1, min(num_examples, len(ds))).round().astype(int)
        texts = [(ds[int(i)]["question"], ds[int(i)]["context"]) for i in dict.fromkeys(idx.tolist())]
        source = f"questions of {Path(squad_file).name}"
    if texts is None:
        texts, source = _texts_from_folder(run_dir, num_examples)
    if not texts:
        return head + ("<p>No texts to show: pass <code>--task</code>, <code>--texts-file</code> or "
                       "<code>--squad-file</code>.</p></section>")

    try:
        net = checkpoint.from_pretrained(ckpt, mode="hard")
        tokenizer = load_tokenizer(str(ckpt))
        entries = prune_tokens(net, tokenizer, list(texts)[:num_examples], max_length)
    except (LTPError, TypeError, ValueError) as exc:  # e.g. an image model: the rest of the page stands
        log.warning("report: no token view (%s)", exc)
        return head + f"<p>No token view for {html.escape(str(ckpt))}: {html.escape(str(exc))}</p></section>"
    layers = entries[0]["num_layers"]
    try:
        ckpt_label = ckpt.relative_to(run_dir).as_posix()
    except ValueError:
        ckpt_label = str(ckpt)
    intro = (f"<p>Checkpoint <code>{html.escape(ckpt_label)}</code> (hard pruning), {html.escape(source)}. "
             "Each token is shaded by the layer that removed it; hover for details. "
             "Special tokens are boxed.</p>")
    return head + intro + legend_html(layers) + "".join(tokens_html(e) for e in entries) + "</section>"


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


__all__ = ["build_report", "find_plots", "find_checkpoint", "prune_tokens", "tokens_html", "legend_html",
           "layer_colors", "markdown_to_html", "metrics_table", "pick_texts", "data_uri"]
