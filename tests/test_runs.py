"""Issue 14: runs that never lose work or change silently.

Labels parsed by one rule, run folders that record what they were started with, no overwrite
without consent, a lock per run folder, label names in every checkpoint, checks before any
heavy work, and a command line that reads well in a log file. Each case is listed, with the
behaviour a user gets, in docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import re
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

from conftest import cli_error, save_tiny_classifier, write_reviews_csv

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       # a PYTHONPATH given to pytest wins (so the tests can run against another checkout's code)
       "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT / "src")) if p)}


def _labels_file(path: Path, labels, kind: str = "csv") -> Path:
    if kind == "csv":
        path.write_text("text,label\n" + "".join(f"review {i},{label}\n" for i, label in enumerate(labels)))
    else:
        path.write_text("".join(json.dumps({"text": f"review {i}", "label": label}) + "\n"
                                for i, label in enumerate(labels)))
    return path


def _cli_subprocess(*argv, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "ltprune.cli", *map(str, argv)], capture_output=True,
                          text=True, env=env or ENV, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv", rows=60)


def _set(argv, flag, value) -> list:
    """``argv`` with every occurrence of ``flag`` set to ``value``."""
    argv = [str(a) for a in argv]
    for i, item in enumerate(argv[:-1]):
        if item == flag:
            argv[i + 1] = str(value)
    return argv


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
    cli_error(capsys, _train(tiny_dir, path, tmp_path / "run"), f"line {line}: {message}")


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
    cli_error(capsys, _train(tiny_dir, path, out), "at least two classes")
    assert not list(out.rglob("checkpoint-*"))  # nothing trained


# --------------------------------------------------------------------------------------------
# 2. and 3. Run folders: a record, --resume only for the same run, no overwrite without consent,
# one run per folder at a time
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_dir, reviews, tmp_path_factory):
    """The issue's first command: a CSV task, soft and hard stages, two steps each."""
    out = tmp_path_factory.mktemp("run") / "out"
    argv = _set(_set(_train(tiny_dir, reviews, out, "--save-steps", "1"), "--max-steps", 2), "--stages", "soft,hard")
    assert cli_main(argv) == 0
    return out, argv


def _snapshot(folder: Path) -> dict:
    """Every file and its modification time (the lock file, rewritten by each attempt, aside)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and p.name != ".ltprune.lock"}


def test_the_run_folder_records_what_it_was_started_with(finished_run, tiny_dir, reviews):
    out, _ = finished_run
    record = json.loads((out / "ltprune_run.json").read_text())
    assert record["task"] == str(reviews.resolve()) and record["model"] == str(Path(tiny_dir).resolve())
    assert record["stages"] == ["soft", "hard"]
    assert record["ltp"]["lambda_"] == 0.1 and record["stage_args"]["soft"]["max_steps"] == 2
    assert len(record["data_fingerprint"]) == 64
    assert record["quantization"]["quantize"] is None and record["data"]["seed"] == 0


def test_resume_refuses_a_different_run(finished_run, capsys, caplog):
    """The issue's example: --task rotten_tomatoes --lambda 5 --max-steps 4 --resume into the CSV run."""
    out, argv = finished_run
    before = _snapshot(out)
    other = _set(_set(argv, "--task", "rotten_tomatoes"), "--max-steps", 4)
    message = cli_error(capsys, [*other, "--lambda", "5", "--resume"], f"{out} holds a different run",
                         "task ", "-> 'rotten_tomatoes'", "ltp.lambda_ 0.1 -> 5.0", "max_steps 2 -> 4",
                         "--overwrite")
    assert "reviews.csv" in message
    assert _snapshot(out) == before  # nothing written, the CSV run's metrics untouched
    assert json.loads((out / "metrics.json").read_text())["task"].endswith("reviews.csv")
    # the same run resumes (here: both stages already finished)
    assert cli_main([*argv, "--resume"]) == 0
    assert "stage hard already finished" in caplog.text


