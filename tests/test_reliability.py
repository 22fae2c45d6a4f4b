"""Reliability: bad input, interruption, checkpoint safety, determinism, safe loading, properties.

Each check is listed, with the behaviour a user gets, in docs/RELIABILITY.md. Errors caused by
the user's input must be an ``ltprune.LTPError`` subclass with a one-line message in the library,
and exit code 2 with one ``ltprune: error: ...`` line (no traceback) on the command line.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

import ltprune
from ltprune.cli import main as cli_main
from ltprune.data import load_task, tokenize_task
from ltprune.inference import predict
from ltprune.training import DONE, StageArgs, complete_checkpoints, load_tokenizer

from conftest import cli_error, offline_model_dir, random_batch, tiny_model
from reference import head_logits, masked_reference
from test_families import FAMILIES as OTHER_FAMILIES
from test_families import masked_reference as family_reference

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ltprune"
POSITIONS = 64  # the tiny model's position embeddings; its tokenizer allows 512
THRESHOLDS_KEY = "bert.encoder.ltp_thresholds"
WORDS = ("good great fine fun superb lovely bad awful dull boring weak poor the a film movie plot "
         "actors story was is very quite really").split()
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random BERT classifier (64 positions) saved with the offline model's tokenizer."""
    path = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, num_labels=2,
                                     max_position_embeddings=POSITIONS)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpt_dir(tiny_dir, tmp_path_factory):
    """The tiny model patched and saved: an ltprune checkpoint (weights, thresholds, LTP config)."""
    path = tmp_path_factory.mktemp("ckpt")
    model = transformers.BertForSequenceClassification.from_pretrained(tiny_dir)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.01))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(path)
    return path


def _rows(n, seed=0, words=(3, 12), label=lambda i: i % 2):
    rng = random.Random(seed)
    return [f"{' '.join(rng.choices(WORDS, k=rng.randint(*words)))},{label(i)}" for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "ok.csv").write_text("\n".join(["text,label", *_rows(80)]) + "\n")
    return root


