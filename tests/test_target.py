"""A FLOPs target instead of lambda (issue 19): the soft stage's penalty on expected relative
FLOPs, the calibration of the thresholds before the hard stage, and the CLI around them."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

import ltprune
from ltprune import flops, pruning
from ltprune.batching import length_sorted_tensors
from ltprune.calibration import calibrate_on, calibrate_thresholds, calibration_batches, measured_relative_flops
from ltprune.cli import main as cli_main
from ltprune.cli.options import target_from_args
from ltprune.config import LTPConfig
from ltprune.errors import ConfigError
from ltprune.names import DONE
from ltprune.patch import configure

from conftest import random_batch, save_tiny_classifier, tiny_model, write_reviews_csv


def test_expected_flops_and_penalty_equal_a_hand_computed_case():
    """Two sequences (3 and 2 real tokens), two layers, D = 4, I = 8, masks written out."""
    alive = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float32)
    m1 = torch.tensor([[1.0, 0.5, 0.5], [1.0, 0.5, 0.0]])
    m2 = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]])
    survival = pruning.survival([m1, m2], cumulative=False)  # a token must survive layer 1 to reach layer 2
    assert torch.equal(survival[1], torch.tensor([[1.0, 0.25, 0.0], [1.0, 0.5, 0.0]]))
    entering, kept = pruning.expected_tokens(survival, alive)
    assert entering.tolist() == [[3.0, 2.0], [2.0, 1.5]]
    assert kept.tolist() == [[2.0, 1.25], [1.5, 1.5]]
    rel = flops.relative_flops(entering, kept, alive.sum(1), hidden=4, intermediate=8)
    # MACs_l = 4 D^2 n + 2 D n^2 + 2 D I k = 64 n + 8 n^2 + 64 k
    pruned = (64 * 3 + 8 * 9 + 64 * 2) + (64 * 2 + 8 * 4 + 64 * 1.25) + (64 * 2 + 8 * 4 + 64 * 1.5) \
        + (64 * 1.5 + 8 * 1.5 ** 2 + 64 * 1.5)
    unpruned = 2 * (64 * 3 + 8 * 9 + 64 * 3) + 2 * (64 * 2 + 8 * 4 + 64 * 2)
    assert pruned == 1098 and unpruned == 1488
    assert float(rel) == pytest.approx(1098 / 1488, abs=1e-12)
    assert float(pruning.flops_penalty(rel, 0.5, 10.0)) == pytest.approx(10 * (1098 / 1488 - 0.5) ** 2, rel=1e-6)
    assert float(pruning.flops_penalty(torch.tensor(0.5), 0.5, 10.0)) == 0.0  # zero at the target
    # cumulative masks already are products: used as they are
    assert pruning.survival([m1, m2], cumulative=True)[1] is m2


def test_soft_loss_carries_the_penalty_and_its_gradient_reaches_the_thresholds():
    model = tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ltprune.patch(model, LTPConfig(mode="soft", lambda_=0.0, final_threshold=0.02))
    ids, mask = random_batch([12, 9, 5], seed=3)
    labels = torch.tensor([0, 1, 2])
    model.train()
    plain = model(input_ids=ids, attention_mask=mask, labels=labels)
    configure(model, target_flops=0.3, lambda_flops=7.0)
    steered = model(input_ids=ids, attention_mask=mask, labels=labels)
    expected = steered.ltp.expected_relative_flops.detach()
    assert 0 < float(expected) <= 1
    assert float(steered.loss - plain.loss) == pytest.approx(7.0 * (float(expected) - 0.3) ** 2, rel=1e-4)
    steered.loss.backward()
    assert ltprune.get_thresholds(model).grad.abs().sum() > 0


def test_config_checks_the_target():
    with pytest.raises(ConfigError, match="target_flops"):
        LTPConfig(target_flops=1.5)
    with pytest.raises(ConfigError, match="lambda_flops"):
        LTPConfig(target_flops=0.5, lambda_flops=-1)
    assert LTPConfig.from_dict(LTPConfig(target_flops=0.5).to_dict()).target_flops == 0.5


def _tokenized(count: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 60, (count,), generator=g).tolist()
    ids = [[2] + torch.randint(5, 120, (n - 1,), generator=g).tolist() for n in lengths]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})


@pytest.mark.parametrize("target", [0.7, 0.5])
def test_calibration_lands_on_the_target_on_a_tiny_model(target):
    model = tiny_model()
    ltprune.patch(model, LTPConfig(final_threshold=0.01, mode="hard"))
    ltprune.set_thresholds(model, torch.tensor([0.002, 0.004, 0.009]))  # "learned": not the initial ramp
    train, held_out = _tokenized(300, seed=0), _tokenized(200, seed=1)
    result = calibrate_thresholds(model, train, 0, target, num_examples=256)
    assert result["num_examples"] == 256 and result["factor"] > 0
    assert abs(result["relative_flops"] - target) <= 0.02
    after = ltprune.get_thresholds(model)
    assert torch.allclose(after, torch.tensor([0.002, 0.004, 0.009]) * result["factor"])  # one scale: shape kept
    assert ltprune.get_config(model).mode == "hard"
    held = measured_relative_flops(model, length_sorted_tensors(held_out, 0, 64))
    assert abs(held - target) <= 0.03  # texts it never saw land near the target too


def test_target_options_of_the_cli():
    class A:
        target_flops, target_speedup = None, 2.0
    assert target_from_args(A()) == 0.5
    A.target_speedup = 0.5
    with pytest.raises(ConfigError, match="target-speedup"):
        target_from_args(A())


def test_train_with_a_target_calibrates_before_the_hard_stage(tmp_path):
    tiny = save_tiny_classifier(tmp_path / "tiny", num_layers=2)
    csv = write_reviews_csv(tmp_path / "reviews.csv", rows=200)
    out = tmp_path / "run"
    code = cli_main(["train", "--model", str(tiny), "--task", str(csv), "--output-dir", str(out), "--stages",
                     "soft,hard", "--max-steps", "2", "--batch-size", "8", "--threads", "1", "--lr", "1e-3",
                     "--target-speedup", "1.6"])
    assert code == 0
    record = json.loads((out / "ltprune_run.json").read_text())
    assert record["ltp"]["target_flops"] == pytest.approx(0.625) and record["ltp"]["lambda_"] == 0.0
    calibration = json.loads((out / "hard" / "calibration.json").read_text())
    assert abs(calibration["relative_flops"] - 0.625) <= 0.02
    held = calibration["during_stage"]  # re-calibrated before the one dev evaluation (step 2)
    assert [h["step"] for h in held] == [2] and abs(held[0]["relative_flops"] - 0.625) <= 0.02
    hard = ltprune.from_pretrained(out / "hard" / "final")
    assert ltprune.get_thresholds(hard).tolist() == pytest.approx(held[-1]["thresholds"], abs=1e-6)
    metrics = json.loads((out / "hard" / "metrics.json").read_text())
    assert metrics["target_flops"] == pytest.approx(0.625)
    assert metrics["calibration_factor"] == calibration["factor"]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["stages"]["hard"]["calibration_factor"] == calibration["factor"]
    assert "calibration_factor" in (out / "hard" / "final" / "README.md").read_text()  # the model card


def test_threshold_shape_reaches_the_soft_stage_and_the_calibration(tmp_path, capsys):
    """``--threshold-shape 1,0``: the soft stage starts from (theta, 0) and, with the thresholds
    all but frozen (lr 1e-12), the calibration's single factor keeps the second layer at 0; a shape of the
    wrong length is a one-line error before any training."""
    tiny = save_tiny_classifier(tmp_path / "tiny", num_layers=2)
    csv = write_reviews_csv(tmp_path / "reviews.csv", rows=200)
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny), "--task", str(csv), "--stages", "soft,hard", "--max-steps", "2",
            "--batch-size", "8", "--threads", "1", "--threshold-lr", "1e-12", "--target-speedup", "1.3"]
    assert cli_main(args + ["--output-dir", str(out), "--threshold-shape", "1,0"]) == 0
    assert json.loads((out / "ltprune_run.json").read_text())["ltp"]["threshold_shape"] == [1.0, 0.0]
    calibration = json.loads((out / "hard" / "calibration.json").read_text())
    assert calibration["thresholds_before"] == pytest.approx([0.01, 0.0], abs=1e-9)
    assert calibration["thresholds"][1] == pytest.approx(0.0, abs=1e-9) and calibration["thresholds"][0] > 0
    assert cli_main(args + ["--output-dir", str(tmp_path / "bad"), "--threshold-shape", "1,0,0"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "threshold_shape has 3 entries" in err[-1] and "Traceback" not in "".join(err)


def test_a_second_calibration_on_target_costs_one_pass_and_changes_nothing():
    model = tiny_model()
    ltprune.patch(model, LTPConfig(final_threshold=0.01, mode="hard"))
    batches = calibration_batches(model, _tokenized(200, seed=0), 0, num_examples=128)
    first = calibrate_on(model, batches, 0.6)
    assert abs(first["relative_flops"] - 0.6) <= 0.002 and first["evaluations"] > 3
    thresholds = ltprune.get_thresholds(model).clone()
    again = calibrate_on(model, batches, 0.6, step=1.1)
    assert again["evaluations"] == 1 and again["factor"] == 1.0
    assert torch.equal(ltprune.get_thresholds(model), thresholds)
    ltprune.set_thresholds(model, thresholds * 0.8)  # drifted: the narrow bracket finds the way back
    back = calibrate_on(model, batches, 0.6, step=1.1)
    assert abs(back["relative_flops"] - 0.6) <= 0.002 and back["relative_flops_before"] > 0.6


def test_the_hard_stage_holds_the_target_at_every_dev_evaluation(tmp_path):
    """Fine-tuning moves the scores and so the FLOPs; the thresholds are re-scaled before each dev
    evaluation, and the checkpoint the stage keeps carries the thresholds it was evaluated with."""
    tiny = save_tiny_classifier(tmp_path / "tiny", num_layers=2)
    csv = write_reviews_csv(tmp_path / "reviews.csv", rows=200)
    out = tmp_path / "run"
    code = cli_main(["train", "--model", str(tiny), "--task", str(csv), "--output-dir", str(out), "--stages",
                     "soft,hard", "--max-steps", "6", "--save-steps", "2", "--batch-size", "8", "--threads", "1",
                     "--lr", "5e-3", "--target-flops", "0.6"])
    assert code == 0
    calibration = json.loads((out / "hard" / "calibration.json").read_text())
    held = calibration["during_stage"]
    assert [h["step"] for h in held] == [2, 4, 6]
    assert all(abs(h["relative_flops"] - 0.6) <= 0.02 for h in held)
    done = json.loads((out / "hard" / "final" / DONE).read_text())
    best = int(done["best_checkpoint"].rsplit("-", 1)[1])  # the best dev checkpoint: one of steps 2, 4, 6
    kept = ltprune.get_thresholds(ltprune.from_pretrained(out / "hard" / "final")).tolist()
    assert kept == pytest.approx(next(h["thresholds"] for h in held if h["step"] == best), abs=1e-6)
