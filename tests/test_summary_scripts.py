"""scripts/paired_target_summary.py pairs seeds across the two summary formats the docs quote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paired_target_summary.py"


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