def _write(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli_subprocess(*argv, timeout=300):
    return subprocess.run([sys.executable, "-m", "ltprune.cli", *map(str, argv)], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


def _assert_one_line_error(proc, *needles) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("ltprune: error:"), proc.stderr[-3000:]
    assert sum(line.startswith("ltprune: error:") for line in lines) == 1
    for needle in needles:
        assert str(needle) in lines[-1], lines[-1]
    return lines[-1]


def _train_argv(model, task, out, *extra):
    return ["train", "--model", model, "--task", task, "--output-dir", out, "--max-steps", "1",
            "--batch-size", "4", "--threads", "1", *extra]


def _damaged_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst / "model.safetensors")
    return dst


def _edit_thresholds(value):
    def edit(file: Path):
        tensors = load_file(file)
        if value is None:
            del tensors[THRESHOLDS_KEY]
        else:
            tensors[THRESHOLDS_KEY] = value
        save_file(tensors, file, metadata={"format": "pt"})
    return edit


def _truncate(file: Path):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------------------------
# Bad input texts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " \t\n "], ids=["empty", "whitespace"])
def test_predict_refuses_empty_or_whitespace_text(ckpt_dir, text, capsys):
    model = ltprune.from_pretrained(ckpt_dir)
    tokenizer = load_tokenizer(str(ckpt_dir))
    with pytest.raises(ltprune.LTPError, match="text 1 is empty or only whitespace"):
        predict(model, tokenizer, ["a fine film", text])
    cli_error(capsys, ["predict", "--model", ckpt_dir, "--threads", "1", text],
               "text 0 is empty or only whitespace")
    with pytest.raises(ltprune.LTPError, match="no texts to predict"):
        predict(model, tokenizer, [])
    cli_error(capsys, ["predict", "--model", ckpt_dir, "--threads", "1"], "no texts to predict")


def test_predict_cli_empty_text_real_process(ckpt_dir):
    """The real command line (not in-process): exit 2, one error line last, no traceback."""
    proc = _cli_subprocess("predict", "--model", ckpt_dir, "--threads", "1", "")
    _assert_one_line_error(proc, "empty or only whitespace")


def test_data_file_blank_rows_are_dropped_with_one_warning(data_dir, ckpt_dir, tmp_path):
    lines = ["text,label", *_rows(40, seed=1), "   ,1", ",0", '"\t",1']
    path = _write(tmp_path / "blank.csv", lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dsd, _ = load_task(str(path))
    dropped = [w for w in caught if "empty or whitespace-only" in str(w.message)]
    assert len(dropped) == 1 and "dropped 3 row(s)" in str(dropped[0].message)
    assert sum(len(split) for split in dsd.values()) == 40
    # the CLI goes through the same loader: one warning, then a normal run
    with pytest.warns(UserWarning, match="dropped 3 row") as record:
        code = cli_main(["eval", "--model", str(ckpt_dir), "--task", str(path), "--output-dir",
                         str(tmp_path / "eval"), "--threads", "1"])
    assert code == 0
    assert sum("empty or whitespace-only" in str(w.message) for w in record) == 1
    # nothing left after dropping is an error, not an empty data set
    empty = _write(tmp_path / "allblank.csv", ["text,label", " ,1", ",0"])
    with pytest.raises(ltprune.DataError, match="no rows with non-empty text"):
        load_task(str(empty))


def test_text_longer_than_the_model_is_truncated_with_one_warning(ckpt_dir, tmp_path, capsys):
    model = ltprune.from_pretrained(ckpt_dir)
    tokenizer = AutoTokenizer.from_pretrained(ckpt_dir)  # a stock tokenizer: model_max_length 512
    assert tokenizer.model_max_length > POSITIONS
    long_text = " ".join(["good"] * 300)
    with pytest.warns(UserWarning, match=f"2 of 3 texts are longer than {POSITIONS} tokens") as record:
        out = predict(model, tokenizer, [long_text, "a film", long_text + " film"])
    assert len(record) == 1
    assert [o["tokens"] for o in out] == [POSITIONS, 4, POSITIONS]
    # training / evaluation data: load_tokenizer caps the tokenizer to the model's positions
    capped = load_tokenizer(str(ckpt_dir))
    assert capped.model_max_length == POSITIONS
    path = _write(tmp_path / "long.csv", ["text,label", *_rows(18, words=(3, 8)), f"{long_text},1", f"{long_text},0"])
    dsd, info = load_task(str(path))
    with pytest.warns(UserWarning, match=f"were longer than max_length={POSITIONS}") as record:
        tokenized = tokenize_task(dsd, capped, info)
    assert len(record) == 1
    assert max(len(ids) for split in tokenized.values() for ids in split["input_ids"]) == POSITIONS
    # the command line: exit 0, the text classified on its first 64 tokens, the same warning
    with pytest.warns(UserWarning, match=f"1 of 1 texts are longer than {POSITIONS} tokens"):
        assert cli_main(["predict", "--model", str(ckpt_dir), "--threads", "1", long_text]) == 0
    item = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert item["tokens"] == POSITIONS
    # asking for more tokens than the model has positions is an error, not a crash
    with pytest.raises(ltprune.ConfigError, match=f"max_length=100 exceeds the model's {POSITIONS} positions"):
        predict(model, tokenizer, ["a film"], max_length=100)
    with pytest.raises(ltprune.ConfigError, match=f"max_length=100 exceeds the model's maximum of {POSITIONS}"):
        tokenize_task(dsd, capped, info, max_length=100)
    cli_error(capsys, _train_argv(ckpt_dir, path, tmp_path / "o", "--max-length", "100"), "max_length=100")


# --------------------------------------------------------------------------------------------
# Bad data files
# --------------------------------------------------------------------------------------------


def test_non_utf8_data_file(data_dir, ckpt_dir, tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join(["text,label", *_rows(20)]) + "\n").encode() + "café noir,1\n".encode("latin-1"))
    with pytest.raises(ltprune.DataError, match=r"not valid UTF-8: byte 0xe9 .*line 22"):
        load_task(str(path))
    cli_error(capsys, _train_argv(ckpt_dir, path, tmp_path / "o"), "latin1.csv", "not valid UTF-8", "line 22")
    # predict --file reads UTF-8 too
    cli_error(capsys, ["predict", "--model", ckpt_dir, "--file", path, "--threads", "1"], "cannot read")


def test_missing_or_misnamed_columns(data_dir, ckpt_dir, tmp_path, capsys):
    path = _write(tmp_path / "reviews.csv", ["review,stars", *_rows(20)])
    with pytest.raises(ltprune.DataError, match="no text column .* available columns: review, stars"):
        load_task(str(path))
    with pytest.raises(ltprune.DataError, match="column 'rating' .*label_column.* available columns: review, stars"):
        load_task(str(path), text_column="review", label_column="rating")
    assert load_task(str(path), text_column="review", label_column="stars")[1].num_labels == 2
    cli_error(capsys, _train_argv(ckpt_dir, path, tmp_path / "o"), "--text-column", "review, stars")
    cli_error(capsys, _train_argv(ckpt_dir, data_dir / "ok.csv", tmp_path / "o", "--label-column", "stars"),
               "'stars'", "text, label")


def test_labels_outside_the_label_set(ckpt_dir, tmp_path, capsys):
    folder = tmp_path / "split"
    _write(folder / "train.csv", ["text,label", *_rows(20)])
    _write(folder / "validation.csv", ["text,label", *_rows(10, label=lambda i: i % 3)])
    with pytest.raises(ltprune.DataError, match=r"validation.csv: labels '2' do not occur in the training data"):
        load_task(str(folder))
    cli_error(capsys, _train_argv(ckpt_dir, folder, tmp_path / "o"), "labels '2' do not occur")
    # a known task's fixed label set (SST-2: 0/1)
    glue = tmp_path / "sst2"
    _write(glue / "train.tsv", ["sentence\tlabel", "a fine film\t1", "a dull film\t7"])
    _write(glue / "dev.tsv", ["sentence\tlabel", "a fine film\t1"])
    with pytest.raises(ltprune.DataError, match=r"unknown labels '7' .*expected one of negative, positive or 0..1"):
        load_task("sst2", data_dir=glue)


# --------------------------------------------------------------------------------------------
# Bad models
# --------------------------------------------------------------------------------------------


def test_model_path_that_does_not_exist(data_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ltprune.CheckpointError, match="no-such-model: no such checkpoint folder"):
        ltprune.from_pretrained(missing)
    cli_error(capsys, _train_argv(missing, data_dir / "ok.csv", tmp_path / "o"), "no-such-model: no such model folder")
    cli_error(capsys, ["predict", "--model", missing, "hello"], "no-such-model: no such checkpoint folder")
    cli_error(capsys, ["eval", "--model", missing, "--task", data_dir / "ok.csv", "--output-dir", tmp_path / "e"],
               "no-such-model: no such checkpoint folder")
    # a folder that exists but holds no model
    (tmp_path / "empty").mkdir()
    cli_error(capsys, _train_argv(tmp_path / "empty", data_dir / "ok.csv", tmp_path / "o"),
               "empty: not a model folder (no config.json)")
    with pytest.raises(ltprune.CheckpointError, match="not a checkpoint folder"):
        ltprune.from_pretrained(tmp_path / "empty")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_dir):
    """A tiny GPT-2 saved to disk with a tokenizer: a real checkpoint of an unsupported family."""
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(path)
    return path