def test_resume_refuses_changed_data(finished_run, tmp_path, capsys):
    out, argv = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    task = Path(argv[argv.index("--task") + 1])
    edited = tmp_path / "reviews.csv"
    edited.write_text(task.read_text().replace("good", "fine"))
    record = json.loads((copy / "ltprune_run.json").read_text())
    record["task"] = str(edited.resolve())  # the same path, other contents
    (copy / "ltprune_run.json").write_text(json.dumps(record))
    changed = _set(_set([*argv, "--resume"], "--task", edited), "--output-dir", copy)
    cli_error(capsys, changed, "holds a different run", "data_fingerprint")


def test_read_json_gives_one_line_errors(tmp_path):
    from ltprune.errors import CheckpointError, ConfigError, read_json

    path = tmp_path / "x.json"
    path.write_text("[1]")
    assert read_json(path, expect=list) == [1] and read_json(path, expect=None) == [1]
    with pytest.raises(CheckpointError, match=r"x.json: expected an object in this JSON file, found list$"):
        read_json(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(CheckpointError, match="x.json: unreadable JSON"):
        read_json(path)
    with pytest.raises(ConfigError, match=r"missing.json: unreadable JSON \(.*No such file.*\); delete it$"):
        read_json(tmp_path / "missing.json", error=ConfigError, hint="delete it")


@pytest.mark.parametrize("content,message", [
    ("{bad", "ltprune_run.json: unreadable JSON"),
    ('["soft"]', "ltprune_run.json: expected an object in this JSON file, found list"),
])
def test_resume_from_a_corrupt_run_record(content, message, finished_run, tmp_path, capsys):
    out, argv = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "ltprune_run.json").write_text(content)
    before = _snapshot(copy)
    cli_error(capsys, _set([*argv, "--resume"], "--output-dir", copy), message, "--overwrite to start the run afresh")
    assert _snapshot(copy) == before  # nothing of the finished stages lost


def test_rerun_without_resume_or_overwrite_is_refused(finished_run, tmp_path, capsys):
    out, argv = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = _set(argv, "--output-dir", copy)
    before = _snapshot(copy)
    cli_error(capsys, argv, f"{copy} already holds a training run", "soft/checkpoint-", "--resume", "--overwrite")
    assert _snapshot(copy) == before
    cli_error(capsys, [*argv, "--resume", "--overwrite"], "contradict")
    # --overwrite: the earlier run's stages go, a new run takes their place
    (copy / "notes.txt").write_text("mine")
    assert cli_main([*_set(argv, "--stages", "soft"), "--overwrite"]) == 0
    assert not (copy / "hard").exists() and (copy / "soft" / "final").is_dir()
    assert (copy / "notes.txt").read_text() == "mine"  # nothing else in the folder is touched
    assert json.loads((copy / "ltprune_run.json").read_text())["stages"] == ["soft"]


def test_a_lock_stops_two_runs_in_one_folder(tiny_dir, reviews, tmp_path, capsys):
    from ltprune.runs import LOCK, RunLock

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom ltprune.runs import RunLock\n"
                               f"with RunLock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cli_error(capsys, _train(tiny_dir, reviews, out), f"another ltprune run (pid {holder.pid})",
                   "another --output-dir")
        assert not (out / "soft").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing it: the kernel did, the lock file left behind is not stale
    assert (out / LOCK).is_file()
    assert cli_main([str(a) for a in _train(tiny_dir, reviews, out)]) == 0
    with RunLock(out):  # released at the end of the run, and exclusive within one process too
        with pytest.raises(ltprune.ConfigError, match="another ltprune run"):
            with RunLock(out):
                pass


def test_top_level_metrics_sum_up_the_run(finished_run):
    out, _ = finished_run
    summary = json.loads((out / "metrics.json").read_text())
    assert list(summary["stages"]) == ["soft", "hard"]
    for stage, entry in summary["stages"].items():
        assert entry["final"] == str(out / stage / "final") and 0 < entry["relative_flops"] <= 1
        assert isinstance(entry["metric"], float) and entry["metric_name"] == "accuracy"
    assert summary["final_model"] == str(out / "hard" / "final")
    assert "best dev checkpoint" in summary["stages"]["hard"]["final_is"]


