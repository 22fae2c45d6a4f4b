"""Issue 14: runs that never lose work or change silently.

Labels parsed by one rule, run folders that record what they were started with, no overwrite
without consent, a lock per run folder, label names in every checkpoint, checks before any
heavy work, and a command line that reads well in a log file. Each case is listed, with the
behaviour a user gets, in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ltprune
from ltprune.cli import main as cli_main
from ltprune.data import load_task

from conftest import save_tiny_classifier, write_reviews_csv

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _labels_file(path: Path, labels, kind: str = "csv") -> Path:
    if kind == "csv":
        path.write_text("text,label\n" + "".join(f"review {i},{label}\n" for i, label in enumerate(labels)))
    else:
        path.write_text("".join(json.dumps({"text": f"review {i}", "label": label}) + "\n"
                                for i, label in enumerate(labels)))
    return path


def _cli_error(capsys, argv, *needles) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one ``ltprune: error:`` line, last."""
    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ltprune: error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def _cli_subprocess(*argv, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "ltprune.cli", *map(str, argv)], capture_output=True,
                          text=True, env=env or ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv", rows=60)


def _train(model, task, out, *extra):
    return ["train", "--model", model, "--task", task, "--output-dir", out, "--max-steps", "1",
            "--batch-size", "8", "--threads", "1", "--stages", "soft", *extra]


# --------------------------------------------------------------------------------------------
# 1. One label rule
# --------------------------------------------------------------------------------------------

BALANCED = [i % 2 for i in range(40)]


@pytest.mark.parametrize("bad,kind,message", [
    ("NaN", "csv", "empty or NaN label"),
    ("nan", "csv", "empty or NaN label"),
    ("null", "csv", "empty or NaN label"),
    ("None", "csv", "empty or NaN label"),
    ("NA", "csv", "empty or NaN label"),
    ("", "csv", "empty or NaN label"),
    (None, "jsonl", "empty or NaN label"),
    ("inf", "csv", "infinite label"),
    ("-Infinity", "csv", "infinite label"),
    ([1], "jsonl", "a list or object is not a label"),
    ({"a": 1}, "jsonl", "a list or object is not a label"),
])
def test_missing_or_unusable_labels_are_errors_naming_the_line(tiny_dir, tmp_path, bad, kind, message, capsys):
    path = _labels_file(tmp_path / f"d.{kind}", BALANCED[:20] + [bad] + BALANCED[20:], kind)
    line = 22 if kind == "csv" else 21  # the header is line 1 of a CSV
    with pytest.raises(ltprune.DataError, match=rf"d\.{kind}, line {line}: {message}") as info:
        load_task(str(path))
    assert "\n" not in str(info.value)
    _cli_error(capsys, _train(tiny_dir, path, tmp_path / "run"), f"line {line}: {message}")


def test_several_missing_labels_are_listed_with_their_lines(tmp_path):
    path = _labels_file(tmp_path / "d.csv", ["0", "NaN", "1", "null", "0", "inf", "1", " "] + ["0", "1"] * 10)
    with pytest.raises(ltprune.DataError, match=r"lines 3, 5, 9: empty or NaN label .*\(3 such rows\): 'NaN', "
                                                r"'null', ' '"):
        load_task(str(path))


@pytest.mark.parametrize("labels,shown", [
    (BALANCED + ["0.5"], "d.csv line 42: '0.5'"),                       # one decimal among integers
    (["pos", "neg"] * 20 + ["1"], "d.csv line 42: '1'"),                # a number among names
    ([f"{i / 7:.2f}" for i in range(30)] + ["3"], "d.csv line 32: '3'"),  # an integer among decimals
])
def test_a_column_that_mixes_kinds_is_an_error_naming_the_rows(tmp_path, labels, shown):
    path = _labels_file(tmp_path / "d.csv", labels)
    with pytest.raises(ltprune.DataError, match="mixes kinds of values") as info:
        load_task(str(path))
    assert shown in str(info.value) and "decimal numbers (e.g. 0.5, 1.0) for a regression" in str(info.value)


def test_mixed_kinds_across_split_files_name_the_file(tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    _labels_file(folder / "train.csv", BALANCED)
    _labels_file(folder / "validation.csv", [0, 1, 0.5, 1])
    with pytest.raises(ltprune.DataError, match=r"validation.csv line 4: '0.5'"):
        load_task(str(folder))


def test_regression_only_for_a_column_of_decimals(tmp_path):
    # how a value is written decides: 1.0, 2.0, 3.0 are scores, not three classes
    _, info = load_task(str(_labels_file(tmp_path / "r.csv", [f"{i % 3 + 1}.0" for i in range(20)])))
    assert info.is_regression and info.num_labels == 1
    _, info = load_task(str(_labels_file(tmp_path / "r.jsonl", [i / 7 for i in range(20)] + [4.0], "jsonl")))
    assert info.is_regression
    _, info = load_task(str(_labels_file(tmp_path / "c.csv", [i % 3 for i in range(30)])))
    assert not info.is_regression and info.num_labels == 3 and info.label_names is None


def test_a_rare_class_in_train_gets_a_warning_naming_it(tmp_path):
    path = _labels_file(tmp_path / "typo.csv", ["pos", "neg"] * 20 + ["postive"])
    with pytest.warns(UserWarning, match=r"class 'postive' has only 1 of 41 training rows \(first at line 42\)"):
        _, info = load_task(str(path))
    assert info.label_names == ("neg", "pos", "postive")  # still trained, as the file says
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ordinary imbalance (10 vs 30) is not reported
        load_task(str(_labels_file(tmp_path / "imbalanced.csv", ["a"] * 10 + ["b"] * 30)))


def test_one_class_data_fails_before_training(tiny_dir, tmp_path, capsys):
    path = _labels_file(tmp_path / "one.csv", ["pos"] * 30)
    with pytest.raises(ltprune.DataError, match="every label in column 'label' is 'pos': a classifier needs at least two"):
        load_task(str(path))
    out = tmp_path / "run"
    _cli_error(capsys, _train(tiny_dir, path, out), "at least two classes")
    assert not list(out.rglob("checkpoint-*"))  # nothing trained