def test_unsupported_architecture(gpt2_dir, data_dir, tmp_path, capsys):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(gpt2_dir, num_labels=2)
    with pytest.raises(ltprune.UnsupportedModelError,
                       match=r"no adapter for GPT2ForSequenceClassification .*supported: BertModel"):
        ltprune.patch(model)
    assert not ltprune.is_patched(model)
    cli_error(capsys, _train_argv(gpt2_dir, data_dir / "ok.csv", tmp_path / "o"),
               "no adapter for GPT2ForSequenceClassification", "supported:")
    # a plain (unpatched) checkpoint is not an ltprune checkpoint
    with pytest.raises(ltprune.CheckpointError, match="no LTP config"):
        ltprune.from_pretrained(gpt2_dir)


# --------------------------------------------------------------------------------------------
# Damaged checkpoints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,value,message", [
    ("missing", None, "has no ltp_thresholds tensor"),
    ("nan", torch.tensor([0.0, float("nan")]), "thresholds contain NaN or infinity"),
    ("inf", torch.tensor([0.0, float("inf")]), "thresholds contain NaN or infinity"),
    ("wrong-length", torch.tensor([0.0, 0.01, 0.02]), "3 thresholds for a model with 2 layers"),
])
def test_checkpoint_with_bad_thresholds(ckpt_dir, tmp_path, case, value, message, capsys):
    bad = _damaged_copy(ckpt_dir, tmp_path / case, _edit_thresholds(value))
    with pytest.raises(ltprune.CheckpointError, match=re.escape(message)) as info:
        ltprune.from_pretrained(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    cli_error(capsys, ["predict", "--model", bad, "--threads", "1", "a film"], str(bad), message)


@pytest.mark.parametrize("how", ["half", "header", "empty"])
def test_corrupt_or_truncated_safetensors(ckpt_dir, tmp_path, how, capsys):
    def damage(file: Path):
        data = file.read_bytes()
        file.write_bytes({"half": data[: len(data) // 2], "header": data[:20], "empty": b""}[how])

    bad = _damaged_copy(ckpt_dir, tmp_path / how, damage)
    with pytest.raises(ltprune.CheckpointError, match="cannot load the weights") as info:
        ltprune.from_pretrained(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    cli_error(capsys, ["predict", "--model", bad, "--threads", "1", "a film"], str(bad))


def test_weights_only_through_safetensors(ckpt_dir, tmp_path):
    """A folder with only pytorch_model.bin (a pickle) is refused before anything is unpickled."""
    folder = tmp_path / "bin-only"
    shutil.copytree(ckpt_dir, folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")
    with pytest.raises(ltprune.CheckpointError, match="no .safetensors weights .*safetensors only") as info:
        ltprune.from_pretrained(folder)
    assert str(folder) in str(info.value)


def test_no_remote_code_and_no_pickle_loading_in_the_source():
    pattern = re.compile(r"trust_remote_code\s*=\s*True|torch\.load\(|pickle\.loads?\(")
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in sorted(SRC.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if pattern.search(line)]
    assert offenders == []


# --------------------------------------------------------------------------------------------
# Nonsense hyperparameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=-1e-3), "temperature must be > 0"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(lambda_=-0.1), "lambda_ must be >= 0"),
    (dict(final_threshold=-0.01), "final_threshold must be >= 0"),
    (dict(final_threshold=float("inf")), "final_threshold must be a finite number"),
])
def test_nonsense_ltp_config(kwargs, message):
    with pytest.raises(ltprune.ConfigError, match=re.escape(message)):
        ltprune.LTPConfig(**kwargs)
    with pytest.raises(ltprune.ConfigError, match=re.escape(message)):
        ltprune.LTPConfig().replace(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(learning_rate=0.0), "learning rate must be > 0"),
    (dict(learning_rate=-1e-5), "learning rate must be > 0"),
    (dict(threshold_lr=0.0), "threshold learning rate must be > 0"),
    (dict(batch_size=0), "batch sizes must be >= 1"),
    (dict(eval_batch_size=0), "batch sizes must be >= 1"),
    (dict(epochs=0.0), "epochs must be > 0"),
    (dict(save_steps=-1), "save_steps must be >= 1"),
])
def test_nonsense_stage_args(kwargs, message):
    with pytest.raises(ltprune.ConfigError, match=re.escape(message)):
        StageArgs(**kwargs)


@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", "-1", "temperature must be > 0"),
    ("--lambda", "-0.5", "lambda_ must be >= 0"),
    ("--final-threshold", "-0.01", "final_threshold must be >= 0"),
    ("--lr", "0", "learning rate must be > 0"),
    ("--lr", "-2e-5", "learning rate must be > 0"),
    ("--batch-size", "0", "batch sizes must be >= 1"),
    ("--save-steps", "-1", "save_steps must be >= 1"),
])
def test_nonsense_hyperparameters_on_the_command_line(tiny_dir, data_dir, tmp_path, flag, value, message, capsys):
    out = tmp_path / "o"
    cli_error(capsys, _train_argv(tiny_dir, data_dir / "ok.csv", out, f"{flag}={value}"), message)
    assert not out.exists()  # refused before anything was written


