"""Repeated, fair comparisons (issue 19): sweeps over several seeds with their summary
statistics, LTP points at FLOPs targets, and ``ltprune eval --length-config``."""

from __future__ import annotations

import argparse
import json
import math

import pytest

import ltprune
from ltprune import stats, sweep
from ltprune.checks import parse_length_config
from ltprune.cli import main as cli_main
from ltprune.cli import sweep as sweep_cli
from ltprune.errors import ConfigError
from ltprune.training import StageArgs

from conftest import save_tiny_classifier, write_reviews_csv


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"), num_layers=3)


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv", rows=120)


def test_summary_statistics_on_fixed_values():
    s = stats.summarize([0.80, 0.82, 0.84])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.82)
    assert s["std"] == pytest.approx(0.02)  # sample std (ddof 1): sqrt((0.02^2 + 0 + 0.02^2) / 2)
    # t_{0.975, 2} = 4.302652729911275 (tables); half-width = t * std / sqrt(3)
    assert stats.t_quantile(0.95, 2) == pytest.approx(4.302652729911275, rel=1e-9)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert s["half_width"] == pytest.approx(half, rel=1e-9)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.82 - half, 0.82 + half), rel=1e-9)
    one = stats.summarize([0.5])
    assert one["mean"] == 0.5 and one["std"] is None and one["half_width"] is None
    two = stats.summarize([1.0, 3.0], confidence=0.9)  # t_{0.95, 1} = 6.313751514675043
    assert two["half_width"] == pytest.approx(6.313751514675043 * math.sqrt(2) / math.sqrt(2), rel=1e-9)
    with pytest.raises(ValueError):
        stats.summarize([])


def test_paired_difference_by_hand():
    # a right on 0, 1, 2; b right on 0, 3: d = a - b = [0, 1, 1, -1], mean 0.25
    d = stats.paired_difference([1, 1, 1, 0], [1, 0, 0, 1])
    assert d["n"] == 4 and d["mean"] == pytest.approx(0.25)
    sd = math.sqrt(((0 - 0.25) ** 2 + 2 * (1 - 0.25) ** 2 + (-1 - 0.25) ** 2) / 3)  # ddof 1
    assert d["se"] == pytest.approx(sd / 2, rel=1e-12)
    assert d["half_width"] == pytest.approx(1.959963984540054 * sd / 2, rel=1e-9)  # z_{0.975}
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.25 - d["half_width"], 0.25 + d["half_width"]))
    same = stats.paired_difference([1, 0, 1], [1, 0, 1])
    assert same["mean"] == 0 and same["half_width"] == 0
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_difference([1, 0], [1])
    with pytest.raises(ValueError):
        stats.paired_difference([1], [1])


def test_aggregated_points_and_table1_show_means_and_intervals():
    def pt(method, knob, metric, rf, seed=None):
        p = {"task": "t", "method": method, "knob": knob, "metric": metric, "relative_flops": rf}
        if seed is not None:
            p["seed"] = seed
        return p

    points = [pt("unpruned", None, 0.90, 1.0),
              pt("ltp", 0.5, 0.88, 0.50, 0), pt("ltp", 0.5, 0.90, 0.52, 1), pt("ltp", 0.5, 0.89, 0.48, 2),
              pt("topk", 0.0, 0.86, 0.6, 0), pt("topk", 0.0, 0.87, 0.6, 1), pt("topk", 0.0, 0.88, 0.6, 2)]
    agg = {p["method"]: p for p in sweep.aggregate_points(points)}
    assert agg["unpruned"]["n"] == 1 and agg["unpruned"]["metric"] == 0.90
    ltp = agg["ltp"]
    assert ltp["n"] == 3 and ltp["seeds"] == [0, 1, 2]
    assert ltp["metric"] == pytest.approx(0.89) and ltp["relative_flops"] == pytest.approx(0.50)
    assert ltp["stats"]["metric"]["std"] == pytest.approx(0.01)
    assert ltp["stats"]["metric"]["half_width"] == pytest.approx(4.302652729911275 * 0.01 / math.sqrt(3))
    table = sweep.table1(points)
    assert table["t"]["ltp"]["n"] == 3 and table["t"]["ltp"]["relative_flops"] == pytest.approx(0.5)
    assert table["t"]["topk"] is None  # mean 0.87: 3 points below the unpruned 0.90
    text = sweep.format_table1(table)
    assert "95% CI" in text and f"±{ltp['stats']['metric']['half_width']:.4f}" in text


