"""Training on Trainer: the stages, the thresholds' optimizer group, resume, DDP, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer, TrainerCallback

import ltprune
from ltprune.cli import main as cli_main
from ltprune.training import StageArgs, complete_checkpoints, load_model, run_stage

from conftest import save_tiny_classifier, write_reviews_csv

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"), num_layers=2)


@pytest.fixture(scope="module")
def csv_task(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv")


def _train(tiny_dir, csv_task, out, *extra):
    return cli_main(["train", "--model", str(tiny_dir), "--task", str(csv_task), "--output-dir", str(out),
                     "--max-steps", "2", "--save-steps", "1", "--batch-size", "8", "--threads", "1",
                     "--lr", "1e-3", *extra])


def test_soft_then_hard_two_steps(tiny_dir, csv_task, tmp_path):
    assert _train(tiny_dir, csv_task, tmp_path, "--stages", "soft,hard") == 0
    soft = ltprune.from_pretrained(tmp_path / "soft" / "final")
    hard = ltprune.from_pretrained(tmp_path / "hard" / "final")
    init = ltprune.pruning.init_thresholds(2, 0.01)
    # the soft stage learned the thresholds; the hard stage kept them frozen
    assert not torch.allclose(ltprune.get_thresholds(soft), init)
    assert torch.equal(ltprune.get_thresholds(soft), ltprune.get_thresholds(hard))
    metrics = json.loads((tmp_path / "hard" / "metrics.json").read_text())
    for key in ("metric", "accuracy", "gflops", "baseline_gflops", "relative_flops", "tokens_per_layer",
                "num_examples"):
        assert key in metrics
    assert metrics["num_examples"] == 8 and len(metrics["tokens_per_layer"]) == 2
    assert 0 < metrics["relative_flops"] <= 1
    examples = [json.loads(line) for line in (tmp_path / "hard" / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 8 and all(len(e["tokens_in"]) == 2 for e in examples)
    assert (tmp_path / "hard" / "examples.jsonl").is_file()


def test_thresholds_get_their_own_optimizer_group(tiny_dir, csv_task, tmp_path):
    from ltprune.training import LTPTrainer

    model = load_model(str(tiny_dir), 2, False, ltprune.LTPConfig(mode="soft"))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), learning_rate=3e-5, weight_decay=0.01,
                                          report_to=[], use_cpu=True)
    trainer = LTPTrainer(model=model, args=args, threshold_lr=7e-4)
    optimizer = trainer.create_optimizer()
    thresholds = ltprune.get_thresholds(model)
    groups = [g for g in optimizer.param_groups if any(p is thresholds for p in g["params"])]
    assert len(groups) == 1 and len(groups[0]["params"]) == 1
    assert groups[0]["lr"] == 7e-4 and groups[0]["weight_decay"] == 0.0
    others = [g for g in optimizer.param_groups if g is not groups[0]]
    assert {g["lr"] for g in others} == {3e-5}


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_resume_after_interruption(tiny_dir, csv_task, tmp_path, caplog):
    from ltprune.data import load_task, tokenize_task

    dsd, info = load_task(str(csv_task))
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    data = tokenize_task(dsd, tokenizer, info)
    args = StageArgs(max_steps=4, save_steps=2, batch_size=8, learning_rate=1e-3, logging_steps=1)
    model = load_model(str(tiny_dir), 2, False, ltprune.LTPConfig())
    original = transformers.Trainer.__init__

    def with_interrupt(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(_Interrupt())

    transformers.Trainer.__init__ = with_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage(model, tokenizer, data["train"], data["validation"], info, "soft", tmp_path, args)
    finally:
        transformers.Trainer.__init__ = original
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-2"]
    # a half-written checkpoint (no trainer state: the save was killed) is never resumed from
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"partial")
    model = load_model(str(tiny_dir), 2, False, ltprune.LTPConfig())
    with caplog.at_level("WARNING", logger="ltprune"):
        summary = run_stage(model, tokenizer, data["train"], data["validation"], info, "soft", tmp_path, args,
                            resume=True)
    assert "resuming stage soft from" in caplog.text and "checkpoint-2" in caplog.text
    assert summary["global_step"] == 4
    # resuming a finished stage skips it
    again = run_stage(model, tokenizer, data["train"], data["validation"], info, "soft", tmp_path, args, resume=True)
    assert again["global_step"] == 4


def test_finetune_stage_is_plain_training(tiny_dir, csv_task, tmp_path):
    assert _train(tiny_dir, csv_task, tmp_path, "--stages", "finetune") == 0
    metrics = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    assert metrics["mode"] == "off" and metrics["relative_flops"] == 1.0


def test_eval_cli_writes_metrics(tiny_dir, csv_task, tmp_path):
    assert _train(tiny_dir, csv_task, tmp_path / "run", "--stages", "hard") == 0
    out = tmp_path / "eval"
    code = cli_main(["eval", "--model", str(tmp_path / "run" / "hard" / "final"), "--task", str(csv_task),
                     "--output-dir", str(out), "--split", "test", "--threads", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_examples"] == 8 and metrics["metric_name"] == "accuracy"


def test_cli_errors_are_one_line(tiny_dir, csv_task, tmp_path, capsys):
    code = _train(tiny_dir, csv_task, tmp_path, "--label-column", "stars")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ltprune: error:") and "stars" in err and "\n" not in err
    code = cli_main(["train", "--model", str(tmp_path / "nope"), "--task", str(csv_task),
                     "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "nope" in capsys.readouterr().err
    code = _train(tiny_dir, csv_task, tmp_path, "--temperature", "-1")
    assert code == 2 and "temperature" in capsys.readouterr().err


def test_two_process_ddp_run(tiny_dir, csv_task, tmp_path):
    """Both stages under torchrun with two processes (DDP, gloo on CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "ltprune.cli", "train", "--model", str(tiny_dir), "--task", str(csv_task),
           "--output-dir", str(tmp_path), "--stages", "soft,hard", "--max-steps", "2", "--save-steps", "1",
           "--batch-size", "4", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hard" / "final" / "model.safetensors").is_file()
    state = json.loads((tmp_path / "soft" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    soft = ltprune.from_pretrained(tmp_path / "soft" / "final")
    assert not torch.allclose(ltprune.get_thresholds(soft), ltprune.pruning.init_thresholds(2, 0.01))