def test_nonsense_batch_size_for_predict_and_eval(ckpt_dir, data_dir, tmp_path, capsys):
    model = ltprune.from_pretrained(ckpt_dir)
    with pytest.raises(ltprune.ConfigError, match="batch_size must be an integer >= 1"):
        predict(model, load_tokenizer(str(ckpt_dir)), ["a film"], batch_size=0)
    cli_error(capsys, ["predict", "--model", ckpt_dir, "--batch-size", "0", "a film"], "batch_size")
    cli_error(capsys, ["eval", "--model", ckpt_dir, "--task", data_dir / "ok.csv", "--output-dir",
                        tmp_path / "e", "--batch-size", "0"], "--batch-size must be >= 1")


# --------------------------------------------------------------------------------------------
# Interruption and checkpoint safety
# --------------------------------------------------------------------------------------------


def test_complete_checkpoints_skips_broken_ones(tmp_path):
    tensors = {"w": torch.arange(64, dtype=torch.float32)}

    def checkpoint(step, state=True, weights="ok"):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        if weights:
            save_file(tensors, folder / "model.safetensors")
            if weights == "truncated":
                _truncate(folder / "model.safetensors")
            elif weights == "one-byte-short":
                data = (folder / "model.safetensors").read_bytes()
                (folder / "model.safetensors").write_bytes(data[:-1])

    checkpoint(2)
    checkpoint(4)
    checkpoint(5, weights="truncated")         # killed while copying / disk full: header points past the end
    checkpoint(6, weights="one-byte-short")
    checkpoint(7, state=False)                 # killed before the trainer state (written last)
    checkpoint(8, weights=None)                # no weights at all
    (tmp_path / "checkpoint-latest").mkdir()   # not a step number
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]


