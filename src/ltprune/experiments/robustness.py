"""Robustness to input length (paper §4.3, Table 3): trained on short inputs only, does the
pruning still fit long ones?

LAT searches ONE absolute length per layer for a whole data set; LTP learns thresholds on
scores, so how many tokens it keeps follows each input. The claim is that the first over-prunes
inputs longer than those it was tuned on and the second does not. Protocol (paper §4.3):

* the dev median Q2 and third quartile Q3 of token lengths define three dev buckets:
  ``~Q2`` (length <= Q2), ``Q2~Q3`` (Q2 < length <= Q3), ``Q3~`` (length > Q3);
* every model is trained only on training examples with length <= Q2, and selected on the
  ``~Q2`` bucket (same rule as the bucket, so no long input is seen at all);
* LTP at each lambda; LAT's configuration is searched on ``~Q2`` to the relative FLOPs that
  LTP model reaches on ``~Q2``, so both start from equal cost ("similar FLOPs on ~Q2");
* each model is evaluated on every bucket: metric and relative FLOPs.

Layout (resumable like the sweep: finished rows are reused, stages resume)::

    output_dir/robustness.json   quartiles, buckets, one row per (method, knob)
    output_dir/robustness.md     Table 3
    output_dir/robustness.png    metric and FLOPs per bucket
    output_dir/finetune/         with finetune=True: fine-tuned on the short examples
    output_dir/<method>/<knob>/<bucket>/metrics.json (+ examples.jsonl for the per-example plots)
    output_dir/lat/lengthdrop/   the one LengthDrop model; lat/<knob>/search.json its searches
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..baselines import lat
from ..baselines.lat import configure_length, length_config_flops
from ..config import LTPConfig
from ..errors import ConfigError, LTPError
from ..patch import configured, get_dims, set_mode
from .runner import (Experiment, PointStore, classification_data, find_point, finished, lengthdrop_model,
                     stage_args_for)

log = logging.getLogger("ltprune")

BUCKETS = ("~Q2", "Q2~Q3", "Q3~")
BUCKET_DIRS = {"~Q2": "to_q2", "Q2~Q3": "q2_q3", "Q3~": "from_q3"}
RESULTS = "robustness.json"
METHODS = ("unpruned", "ltp", "lat")


def length_buckets(lengths) -> dict:
    """Q2, Q3 of ``lengths`` and the indices of each bucket (``~Q2``, ``Q2~Q3``, ``Q3~``)."""
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        raise LTPError("no dev examples to split by length")
    q2, q3 = (float(v) for v in np.percentile(lengths, [50, 75]))
    masks = {"~Q2": lengths <= q2, "Q2~Q3": (lengths > q2) & (lengths <= q3), "Q3~": lengths > q3}
    return {"q2": q2, "q3": q3, "indices": {k: np.flatnonzero(m).tolist() for k, m in masks.items()}}


def _describe(lengths) -> dict:
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return {"n": 0}
    return {"n": int(lengths.size), "min_length": int(lengths.min()), "max_length": int(lengths.max()),
            "mean_length": round(float(lengths.mean()), 3)}


class _Run(Experiment):
    """The runner of the experiment: it trains on the short training examples (length <= Q2),
    evaluates a stage on ``~Q2`` while it trains, and scores every model on each bucket."""

    name = "robustness"

    def __init__(self, model, task, output_dir, ltp, stage_args, data_kwargs, max_length, eval_batch_size):
        self.output_dir = Path(output_dir)
        stage_args = stage_args_for(stage_args)
        kind, tokenizer, tokenized = classification_data(model, task, data_kwargs, max_length)
        dev = tokenized["validation"]
        split = length_buckets([len(ids) for ids in dev["input_ids"]])
        self.q2, self.q3 = split["q2"], split["q3"]
        self.buckets = {name: dev.select(idx) for name, idx in split["indices"].items()}
        train_len = np.array([len(ids) for ids in tokenized["train"]["input_ids"]])
        train = tokenized["train"].select(np.flatnonzero(train_len <= self.q2).tolist())
        if len(train) == 0:
            raise LTPError(f"no training example is as short as the dev median ({self.q2:g} tokens)")
        if len(self.buckets["~Q2"]) == 0:
            raise LTPError("the ~Q2 dev bucket is empty")
        super().__init__(kind, tokenizer, train, self.buckets["~Q2"], model_path=model, ltp=ltp,
                         stage_args=stage_args, eval_batch_size=eval_batch_size)
        self.meta = {
            "task": self.info.name, "metric_name": self.info.metric, "q2": self.q2, "q3": self.q3,
            "train_examples": {"total": int(train_len.size), "used (length <= Q2)": len(self.train),
                               **{k: v for k, v in _describe(train_len[train_len <= self.q2]).items() if k != "n"}},
            "buckets": {name: _describe([len(ids) for ids in ds["input_ids"]]) for name, ds in self.buckets.items()},
        }

    def load(self, path=None, lambda_=None):
        """A fresh patched copy of a checkpoint, thresholds at their initial schedule."""
        ltp = self.ltp if lambda_ is None else self.ltp.replace(lambda_=float(lambda_), method="threshold",
                                                                 keep_ratios=None, keep_lengths=None)
        return super().load(path, ltp)

    def evaluate(self, model, run_dir: Path) -> dict:
        """Metric and FLOPs on each bucket (None for an empty one); records written per bucket."""
        out = {}
        for name, ds in self.buckets.items():
            if len(ds) == 0:
                out[name] = None
                continue
            result = super().evaluate(model, run_dir / BUCKET_DIRS[name], dataset=ds)
            out[name] = {"metric": result["metric"], "relative_flops": result["relative_flops"],
                         "gflops": result["gflops"], "baseline_gflops": result["baseline_gflops"],
                         "n": result["num_examples"], "tokens_kept_per_layer": result["tokens_kept_per_layer"]}
        return out


def _load(output_dir) -> dict:
    return PointStore(Path(output_dir) / RESULTS, rows_key="rows").read()


def _find(rows, method, knob):
    return find_point(rows, None, method, knob)


def _save_row(output_dir, meta: dict, row: dict) -> None:
    store = PointStore(Path(output_dir) / RESULTS, rows_key="rows")
    data = store.read()
    if data.get("q2") not in (None, meta["q2"]) or data.get("task") not in (None, meta["task"]):
        raise LTPError(f"{store.path} holds another task or split; use a new output folder")
    store.add(row, header=meta)


def run_robustness(model, task, output_dir, lambdas=(0.1,), *, methods=("ltp", "lat"), finetune: bool = False,
                   ltp: LTPConfig | None = None, stage_args: dict | None = None, data_kwargs: dict | None = None,
                   max_length: int | None = None, eval_batch_size: int = 64, search_kwargs: dict | None = None,
                   length_drop_prob: float = 0.2) -> dict:
    """Table 3 for one task; returns the content of ``robustness.json`` (also written, with the
    markdown table and the plot).

    ``model``: a checkpoint fine-tuned on the task or, with ``finetune=True``, a base checkpoint
    fine-tuned first on the short training examples only (the strict protocol: nothing long is
    ever seen). ``lambdas``: one LTP model each, each with a LAT model matched to its ~Q2 FLOPs.
    ``stage_args``: StageArgs per stage (finetune, soft, hard, lengthdrop); ``search_kwargs`` go
    to ``baselines.lat.search_length_config``.
    """
    unknown = set(methods) - {"ltp", "lat"}
    if unknown or not methods:
        raise ConfigError(f"methods must be ltp and/or lat; got {list(methods)}")
    lambdas = [float(v) for v in lambdas]
    if not lambdas or not all(math.isfinite(v) and v >= 0 for v in lambdas):
        raise ConfigError(f"lambdas must be a non-empty list of numbers >= 0, got {lambdas}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(model, task, output_dir, ltp, stage_args, data_kwargs, max_length, eval_batch_size)
    log.warning("robustness: Q2 %g, Q3 %g tokens; training on %d of %d examples; buckets %s", run.q2, run.q3,
                len(run.train), run.meta["train_examples"]["total"],
                {k: v["n"] for k, v in run.meta["buckets"].items()})
    if finetune:
        ft_dir = output_dir / "finetune"
        if not finished(ft_dir):
            run.stage(run.load(), "finetune", ft_dir)
        run.model_path = str(ft_dir / "final")

    def done(method, knob):
        return _find(_load(output_dir).get("rows", []), method, knob)

    if done("unpruned", None) is None:
        _save_row(output_dir, run.meta, {"method": "unpruned", "knob": None,
                                         "buckets": run.evaluate(set_mode(run.load(), "off"), output_dir / "unpruned")})
    for lam in lambdas:
        if done("ltp", lam) is None:
            run_dir = output_dir / "ltp" / f"{lam:g}"
            m = run.stage(run.load(lambda_=lam), "soft", run_dir / "soft")
            m = run.stage(m, "hard", run_dir / "hard")
            _save_row(output_dir, run.meta, {"method": "ltp", "knob": lam, "buckets": run.evaluate(m, run_dir)})
        row = done("ltp", lam)
        log.warning("robustness: LTP lambda %g: %s", lam, _brief(row))
    if "lat" in methods:
        lat_model = None
        for lam in lambdas:
            if done("lat", lam) is not None:
                continue
            lat_model = lat_model if lat_model is not None else lengthdrop_model(
                run.load, run.tokenizer, run.train, run.buckets["~Q2"], run.info, output_dir, run.stage_args["lengthdrop"],
                length_drop_prob)
            target = done("ltp", lam)["buckets"]["~Q2"]["relative_flops"]
            _save_row(output_dir, run.meta, _lat_row(run, lat_model, lam, target, output_dir / "lat" / f"{lam:g}",
                                                     length_drop_prob, search_kwargs or {}))
            log.warning("robustness: LAT matched to lambda %g: %s", lam, _brief(done("lat", lam)))
    data = _load(output_dir)
    (output_dir / "robustness.md").write_text(format_table3(data) + "\n")
    plot_robustness(data, output_dir / "robustness.png")
    return data


def _lat_row(run: _Run, model, lam: float, target: float, run_dir: Path, length_drop_prob: float,
             search_kwargs: dict) -> dict:
    """Search one length configuration on ~Q2 under ``target`` FLOPs, then evaluate every bucket."""
    short = run.buckets["~Q2"]
    dims = get_dims(model)
    least = length_config_flops([1] * dims.num_layers, [len(x) for x in short["input_ids"]], dims.hidden,
                                dims.intermediate, dims.windows, dims.position_keys)
    if target < least:
        log.warning("robustness: LTP's ~Q2 FLOPs %.4f are below what LAT can reach (%.4f); searching at that",
                    target, least)
    goal = max(float(target), least)
    kwargs = {"length_drop_prob": length_drop_prob, "batch_size": run.eval_batch_size, **search_kwargs}
    best = lat.search_length_config(model, short, run.info, run.pad_id, goal, state_file=run_dir / "search.json",
                                **kwargs)
    with configured(model):
        configure_length(model, best["keep_lengths"])
        buckets = run.evaluate(model, run_dir)
    return {"method": "lat", "knob": lam, "flops_target": goal, "keep_lengths": best["keep_lengths"],
            "buckets": buckets}


def _brief(row) -> str:
    return ", ".join(f"{k} {v['metric']:.4f} @ {v['relative_flops']:.3f}" if v else f"{k} (empty)"
                     for k, v in row["buckets"].items())


def format_table3(data: dict) -> str:
    """Table 3 as markdown: metric and relative FLOPs per bucket, one row per model, then the
    LTP - LAT difference per lambda."""
    if not data.get("rows"):
        raise LTPError("no robustness results yet")
    b = data["buckets"]
    lines = [f"**{data['task']}**: trained on {data['train_examples']['used (length <= Q2)']} of "
             f"{data['train_examples']['total']} training examples (length <= dev median Q2 = {data['q2']:g} "
             f"tokens; Q3 = {data['q3']:g}). Dev buckets: " +
             ", ".join(f"{k} n={b[k]['n']}" + (f" ({b[k]['min_length']}-{b[k]['max_length']} tokens)"
                                               if b[k]["n"] else "") for k in BUCKETS) + ".",
             "",
             "| model | " + " | ".join(f"{k} {data['metric_name']} | {k} FLOPs" for k in BUCKETS) + " |",
             "|---|" + "---:|" * (2 * len(BUCKETS))]

    def cell(v, key):
        return "-" if v is None else f"{v[key]:.4f}" if key == "metric" else f"{v[key]:.3f}"

    order = {m: i for i, m in enumerate(METHODS)}
    rows = sorted(data["rows"], key=lambda r: (r["knob"] if r["knob"] is not None else -1, order[r["method"]]))
    for r in rows:
        name = ("unpruned" if r["method"] == "unpruned" else f"LTP (lambda {r['knob']:g})" if r["method"] == "ltp"
                else f"LAT (matched to lambda {r['knob']:g})")
        lines.append(f"| {name} | " + " | ".join(f"{cell(r['buckets'][k], 'metric')} | "
                                                 f"{cell(r['buckets'][k], 'relative_flops')}" for k in BUCKETS) + " |")
    for r in rows:
        lat = _find(data["rows"], "lat", r["knob"]) if r["method"] == "ltp" else None
        if lat is not None:
            cells = []
            for k in BUCKETS:
                a, c = r["buckets"][k], lat["buckets"][k]
                cells += ["-" if a is None or c is None else f"{a['metric'] - c['metric']:+.4f}", ""]
            lines.append(f"| LTP - LAT (lambda {r['knob']:g}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_robustness(data: dict, path) -> Path:
    """Metric (left) and relative FLOPs (right) per length bucket, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = {"unpruned": ("gray", "--", "o"), "ltp": ("tab:blue", "-", "o"), "lat": ("tab:orange", "-", "^")}
    x = np.arange(len(BUCKETS))
    for r in data["rows"]:
        color, line, marker = styles[r["method"]]
        label = r["method"] if r["knob"] is None else f"{r['method']} (lambda {r['knob']:g})"
        for ax, key in ((left, "metric"), (right, "relative_flops")):
            ys = [math.nan if r["buckets"][k] is None else r["buckets"][k][key] for k in BUCKETS]
            ax.plot(x, ys, linestyle=line, marker=marker, color=color, label=label, alpha=0.9)
    for ax, ylabel in ((left, f"dev {data['metric_name']}"), (right, "relative FLOPs")):
        ax.set_xticks(x, [f"{k}\n(n={data['buckets'][k]['n']})" for k in BUCKETS])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"{data['task']}: trained on inputs <= {data['q2']:g} tokens (dev Q2), evaluated per length bucket",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


__all__ = ["BUCKETS", "length_buckets", "run_robustness", "format_table3", "plot_robustness"]