# --------------------------------------------------------------------------------------------
# 4. Label names in every checkpoint, used by predict, report and the pipeline
# --------------------------------------------------------------------------------------------


def _id2label(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["id2label"]


def test_label_names_are_saved_and_used(tiny_dir, tmp_path, capsys):
    import transformers

    from ltprune.report import prune_tokens
    from ltprune.training import load_tokenizer

    task = tmp_path / "words.csv"
    rows = write_reviews_csv(tmp_path / "numbers.csv", rows=40).read_text().splitlines()
    task.write_text("\n".join([rows[0], *[r[:-1] + ("pos" if r.endswith("1") else "neg") for r in rows[1:]]]) + "\n")
    out = tmp_path / "run"
    assert cli_main(_set(_train(tiny_dir, task, out, "--save-steps", "1"), "--stages", "soft")) == 0
    assert _id2label(out / "soft" / "final") == {"0": "neg", "1": "pos"}  # sorted order
    assert _id2label(out / "soft" / "checkpoint-1") == {"0": "neg", "1": "pos"}
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(out / "soft" / "final"), "--threads", "1", "a great film"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["label"] in ("neg", "pos")
    model = ltprune.from_pretrained(out / "soft" / "final")
    tokenizer = load_tokenizer(str(out / "soft" / "final"))
    assert prune_tokens(model, tokenizer, ["a dull film"])[0]["prediction"].split()[0] in ("neg", "pos")
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer)
    assert pipe("a fine film")[0]["label"] in ("neg", "pos")


def test_named_and_numbered_tasks_get_their_names(tiny_dir, tmp_path):
    from ltprune.data import load_task
    from ltprune.training import load_model

    _, info = load_task("rotten_tomatoes", max_train_examples=20, max_eval_examples=10)
    model = load_model(str(tiny_dir), info.num_labels, False, None, label_names=info.label_names)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
    stars = _labels_file(tmp_path / "stars.csv", [[3, 5, 7][i % 3] for i in range(30)])
    _, info = load_task(str(stars))
    model = load_model(str(tiny_dir), info.num_labels, False, None, label_names=info.label_names)
    assert model.config.id2label == {0: "3", 1: "5", 2: "7"}  # the original values
    _, info = load_task(str(_labels_file(tmp_path / "ids.csv", BALANCED)))
    model = load_model(str(tiny_dir), info.num_labels, False, None, label_names=info.label_names)
    assert model.config.id2label == {0: "0", 1: "1"}  # not LABEL_0 / LABEL_1