def _checkpoint_steps(folder: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in complete_checkpoints(folder)]


def test_sigkill_then_resume(ckpt_dir, tmp_path):
    """A real ``ltprune train`` process is SIGKILLed after a checkpoint; ``--resume`` finishes it."""
    task = tmp_path / "task"
    _write(task / "train.csv", ["text,label", *_rows(40, seed=2)])
    # a large dev set makes each step slow (evaluation every step), so the kill lands mid-run
    _write(task / "validation.csv", ["text,label", *_rows(1500, seed=3, words=(40, 50))])
    out = tmp_path / "run"
    stage = out / "soft"
    argv = [sys.executable, "-m", "ltprune.cli", "train", "--model", str(ckpt_dir), "--task", str(task),
            "--output-dir", str(out), "--stages", "soft", "--max-steps", "6", "--save-steps", "1",
            "--batch-size", "2", "--threads", "1", "--lr", "1e-3"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=ROOT)
        try:
            deadline = time.monotonic() + 240
            while not (stage.exists() and any(step >= 2 for step in _checkpoint_steps(stage))):
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint-2 in time"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (stage / "final" / DONE).exists(), "the run finished before the kill: make steps slower"
    steps = _checkpoint_steps(stage)
    last = max(steps)
    assert 2 <= last < 6
    # a checkpoint that looks complete but whose weights were cut short must not be resumed from
    broken = stage / f"checkpoint-{last + 1}"
    shutil.rmtree(broken, ignore_errors=True)  # perhaps half-written by the kill
    shutil.copytree(stage / f"checkpoint-{last}", broken)
    _truncate(broken / "model.safetensors")
    assert _checkpoint_steps(stage)[-1] == last

    proc = subprocess.run([*argv, "--resume"], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming stage soft from {stage / f'checkpoint-{last}'}" in proc.stderr
    assert f"ignoring checkpoint {broken}" in proc.stderr
    state = json.loads((stage / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    summary = json.loads((stage / "final" / DONE).read_text())
    assert summary["global_step"] == 6
    assert (stage / "metrics.json").is_file()
    ltprune.from_pretrained(stage / "final")  # the final model loads


def test_ctrl_c_says_how_to_resume(tiny_dir, data_dir, tmp_path, monkeypatch, capsys):
    import ltprune.training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ltprune.training, "run_stage", interrupted)
    code = cli_main([str(a) for a in _train_argv(tiny_dir, data_dir / "ok.csv", tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == \
        "ltprune: interrupted; rerun the same command with --resume to continue"


def test_same_seed_same_metrics(tiny_dir, data_dir, tmp_path):
    def run(out):
        argv = ["train", "--model", str(tiny_dir), "--task", str(data_dir / "ok.csv"), "--output-dir", str(out),
                "--stages", "soft,hard", "--max-steps", "2", "--save-steps", "1", "--batch-size", "8",
                "--threads", "1", "--lr", "1e-3"]
        assert cli_main(argv) == 0

    run(tmp_path / "a")
    run(tmp_path / "b")
    for stage in ("soft", "hard"):
        a = (tmp_path / "a" / stage / "metrics.json").read_text()
        b = (tmp_path / "b" / stage / "metrics.json").read_text()
        assert a == b, stage
        assert (tmp_path / "a" / stage / "examples.jsonl").read_text() == \
               (tmp_path / "b" / stage / "examples.jsonl").read_text()
    soft = json.loads((tmp_path / "a" / "soft" / "metrics.json").read_text())
    assert soft["thresholds"] != [0.0, 0.01]  # the runs really trained (and identically)


# --------------------------------------------------------------------------------------------
# Property tests (hypothesis): every text family, layout and normalization
# --------------------------------------------------------------------------------------------

TEXT_FAMILIES = ["bert", "roberta", "distilbert", "electra", "xlm-roberta"]
_CACHE: dict = {}


def _model(name):
    """(model to patch, untouched twin for the reference), both built once per family."""
    if name not in _CACHE:
        make = (lambda: tiny_model(name, initializer_range=0.3)) if name in ("bert", "roberta") \
            else OTHER_FAMILIES[name].model
        _CACHE[name] = (make(), make())
    return _CACHE[name]


def _inputs(name, lengths, seed):
    if name in ("bert", "roberta"):
        ids, mask = random_batch(lengths, seed=seed, family=name)
        return {"input_ids": ids, "attention_mask": mask}, mask
    return OTHER_FAMILIES[name].batch(lengths, seed=seed)


def _reference(name, twin, inputs, mask, thresholds, normalization):
    """(logits, kept sets per layer) of the masked reference (nothing removed)."""
    if name in ("bert", "roberta"):
        hidden, kept = masked_reference(twin, inputs["input_ids"], mask, thresholds, normalization=normalization)
        return head_logits(twin, hidden), kept
    family = OTHER_FAMILIES[name]
    hidden, kept = family_reference(family, twin, inputs, mask, thresholds, normalization=normalization)
    return family.logits(twin, hidden), kept


def _scaled(fractions, normalization):
    # scores are ~1/128 per token with "reference" and ~1/n with "length": span both regimes
    scale = 0.03 if normalization == "reference" else 0.25
    return torch.tensor([f * scale for f in fractions])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(TEXT_FAMILIES),
    layout=st.sampled_from(["packed", "padded"]),
    normalization=st.sampled_from(["reference", "length"]),
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_property_removal_equals_masked_reference(name, layout, normalization, lengths, fractions, seed):
    model, twin = _model(name)
    twin.set_attn_implementation("eager")
    inputs, mask = _inputs(name, lengths, seed)
    thresholds = _scaled(fractions, normalization)
    ref_logits, ref_kept = _reference(name, twin, inputs, mask, thresholds, normalization)
    ltprune.patch(model, ltprune.LTPConfig(layout=layout, score_normalization=normalization))
    ltprune.set_thresholds(model, thresholds)
    with torch.no_grad():
        out = model(**inputs)
    for index, kept in enumerate(ref_kept):
        assert torch.equal(out.ltp.pruned_at > index, kept), f"layer {index}"
    assert (out.logits - ref_logits).abs().max() <= 1e-5
    event("pruned" if out.ltp.relative_flops < 1 else "nothing pruned")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(TEXT_FAMILIES),
    layout=st.sampled_from(["packed", "padded"]),
    normalization=st.sampled_from(["reference", "length"]),
    keep_first=st.booleans(),
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    who=st.integers(0, 5),
)
def test_property_batch_invariance(name, layout, normalization, keep_first, lengths, fractions, who):
    """An example's logits and kept sets are the same alone and in any batch, whatever the config."""
    who = who % len(lengths)
    model, _ = _model(name)
    ltprune.patch(model, ltprune.LTPConfig(layout=layout, score_normalization=normalization,
                                           keep_first_token=keep_first))
    ltprune.set_thresholds(model, _scaled(fractions, normalization))
    inputs, _ = _inputs(name, lengths, sum(lengths))
    n = lengths[who]
    with torch.no_grad():
        together = model(**inputs)
        alone = model(**{key: value[who:who + 1, :n] for key, value in inputs.items()})
    assert (together.logits[who] - alone.logits[0]).abs().max() <= 1e-5
    assert torch.equal(together.ltp.pruned_at[who, :n], alone.ltp.pruned_at[0])
    assert torch.equal(together.ltp.tokens_kept[who], alone.ltp.tokens_kept[0])
    assert bool((together.ltp.tokens_kept >= 1).all())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(TEXT_FAMILIES),
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    final=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_property_off_is_the_stock_model(name, lengths, final, seed):
    """``off`` is the stock forward whatever the thresholds; switching back and forth changes nothing."""
    model, twin = _model(name)
    twin.set_attn_implementation("eager")
    model.set_attn_implementation("eager")
    inputs, _ = _inputs(name, lengths, seed)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, mode="hard"))
    with torch.no_grad():
        model(**inputs)  # a hard pass first must leave no state behind
        ltprune.set_mode(model, "off")
        ours = model(**inputs)
        stock = twin(**inputs)
    assert (ours.logits - stock.logits).abs().max() <= 1e-5
    assert ours.ltp.relative_flops == 1.0
