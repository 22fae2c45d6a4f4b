"""``ltprune report``: one self-contained HTML page (plots as data URIs, tables, tokens shaded by
the layer that pruned them), checked on its structure; no browser needed."""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

import ltprune
from ltprune import report
from ltprune.cli import report as report_cli
from ltprune.experiments import per_example

from conftest import offline_model_dir

FIXTURES = Path(__file__).parent / "fixtures"
LENGTHS_TASK = FIXTURES / "lengths"
PNG = b"\x89PNG\r\n\x1a\n"
THRESHOLDS = [0.0, 0.006, 0.0085, 0.011]  # a random model's scores straddle these: pruning at several layers


class _Page(HTMLParser):
    """Collects tags, attributes and the token spans of each example."""

    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.sections, self.examples, self.swatches = [], [], [], [], 0
        self._in_text = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        cls = a.get("class", "") or ""
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "section":
            self.sections.append(a.get("id"))
        if tag == "div" and cls == "text":
            self.examples.append([])
        if tag == "span" and "tok" in cls.split():
            self.examples[-1].append({"layer": int(a["data-layer"]), "special": "special" in cls, "title": a["title"]})
        if tag == "span" and cls == "sw":
            self.swatches += 1


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(offline_model_dir())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tokenizer):
    """A run folder as the tools leave it: a hard checkpoint, metrics, plots, a table, and a
    Trainer checkpoint whose files must be ignored."""
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=48, num_labels=2,
                                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = ltprune.patch(transformers.BertForSequenceClassification(config).eval(), ltprune.LTPConfig(mode="hard"))
    ltprune.set_thresholds(model, THRESHOLDS)
    model.save_pretrained(run / "hard" / "final")
    tokenizer.save_pretrained(run / "hard" / "final")
    (run / "hard" / "metrics.json").write_text(json.dumps(
        {"task": str(LENGTHS_TASK), "metric_name": "accuracy", "metric": 0.75, "relative_flops": 0.6, "gflops": 0.001,
         "num_examples": 40, "mode": "hard"}))
    rows = [{"length": n, "label": n % 2, "prediction": 1, "tokens_in": [n, n - 2, n // 2, n // 3]}
            for n in range(6, 30, 2)]
    (run / "hard" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_example.per_example_report(run / "hard")          # kept_per_layer.png, length_correct.png
    (run / "robustness.md").write_text("**tiny**: a table.\n\n| model | ~Q2 accuracy |\n|---|---:|\n| LTP | 0.5000 |\n")
    (run / "hard" / "checkpoint-2").mkdir()
    (run / "hard" / "checkpoint-2" / "stale.png").write_bytes((run / "hard" / "kept_per_layer.png").read_bytes())
    return run


def _visible_text(example_html: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", example_html))


def test_report_structure(run_dir, tokenizer):
    texts = ["a gorgeous, witty film", "dull and tedious, with a flat script but a lovely cast and fine music"]
    path = report.build_report(run_dir, texts=texts)
    assert path == run_dir / "report.html"
    page = _parse(path)
    source = path.read_text(encoding="utf-8")
    # self-contained: no scripts, no external style sheets, no remote URLs
    assert not any(tag in ("script", "link", "iframe") for tag, _ in page.tags)
    assert not re.search(r'(src|href)="(https?:)?//', source)
    assert page.sections == ["summary", "plots", "tokens"]
    # every plot outside Trainer checkpoints, embedded as a decodable PNG, known names first
    assert len(page.imgs) == 2 and "stale.png" not in source
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert source.index("kept_per_layer.png") < source.index("length_correct.png")
    # tables: the metrics of the folder and the experiment's markdown as HTML
    assert "<td>hard</td>" in source and "<th>~Q2 accuracy</th>" in source and "<b>tiny</b>" in source
    # legend: one swatch per layer + "kept"
    assert page.swatches == len(THRESHOLDS) + 1 and "kept (all 4 layers)" in source
    # the tokens: one span per token, shaded by the layer that removed it, as the model says
    model = ltprune.from_pretrained(run_dir / "hard" / "final", mode="hard")
    assert len(page.examples) == 2
    layers_seen = set()
    for text, spans in zip(texts, page.examples):
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            pruned_at = model(**enc).ltp.pruned_at[0].tolist()
        assert [s["layer"] for s in spans] == pruned_at
        assert spans[0]["special"] and spans[-1]["special"] and not any(s["special"] for s in spans[1:-1])
        assert all(("kept" in s["title"]) == (s["layer"] == 4) for s in spans)
        layers_seen |= set(pruned_at)
    assert len(layers_seen) >= 2  # the thresholds do prune, at different layers
    # the original text (with its spacing) is what is shown between [CLS] and [SEP]
    blocks = re.findall(r'<div class="text">(.*?)</div></div>', source)
    for text, block in zip(texts, blocks):
        assert _visible_text(block).strip() == f"[CLS] {text} [SEP]"
    assert "prediction: " in source and ("positive" in source or "negative" in source)


def test_report_cli_pairs_and_fallbacks(run_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    report_cli.register(parser.add_subparsers(dest="command", required=True))
    texts = tmp_path / "texts.txt"
    texts.write_text("A dog runs in the park.\tAn animal is outside.\n\nshort one\n")
    out = tmp_path / "page.html"
    a = parser.parse_args(["report", str(run_dir), "--output", str(out), "--texts-file", str(texts), "--title", "T"])
    assert a.func(a) == 0 and str(out) in capsys.readouterr().out
    page = _parse(out)
    assert len(page.examples) == 2
    assert sum(s["special"] for s in page.examples[0]) == 3  # [CLS] a [SEP] b [SEP]
    assert "<title>T</title>" in out.read_text()
    # no texts given: the task named in the folder's metrics.json gives them, spread over lengths
    page = _parse(report.build_report(run_dir, tmp_path / "auto.html", num_examples=3))
    lengths = [len(spans) for spans in page.examples]
    assert len(lengths) == 3 and lengths[0] < lengths[-1]
    # no checkpoint: the page still comes out and says so
    empty = tmp_path / "empty"
    empty.mkdir()
    page_path = report.build_report(empty)
    assert "No checkpoint found" in page_path.read_text() and "No plots" in page_path.read_text()
    # unreadable or wrong-typed JSON files in a folder are skipped, never a traceback
    (empty / "metrics.json").write_text('["task", "metric"]')
    (empty / "final").mkdir()
    (empty / "final" / "config.json").write_text("{not json")
    page_path = report.build_report(empty)
    assert "No checkpoint found" in page_path.read_text()


def test_report_qa_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=128)
    model = ltprune.patch(transformers.BertForQuestionAnswering(config).eval(), ltprune.LTPConfig(mode="hard"))
    ltprune.set_thresholds(model, THRESHOLDS[:3])
    model.save_pretrained(tmp_path / "qa" / "hard" / "final")
    tokenizer.save_pretrained(tmp_path / "qa" / "hard" / "final")
    page = _parse(report.build_report(tmp_path / "qa", squad_file=FIXTURES / "squad_v2" / "dev.json",
                                      num_examples=2))
    assert len(page.examples) == 2 and page.swatches == 4
    assert all(sum(s["special"] for s in spans) == 3 for spans in page.examples)  # question ‖ context
