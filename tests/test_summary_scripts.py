"""scripts/paired_target_summary.py pairs seeds across the two summary formats the docs quote;
scripts/full_test_summary.py sums up models scored on one test set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paired_target_summary.py"
FULL_TEST = Path(__file__).resolve().parents[1] / "scripts" / "full_test_summary.py"


def _row(seed: int, dev: float, test: float) -> dict:
    return {"seed": seed, "dev_accuracy": dev, "test_accuracy": test, "test_drop_points": 100 * (0.8 - test)}


def test_pairs_an_equal_flops_baseline_with_a_target_run(tmp_path: Path) -> None:
    ltp, manual = tmp_path / "ltp", tmp_path / "manual"
    ltp.mkdir()
    manual.mkdir()
    (ltp / "target_summary.json").write_text(json.dumps(
        {"seeds": [_row(0, 0.80, 0.78), _row(1, 0.82, 0.76), _row(2, 0.81, 0.77)]}))
    (manual / "equal_flops_summary.json").write_text(json.dumps(
        {"targets": {"0.33": {"manual": {"seeds": [_row(0, 0.81, 0.77), _row(1, 0.83, 0.78)]}}}}))
    out = subprocess.run([sys.executable, str(SCRIPT), str(manual), str(ltp), "--names", "manual,ltp",
                          "--method", "manual", "--target", "0.33"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, the two shared seeds, the mean
    assert lines[2].split("|")[4].strip() == "-1.00" and lines[2].split("|")[5].strip() == "+1.00"
    assert lines[3].split("|")[5].strip() == "-2.00"
    assert "-0.50 [" in lines[4].split("|")[5]  # mean of +1 and -2 with its interval


def test_a_missing_baseline_is_a_clear_error(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "equal_flops_summary.json").write_text(json.dumps({"targets": {}}))
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a"), str(tmp_path / "b"), "--target", "0.5"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "no manual at target 0.5" in run.stderr


def _eval_folder(folder: Path, correct: list[int], relative_flops: float = 1.0) -> None:
    """What `ltprune eval` writes, for labels all 1 and predictions right where ``correct`` says."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"metric": sum(correct) / len(correct), "relative_flops": relative_flops}))
    (folder / "examples.jsonl").write_text("".join(
        json.dumps({"index": i, "length": 8, "tokens_in": [8, 4], "label": 1, "prediction": int(c)}) + "\n"
        for i, c in enumerate(correct)))


def test_full_test_summary_drops_by_hand(tmp_path: Path) -> None:
    _eval_folder(tmp_path / "unpruned" / "R", [1, 1, 1, 1, 0])
    _eval_folder(tmp_path / "ltp" / "seed-0", [1, 1, 0, 1, 0], 0.33)  # drop 1/5 = 20 points
    _eval_folder(tmp_path / "ltp" / "seed-1", [1, 0, 0, 1, 1], 0.35)  # 2 lost, 1 gained: 20 points
    _eval_folder(tmp_path / "manual" / "seed-1", [1, 1, 1, 0, 1], 0.33)
    subprocess.run([sys.executable, str(FULL_TEST), str(tmp_path), "--pair", "manual,ltp"],
                   capture_output=True, text=True, check=True)
    result = json.loads((tmp_path / "full_test_summary.json").read_text())
    pair = result["pairs"]["ltp - manual"]  # seed 1 only: ltp right on 3, manual on 4 of 5
    assert pair["seeds"] == [1] and pair["per_seed_points"] == [pytest.approx(-20.0)]
    assert pair["seed_averaged"]["mean"] == pytest.approx(-20.0)
    assert result["num_examples"] == 5 and result["models"]["unpruned/R"]["drop_points"]["mean"] == 0
    assert result["models"]["ltp/seed-0"]["drop_points"]["mean"] == pytest.approx(20.0)
    g = result["groups"]["ltp"]
    assert g["seeds"] == [0, 1] and g["drop_points_over_seeds"]["mean"] == pytest.approx(20.0)
    assert g["drop_points_over_seeds"]["std"] == pytest.approx(0.0)
    assert g["relative_flops"]["mean"] == pytest.approx(0.34)
    # seed-averaged correctness [1, .5, 0, 1, .5] against [1, 1, 1, 1, 0]: d = [0, .5, 1, 0, -.5], mean .2
    assert g["drop_points_seed_averaged"]["mean"] == pytest.approx(20.0)
    sd = (sum((v - 0.2) ** 2 for v in (0, 0.5, 1, 0, -0.5)) / 4) ** 0.5
    assert g["drop_points_seed_averaged"]["se"] == pytest.approx(100 * sd / 5 ** 0.5)


def test_full_test_summary_needs_its_reference_and_the_same_examples(tmp_path: Path) -> None:
    _eval_folder(tmp_path / "ltp" / "seed-0", [1, 0, 1])
    run = subprocess.run([sys.executable, str(FULL_TEST), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode != 0 and "no reference 'unpruned/R'" in run.stderr
    _eval_folder(tmp_path / "unpruned" / "R", [1, 0])
    run = subprocess.run([sys.executable, str(FULL_TEST), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode != 0 and "does not score the same examples" in run.stderr


def test_full_test_summary_pair_needs_both_groups(tmp_path: Path) -> None:
    _eval_folder(tmp_path / "unpruned" / "R", [1, 0, 1])
    _eval_folder(tmp_path / "ltp" / "seed-0", [1, 0, 0])
    run = subprocess.run([sys.executable, str(FULL_TEST), str(tmp_path), "--pair", "manual,ltp"],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "no group 'manual'" in run.stderr