def test_seeds_give_different_runs_and_are_summed_up(tiny_dir, csv_task, tmp_path):
    args = StageArgs(max_steps=3, batch_size=8, learning_rate=1e-3, logging_steps=1, threshold_lr=1e-2)
    stage_args = {name: args for name in sweep.STAGE_NAMES}
    out = sweep.run_sweep("ltp", tiny_dir, str(csv_task), tmp_path, [0.1], stage_args=stage_args, seeds=[0, 1])
    assert sorted(p["seed"] for p in out) == [0, 1]
    assert (tmp_path / "ltp" / "0.1" / "seed-0" / "hard" / "final").is_dir()
    assert (tmp_path / "ltp" / "0.1" / "seed-1" / "hard" / "final").is_dir()
    a, b = sorted(out, key=lambda p: p["seed"])
    assert a["thresholds"] != b["thresholds"]  # another seed: another batch order and dropout
    soft = [json.loads((tmp_path / "ltp" / "0.1" / f"seed-{s}" / "soft" / "final" / "ltprune_stage.json")
                       .read_text())["args"]["seed"] for s in (0, 1)]
    assert soft == [0, 1]
    (row,) = [p for p in sweep.aggregate_points(sweep.load_points(tmp_path)) if p["method"] == "ltp"]
    assert row["n"] == 2 and row["metric"] == pytest.approx((a["metric"] + b["metric"]) / 2)
    # a rerun reuses both seeds' points; a new seed adds one
    again = sweep.run_sweep("ltp", tiny_dir, str(csv_task), tmp_path, [0.1], stage_args=stage_args, seeds=[0, 1])
    assert again == out
    with pytest.raises(ConfigError, match="seeds"):
        sweep.run_sweep("ltp", tiny_dir, str(csv_task), tmp_path, [0.1], stage_args=stage_args, seeds=[1, 1])
    assert sweep.plot_sweep(tmp_path).is_file()  # error bars drawn for the repeated point


def test_sweep_cli_with_seeds_and_flops_targets(tiny_dir, csv_task, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["sweep", "--method", "ltp", "--ltp-knob", "target", "--knobs", "0.7", "--seeds", "3,4",
                           "--model", str(tiny_dir), "--task", str(csv_task), "--output-dir", str(tmp_path),
                           "--max-steps", "2", "--batch-size", "8", "--threads", "1", "--lr", "1e-3"])
    assert a.func(a) == 0
    points = [p for p in sweep.load_points(tmp_path) if p["method"] == "ltp"]
    assert sorted(p["seed"] for p in points) == [3, 4]
    for p in points:
        assert p["knob_kind"] == "target_flops" and p["calibration_factor"] > 0
        cal = json.loads((tmp_path / "ltp" / "0.7" / f"seed-{p['seed']}" / "hard" / "calibration.json").read_text())
        assert abs(cal["relative_flops"] - 0.7) <= 0.02
    assert "95% CI" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="knob kind"):  # lambda points do not mix into a folder of targets
        sweep.run_sweep("ltp", tiny_dir, str(csv_task), tmp_path, [0.1])