# --------------------------------------------------------------------------------------------
# 5. Checks before any heavy work
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail the test if a command gets as far as loading data or a model."""
    import importlib

    def boom(*args, **kwargs):
        raise AssertionError("heavy work started before the check")

    for module, name in (("data", "load_task"), ("training", "load_model"), ("loading", "load_model"),
                         ("training", "train"), ("checkpoint", "from_pretrained")):
        module = importlib.import_module(f"ltprune.{module}")  # ltprune.patch is also a function
        monkeypatch.setattr(module, name, boom)


def _commands(model, task, out):
    return {
        "train": ["train", "--model", model, "--task", task, "--output-dir", out],
        "eval": ["eval", "--model", model, "--task", task, "--output-dir", out],
        "sweep": ["sweep", "--model", model, "--task", task, "--output-dir", out, "--method", "ltp"],
        "robustness": ["experiment", "robustness", "--model", model, "--task", task, "--output-dir", out],
        "lengths": ["experiment", "lengths", "--model", model, "--task", task, "--output-dir", out],
        "experiment qa": ["experiment", "qa", "--model", model, "--output-dir", out],
        "qa train": ["qa", "train", "--model", model, "--output-dir", out],
        "qa eval": ["qa", "eval", "--model", model, "--output-dir", out],
        "bench": ["bench", "--output-dir", out],
        "demo": ["demo", "--output-dir", out],
    }


@pytest.mark.parametrize("command", list(_commands("m", "t", "o")))
def test_an_unusable_output_dir_fails_at_once(command, tiny_dir, reviews, tmp_path, no_heavy_work, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out, needle in ((afile, "exists and is not a folder"), (afile / "sub", "is a file, not a folder"),
                        (Path("/proc/ltprune-out"), "cannot write there")):
        cli_error(capsys, _commands(tiny_dir, reviews, out)[command], f"--output-dir {out}", needle)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_fails_at_once(tiny_dir, reviews, tmp_path, no_heavy_work, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        cli_error(capsys, _commands(tiny_dir, reviews, folder / "out")["train"], "cannot write there")
    finally:
        folder.chmod(0o755)


def test_eval_keeps_its_results_when_writing_fails(tiny_dir, reviews, tmp_path, monkeypatch, capsys):
    import ltprune.evaluation

    ckpt = tmp_path / "ckpt"
    assert cli_main(_set(_train(tiny_dir, reviews, tmp_path / "run"), "--stages", "soft")) == 0
    shutil.copytree(tmp_path / "run" / "soft" / "final", ckpt)
    tokenized = []
    import ltprune.data

    original = ltprune.data.tokenize_task

    def spy(dsd, *args, **kwargs):
        tokenized.append(sorted(dsd))
        return original(dsd, *args, **kwargs)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ltprune.data, "tokenize_task", spy)
    monkeypatch.setattr(ltprune.evaluation, "write_metrics", full_disk)
    capsys.readouterr()
    code = cli_main(["eval", "--model", str(ckpt), "--task", str(reviews), "--output-dir", str(tmp_path / "e"),
                     "--threads", "1"])
    captured = capsys.readouterr()
    assert code == 2 and "No space left on device" in captured.err and "printed above" in captured.err
    assert json.loads(captured.out)["num_examples"] == 6  # the results were printed before the write
    assert tokenized == [["validation"]]  # only the split that is scored was tokenized


@pytest.mark.parametrize("damage,message", [
    ("truncated", "model.safetensors is truncated or corrupt"),
    ("model_type", "unknown model_type 'bert-ish'"),
    ("pickle-only", "no .safetensors weights (ltprune loads safetensors only, never pickles; found only "
                    "pytorch_model.bin)"),
    ("bad-json", "config.json: unreadable JSON"),
    ("not-an-object", "config.json: expected an object in this JSON file, found list"),
])
def test_train_on_a_broken_base_model_folder(damage, message, tiny_dir, reviews, tmp_path, monkeypatch, capsys):
    import ltprune.data

    folder = tmp_path / "base"
    shutil.copytree(tiny_dir, folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "model_type":
        config.write_text(config.read_text().replace('"model_type": "bert"', '"model_type": "bert-ish"'))
    elif damage == "pickle-only":
        weights.rename(folder / "pytorch_model.bin")
    elif damage == "not-an-object":
        config.write_text("[1, 2]")
    else:
        config.write_text("{not json")
    monkeypatch.setattr(ltprune.data, "load_task", lambda *a, **k: pytest.fail("data loaded first"))
    cli_error(capsys, _train(folder, reviews, tmp_path / "run"), str(folder), message)


@pytest.mark.parametrize("argv,message", [
    (["train", "--threads", "-3"], "--threads must be >= 1, got -3"),
    (["train", "--threads", "0"], "--threads must be >= 1, got 0 (leave it out"),
    (["eval", "--threads", "0"], "--threads must be >= 1"),
    (["predict", "--threads", "0", "a text"], "--threads must be >= 1"),
    (["demo", "--threads", "0"], "--threads must be >= 1"),
    (["bench", "--threads", "0"], "--threads must be >= 1"),
    (["bench", "--batch-sizes", "1,x"], "--batch-sizes must be a comma list of integers >= 1, got '1,x'"),
    (["bench", "--batch-sizes", "0"], "--batch-sizes must be a comma list of integers >= 1, got '0'"),
    (["bench", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["bench", "--parts", "throughput,bogus"], "--parts: unknown value 'bogus'; choose from throughput, decision"),
    (["bench", "--configs", "tiny"], "--configs: unknown value 'tiny'"),
    (["bench", "--target-flops", "0"], "--target-flops must lie in (0, 1]"),
    (["train", "--max-train-examples", "0"], "--max-train-examples must be >= 1"),
    (["predict", "--max-length", "1", "a text"], "--max-length must be >= 2"),
])
def test_numeric_flags_are_checked_first(argv, message, tiny_dir, reviews, tmp_path, no_heavy_work, capsys):
    import ltprune.bench

    if argv[0] in ("train", "eval"):
        argv = [*argv, "--model", tiny_dir, "--task", reviews, "--output-dir", tmp_path / "o"]
    elif argv[0] == "predict":
        argv = [*argv, "--model", tiny_dir]
    else:
        argv = [*argv, "--output-dir", tmp_path / "o"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ltprune.bench, "run_bench", lambda *a, **k: pytest.fail("bench ran"))
        mp.setattr("ltprune.demo.run_demo", lambda *a, **k: pytest.fail("demo ran"))
        cli_error(capsys, argv, message)


def test_set_threads_refuses_zero_and_negatives():
    from ltprune.training import set_threads

    for bad in (0, -3):
        with pytest.raises(ltprune.ConfigError, match="threads must be an integer >= 1"):
            set_threads(bad)


def _fake_checkpoint(folder: Path, step: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    save_file({"w": torch.zeros(4)}, path / "model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        torch.save({"state": torch.arange(1000.0), "step": step}, path / name)
    return path


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "empty"])
def test_a_damaged_optimizer_or_rng_file_makes_a_checkpoint_incomplete(tmp_path, name, how, caplog):
    from ltprune.training import complete_checkpoints

    _fake_checkpoint(tmp_path, 1)
    bad = _fake_checkpoint(tmp_path, 2) / name
    data = bad.read_bytes()
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # same size, one tensor byte changed: the zip CRC no longer matches
        at = data.index(b"\x00\x00\x80\x3f")  # the float 1.0 of the saved tensor
        bad.write_bytes(data[:at] + b"\x01" + data[at + 1:])
    elif how == "garbage":
        bad.write_bytes(b"not a zip archive at all" * 10)
    else:
        bad.write_bytes(b"")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-1"]
    assert f"ignoring checkpoint {tmp_path / 'checkpoint-2'}: unreadable {name}" in caplog.text


def test_resume_skips_a_checkpoint_whose_optimizer_state_is_corrupt(tiny_dir, reviews, tmp_path, caplog):
    out = tmp_path / "run"
    argv = _set(_set(_train(tiny_dir, reviews, out, "--save-steps", "1"), "--max-steps", 2), "--stages", "soft")
    assert cli_main(argv) == 0
    shutil.rmtree(out / "soft" / "final")  # as if killed after checkpoint-2
    optimizer = out / "soft" / "checkpoint-2" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert cli_main([*argv, "--resume"]) == 0
    assert f"unreadable optimizer.pt" in caplog.text
    assert f"resuming stage soft from {out / 'soft' / 'checkpoint-1'}" in caplog.text
    assert json.loads((out / "soft" / "final" / "ltprune_stage.json").read_text())["global_step"] == 2


# --------------------------------------------------------------------------------------------
# 6. Minor: predict --file, ltp_config errors, a file as --model, stage order, error line last
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt_dir(tiny_dir, tmp_path_factory):
    import transformers
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("ckpt")
    model = transformers.BertForSequenceClassification.from_pretrained(tiny_dir)
    ltprune.patch(model, ltprune.LTPConfig())
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(path)
    return path


def test_predict_file_skips_blank_lines_naming_them(ckpt_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("a good film\n\n   \na dull film\n")
    with pytest.warns(UserWarning, match=r"texts.txt: skipped 2 blank line\(s\) \(line 2, 3\)"):
        assert cli_main(["predict", "--model", str(ckpt_dir), "--file", str(texts), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["a good film", "a dull film"]


def test_predict_max_length_and_no_huge_echo(ckpt_dir, capsys):
    long_text = "good " * 400
    assert cli_main(["predict", "--model", str(ckpt_dir), "--threads", "1", "--max-length", "8", long_text]) == 0
    item = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert item["tokens"] == 8
    assert len(item["text"]) == 201 and item["text"].endswith("…")
    assert cli_main(["predict", "--model", str(ckpt_dir), "--threads", "1", "--echo-chars", "0", "a film"]) == 0
    assert "text" not in json.loads(capsys.readouterr().out.splitlines()[-1])


@pytest.mark.parametrize("edit,message", [
    (lambda c: {**c, "bogus_key": 1}, "ltp_config: unknown LTP config keys: bogus_key"),
    (lambda c: {**c, "temperature": -1.0}, "ltp_config: temperature must be > 0"),
    (lambda c: [1, 2], "ltp_config must be an object"),
])
def test_ltp_config_errors_name_the_checkpoint(ckpt_dir, tmp_path, edit, message, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["ltp_config"] = edit(config["ltp_config"])
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ltprune.CheckpointError, match=message) as info:
        ltprune.from_pretrained(bad)
    assert str(bad / "config.json") in str(info.value)
    cli_error(capsys, ["predict", "--model", bad, "--threads", "1", "a film"], str(bad / "config.json"), message)


def test_a_config_file_as_model_gets_a_clear_message(tiny_dir, reviews, tmp_path, capsys):
    cli_error(capsys, _train(tiny_dir / "config.json", reviews, tmp_path / "o"), "config.json: is a file",
               f"here perhaps {tiny_dir}")
    cli_error(capsys, _train("some/config.json", reviews, tmp_path / "o"), "some/config.json: no such model folder")
    cli_error(capsys, ["predict", "--model", tiny_dir / "config.json", "a film"], "is a file")


@pytest.mark.parametrize("stages,message", [
    ("hard,soft", "got hard,soft (did you mean soft,hard?)"),
    ("soft,soft", "each at most once; got soft,soft"),
    ("soft,bogus", "--stages: unknown value 'bogus'"),
])
def test_stages_must_run_in_order(stages, message, tiny_dir, reviews, tmp_path, no_heavy_work, capsys):
    cli_error(capsys, _set(_train(tiny_dir, reviews, tmp_path / "o"), "--stages", stages), message)


def test_the_library_refuses_stages_out_of_order(tiny_dir, reviews, tmp_path):
    from ltprune.training import train

    with pytest.raises(ltprune.ConfigError, match="in that order"):
        train(str(tiny_dir), str(reviews), tmp_path / "o", stages=["hard", "soft"])
    assert not (tmp_path / "o").exists()


def test_the_error_line_is_last_and_warnings_are_one_line(tiny_dir, tmp_path):
    """A real process failing late (after a data warning): the warning is one line without its
    source, the error the very last line of stderr."""
    path = _labels_file(tmp_path / "typo.csv", ["pos", "neg"] * 20 + ["postive"])
    proc = _cli_subprocess(*_train(tiny_dir, path, tmp_path / "o", "--max-length", "100000"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines[-1].startswith("ltprune: error: max_length=100000 exceeds"), proc.stderr[-3000:]
    warning = [line for line in lines if "class 'postive'" in line]
    assert len(warning) == 1 and warning[0].startswith("UserWarning: "), proc.stderr[-3000:]
    assert not any("warnings.warn" in line or ".py:" in line for line in lines), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "\x1b[" not in proc.stderr


# --------------------------------------------------------------------------------------------
# 7. Newcomer experience: help, -v, logs that read well in a file, fast rejection
# --------------------------------------------------------------------------------------------


def test_help_shows_every_default_and_every_option_has_help():
    import argparse

    from ltprune.cli import all_parsers, build_parser

    missing, no_default = [], []
    for parser in all_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help:
                missing.append(f"{parser.prog} {name}")
            meaningful = action.default not in (None, False, argparse.SUPPRESS)
            if meaningful and action.option_strings and f"(default: {action.default})" not in text:
                no_default.append(f"{parser.prog} {name}")
    assert missing == [] and no_default == []


def test_help_texts_newcomers_asked_for():
    from ltprune.cli import build_parser

    parser = build_parser()

    def help_of(argv):
        sub = parser
        for word in argv:
            sub = next(a for a in sub._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices[word]
        return " ".join(sub.format_help().split())

    train = help_of(["train"])
    assert "(default: 0.001)" in train and "temperature T of the soft stage" in train
    assert "hard/final is the hard stage's best dev checkpoint (load_best_model_at_end), not its last step" in train
    assert "save a checkpoint and evaluate on dev every N steps" in train
    assert "the training seed is --train-seed" in train and "the data split's seed is --seed" in train
    assert "--overwrite" in train and "(default: 2e-05)" in train and "(default: soft,hard)" in train
    assert "the split to evaluate" in help_of(["eval"])
    # the old flag keeps working, with a clearer alias
    args = parser.parse_args(["train", "--model", "m", "--task", "t", "--output-dir", "o", "--data-seed", "3"])
    assert args.seed == 3 and args.train_seed == 42


@pytest.mark.parametrize("argv,verbose", [
    (["train", "-v"], True), (["-v", "train"], True), (["train", "--verbose"], True), (["train"], False),
    (["experiment", "lengths", "-v"], True),
])
def test_verbose_works_before_and_after_the_command(argv, verbose):
    from ltprune.cli import build_parser

    rest = {"train": ["--model", "m", "--task", "t", "--output-dir", "o"],
            "lengths": ["--model", "m", "--task", "t", "--output-dir", "o"]}
    command = "lengths" if "lengths" in argv else "train"
    assert build_parser().parse_args([*argv, *rest[command]]).verbose is verbose


def test_training_logs_read_well_in_a_file(tiny_dir, reviews, tmp_path):
    """stderr is not a terminal: no bars, no escape codes; one line per stage event, named and
    with numbers (not Trainer's dict of strings)."""
    argv = _set(_set(_train(tiny_dir, reviews, tmp_path / "o", "--save-steps", "1", "--logging-steps", "1"),
                     "--max-steps", 2), "--stages", "soft,hard")
    proc = _cli_subprocess(*argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "\x1b[" not in err and "\r" not in err and "{'" not in err and "{'" not in proc.stdout
    lines = err.splitlines()
    assert "stage soft: training, 2 steps" in lines and "stage hard: training, 2 steps" in lines
    assert any(re.fullmatch(r"stage soft: step 1/2 loss \d\.\d+ .*thresholds \[.*\]", line) for line in lines), err
    assert any(re.fullmatch(r"stage hard: eval at step 2: loss \d\.\d+ accuracy [\d.]+ metric [\d.]+", line)
               for line in lines), err
    assert "stage soft: saved checkpoint-1" in lines
    assert any(line.startswith("stage hard: done at step 2 (final/ is the best dev checkpoint") for line in lines)
    assert "summary:" in proc.stdout


def test_bad_input_is_refused_before_torch_is_imported(tmp_path):
    code = ("import sys\nfrom ltprune.cli import main\n"
            f"rc = main(['train', '--model', '/nonexistent', '--task', 'rotten_tomatoes', '--output-dir', {str(tmp_path)!r}])\n"
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules, 'datasets' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False", "False"], proc.stderr
    assert proc.stderr.strip() == "ltprune: error: /nonexistent: no such model folder"
    import_only = subprocess.run([sys.executable, "-c", "import sys, ltprune, ltprune.cli\n"
                                  "ltprune.cli.build_parser()\nprint('torch' in sys.modules)"],
                                 capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert import_only.stdout.strip() == "False", import_only.stderr


def test_progress_bars_on_a_terminal_name_the_stage():
    from types import SimpleNamespace

    from ltprune.training import StageProgress

    state = SimpleNamespace(is_world_process_zero=True, max_steps=3, global_step=0, best_model_checkpoint=None)
    progress = StageProgress("hard", bars=True, keeps_best=True)
    progress.on_train_begin(None, state, None)
    try:
        assert progress.training_bar.desc == "stage hard"
        progress.on_prediction_step(None, state, None, eval_dataloader=[1, 2])
        assert progress.prediction_bar.desc == "stage hard eval" and not progress.prediction_bar.leave
    finally:
        progress.on_evaluate(None, state, None)
        progress.on_train_end(None, state, None)
    assert StageProgress("soft", bars=False).training_bar is None
