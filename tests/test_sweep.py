"""Accuracy-FLOPs sweeps end to end on a tiny fixture: points.json, reuse, curve.png, Table 1, CLI."""

from __future__ import annotations

import argparse
import json

import pytest

import ltprune
from ltprune import sweep
from ltprune.cli import sweep as sweep_cli
from ltprune.training import StageArgs

from conftest import save_tiny_classifier, write_reviews_csv

KNOBS = {"ltp": [0.05, 0.2], "topk": [0.5, -1.0], "manual": [0.002, 0.02], "lat": [0.9, 0.6]}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"), num_layers=4)


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv")


def _stage_args():
    args = StageArgs(max_steps=2, batch_size=8, learning_rate=1e-3, logging_steps=1)
    return {name: args for name in sweep.STAGE_NAMES}


@pytest.fixture(scope="module")
def swept(tiny_dir, csv_task, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    sweep.run_sweep("all", tiny_dir, str(csv_task), out, KNOBS, stage_args=_stage_args(),
                    search_kwargs={"population": 3, "generations": 2})
    return out


def test_sweep_end_to_end(swept):
    points = json.loads((swept / "points.json").read_text())["points"]
    by_method = {}
    for p in points:
        by_method.setdefault(p["method"], []).append(p)
    assert sorted(by_method) == ["lat", "ltp", "manual", "topk", "unpruned"]
    assert len(by_method["unpruned"]) == 1 and by_method["unpruned"][0]["relative_flops"] == 1.0
    for method, knobs in KNOBS.items():
        assert sorted(p["knob"] for p in by_method[method]) == sorted(knobs)
        for p in by_method[method]:
            assert 0 < p["relative_flops"] <= 1 and 0 <= p["metric"] <= 1
            assert p["task"] == by_method["unpruned"][0]["task"] and p["gflops"] > 0
            assert (swept / p["run_dir"].split(str(swept))[-1].lstrip("/") / "metrics.json").is_file()
    # top-k at -1 keeps one token in the last layer: fewer FLOPs than at 0.5
    topk = {p["knob"]: p for p in by_method["topk"]}
    assert topk[-1.0]["relative_flops"] < topk[0.5]["relative_flops"] < 1.0
    for p in by_method["lat"]:
        assert p["relative_flops"] <= p["knob"] + 1e-9
        assert all(b <= a for a, b in zip(p["keep_lengths"], p["keep_lengths"][1:]))
    # each LTP point ran soft then hard; the hard checkpoint loads with its method
    assert (swept / "ltp" / "0.05" / "soft" / "final").is_dir()
    assert ltprune.get_config(ltprune.from_pretrained(swept / "topk" / "0.5" / "hard" / "final")).method == "topk"
    assert (swept / "lat" / "lengthdrop" / "final" / "model.safetensors").is_file()
    assert (swept / "lat" / "0.6" / "search.json").is_file()


def test_second_call_reuses_points(swept, tiny_dir, csv_task, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("a reused point was recomputed")

    import ltprune.baselines.lat as lat
    import ltprune.training as training

    monkeypatch.setattr(training, "run_stage", boom)
    monkeypatch.setattr(lat, "run_lengthdrop", boom)
    monkeypatch.setattr(lat, "search_length_config", boom)
    before = json.loads((swept / "points.json").read_text())
    again = sweep.run_sweep("all", tiny_dir, str(csv_task), swept, KNOBS, stage_args=_stage_args())
    assert len(again) == 8
    assert json.loads((swept / "points.json").read_text()) == before


def test_plot_and_table(swept, capsys):
    path = sweep.plot_sweep(swept)
    assert path == swept / "curve.png" and path.read_bytes()[:4] == b"\x89PNG"
    table = sweep.table1(swept)
    (task,) = table
    assert set(table[task]) == {"unpruned", "ltp", "topk", "manual", "lat"}
    # the CLI's report-only mode
    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "--table", "--output-dir", str(swept)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "unpruned" in out and "curve.png" in out
    assert (swept / "table1.json").is_file()


def test_table1_by_hand():
    def pt(method, knob, metric, rf, task="t"):
        return {"task": task, "method": method, "knob": knob, "metric": metric, "relative_flops": rf}

    points = [pt("unpruned", None, 0.90, 1.0),
              pt("ltp", 0.1, 0.895, 0.6), pt("ltp", 0.2, 0.891, 0.45), pt("ltp", 0.4, 0.85, 0.3),
              pt("topk", 0.5, 0.88, 0.5), pt("topk", 0.8, 0.899, 0.8),
              pt("lat", 0.5, 0.70, 0.5),
              pt("unpruned", None, 0.5, 1.0, task="u"), pt("ltp", 0.1, 0.49, 0.7, task="u")]
    table = sweep.table1(points)
    assert table["t"]["unpruned"]["metric"] == 0.90
    assert table["t"]["ltp"]["knob"] == 0.2 and table["t"]["ltp"]["relative_flops"] == 0.45
    assert table["t"]["ltp"]["flops_reduction"] == pytest.approx(1 / 0.45)
    assert table["t"]["topk"]["knob"] == 0.8
    assert table["t"]["lat"] is None
    assert table["u"]["ltp"]["relative_flops"] == 0.7  # exactly 1 point below still counts
    assert "no point within" in sweep.format_table1(table)


def test_cli_finetune_then_sweep(tiny_dir, csv_task, tmp_path):
    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "--method", "topk", "--knobs", "0.0", "--finetune", "--model", str(tiny_dir),
                              "--task", str(csv_task), "--output-dir", str(tmp_path), "--max-steps", "2",
                              "--batch-size", "8", "--threads", "1", "--lr", "1e-3"])
    assert args.func(args) == 0
    points = sweep.load_points(tmp_path)
    assert [p["method"] for p in points] == ["unpruned", "topk"]
    assert (tmp_path / "finetune" / "final" / "ltprune_stage.json").is_file()
    assert (tmp_path / "curve.png").is_file()
    with pytest.raises(ltprune.ConfigError, match="--knobs"):
        sweep.parse_knobs("0.1,abc")
    negative = parser.parse_args(["sweep", "--method", "topk", "--knobs=-1,-3", "--output-dir", str(tmp_path)])
    assert sweep.parse_knobs(negative.knobs) == [-1.0, -3.0]  # the '=' form the help names
    bad = parser.parse_args(["sweep", "--output-dir", str(tmp_path / "x"), "--task", str(csv_task)])
    with pytest.raises(ltprune.ConfigError, match="--model"):
        bad.func(bad)