def test_sweep_at_equal_flops_and_equal_budget(tiny_dir, csv_task, tmp_path, capsys):
    """--equal-flops: every method at one FLOPs target (top-k's ratio and manual's threshold
    calibrated to it; 0.9: within reach of top-k's
    cascade on a 3-layer model, which prunes only after its last layer's attention); --equal-budget: the baselines' one stage as long as LTP's two."""
    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["sweep", "--method", "all", "--equal-flops", "0.9", "--equal-budget", "--seeds", "0",
                           "--model", str(tiny_dir), "--task", str(csv_task), "--output-dir", str(tmp_path),
                           "--soft-max-steps", "2", "--hard-max-steps", "1", "--batch-size", "8", "--threads", "1",
                           "--lr", "1e-3", "--population", "4", "--generations", "1"])
    assert a.func(a) == 0
    points = {p["method"]: p for p in sweep.load_points(tmp_path) if p["method"] != "unpruned"}
    assert sorted(points) == ["lat", "ltp", "manual", "topk"] and all(p["knob"] == 0.9 for p in points.values())
    topk = json.loads((tmp_path / "topk" / "0.9" / "seed-0" / "calibration.json").read_text())
    assert abs(topk["relative_flops"] - 0.9) <= 0.05 and points["topk"]["final_ratio"] == topk["final_ratio"]
    assert -2 <= topk["final_ratio"] < 1
    manual = json.loads((tmp_path / "manual" / "0.9" / "seed-0" / "hard" / "calibration.json").read_text())
    assert abs(manual["relative_flops"] - 0.9) <= 0.02 and manual["during_stage"]
    thresholds = points["manual"]["thresholds"]  # still the manual ramp theta_L * l / L, only scaled
    assert thresholds == pytest.approx([thresholds[-1] * (i + 1) / len(thresholds) for i in range(len(thresholds))],
                                       abs=2e-6)

    def steps(*parts):
        folder = tmp_path.joinpath(*parts, "final")
        return json.loads((folder / "ltprune_stage.json").read_text())["global_step"]
    assert steps("ltp", "0.9", "seed-0", "soft") == 2 and steps("ltp", "0.9", "seed-0", "hard") == 1
    assert steps("topk", "0.9", "seed-0", "hard") == 3 and steps("manual", "0.9", "seed-0", "hard") == 3
    assert steps("seed-0", "lat", "lengthdrop") == 3
    with pytest.raises(ConfigError, match="knob kind"):  # keep-ratio points do not mix into a folder of targets
        sweep.run_sweep("topk", tiny_dir, str(csv_task), tmp_path, [0.5])


def test_parse_length_config(tmp_path):
    assert parse_length_config("43,12,11") == {"keep_lengths": [43, 12, 11]}
    assert parse_length_config("1.0,0.5,0.25") == {"keep_ratios": [1.0, 0.5, 0.25]}
    assert parse_length_config('{"keep_ratios": [1, 0.5]}') == {"keep_ratios": [1.0, 0.5]}
    search = tmp_path / "search.json"
    search.write_text(json.dumps({"best": {"keep_lengths": [9, 8, 7], "metric": 0.8}}))
    assert parse_length_config(str(search)) == {"keep_lengths": [9, 8, 7]}
    for bad in ("a,b", '{"keep_lengths": [3, 2], "keep_ratios": [1, 1]}', '{"keep_lengths": [0]}', "[1.5, 2]"):
        with pytest.raises(ConfigError, match="--length-config"):
            parse_length_config(bad)


def test_eval_applies_a_length_configuration(tiny_dir, csv_task, tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "--model", str(tiny_dir), "--task", str(csv_task), "--output-dir", str(run),
                     "--stages", "hard", "--max-steps", "1", "--batch-size", "8", "--threads", "1"]) == 0
    ckpt = run / "hard" / "final"
    results = {}
    for name, config in (("plain", None), ("one", "1,1,1"), ("lengths", '{"keep_lengths": [4, 3, 2]}'),
                         ("ratios", "1.0,0.5,0.5")):
        out = tmp_path / name
        extra = [] if config is None else ["--length-config", config]
        assert cli_main(["eval", "--model", str(ckpt), "--task", str(csv_task), "--output-dir", str(out),
                         "--split", "test", "--threads", "1", *extra]) == 0
        results[name] = json.loads((out / "metrics.json").read_text())
    assert "length_config" not in results["plain"]
    one = results["one"]
    assert one["length_config"] == {"keep_lengths": [1, 1, 1]}
    assert one["tokens_kept_per_layer"] == [1.0, 1.0, 1.0]  # exactly one token after every layer
    kept = results["lengths"]["tokens_kept_per_layer"]
    assert results["lengths"]["length_config"] == {"keep_lengths": [4, 3, 2]}
    assert kept[0] <= 4 and kept[1] <= 3 and kept[2] == 2.0  # every test review has more than 2 tokens
    assert one["relative_flops"] < results["lengths"]["relative_flops"] < 1.0
    ratios = results["ratios"]
    assert ratios["length_config"] == {"keep_ratios": [1.0, 0.5, 0.5]}
    assert ratios["tokens_kept_per_layer"][0] == pytest.approx(ratios["mean_length"])  # keep ratio 1: all
    assert ratios["tokens_kept_per_layer"][1] < ratios["tokens_kept_per_layer"][0]
