"""Baselines (METHOD §7): top-k schedule and k per layer, manual thresholds, LAT lengths, FLOPs,
the evolutionary search (target, resume) and the LengthDrop loss. Tiny random-init models."""

from __future__ import annotations

import json
import random

import datasets
import pytest
import torch

import ltprune
from ltprune import flops
from ltprune.baselines import lat
from ltprune.baselines.manual import configure_manual
from ltprune.baselines.topk import configure_topk, spatten_keep_ratios
from ltprune.data import TaskInfo
from ltprune.pruning import manual_thresholds

from conftest import random_batch, tiny_model


def _close(a, b):
    assert len(a) == len(b) and all(abs(x - y) < 1e-12 for x, y in zip(a, b)), (a, b)


def test_spatten_ratios_by_hand():
    # L = 6: first max(3, ceil(0.9)) = 3 layers keep all, then 1 - 0.6 * j / 3
    _close(spatten_keep_ratios(6, 0.4), [1, 1, 1, 0.8, 0.6, 0.4])
    # L = 12: 3 full layers (ceil(1.8) = 2 < 3), then steps of 0.9 / 9
    _close(spatten_keep_ratios(12, 0.1), [1, 1, 1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # a negative final ratio crosses zero early; clamped at 0 (k = 1 in the engine)
    _close(spatten_keep_ratios(12, -1.0), [1, 1, 1, 7 / 9, 5 / 9, 3 / 9, 1 / 9, 0, 0, 0, 0, 0])
    assert spatten_keep_ratios(12, 1.0) == [1.0] * 12
    # 0.15 * 20 = 3 exactly (not 3.0000000000000004): 3 full layers; L = 24: ceil(3.6) = 4
    assert spatten_keep_ratios(20, 0.0)[:4] == [1.0, 1.0, 1.0, pytest.approx(16 / 17)]
    assert spatten_keep_ratios(24, 0.0)[:5] == [1.0, 1.0, 1.0, 1.0, pytest.approx(0.95)]
    # tiny models: the last layer still reaches the final ratio
    assert spatten_keep_ratios(2, 0.5) == [1.0, 0.5]


def test_manual_thresholds_by_hand():
    assert manual_thresholds(4, 0.02).tolist() == pytest.approx([0.005, 0.01, 0.015, 0.02])
    model = ltprune.patch(tiny_model(num_hidden_layers=4), ltprune.LTPConfig())
    configure_manual(model, 0.02)
    assert ltprune.get_thresholds(model).tolist() == pytest.approx([0.005, 0.01, 0.015, 0.02])
    config = ltprune.get_config(model)
    assert config.method == "threshold" and config.final_threshold == 0.02
    configure_manual(model, 0.02, [1, 0, 0, 0])  # a shape (LTP's --threshold-shape) replaces the ramp
    assert ltprune.get_thresholds(model).tolist() == pytest.approx([0.02, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("final_ratio", [0.3, -1.0])
def test_topk_keeps_round_r_times_n(layout, final_ratio):
    model = ltprune.patch(tiny_model(num_hidden_layers=6), ltprune.LTPConfig(layout=layout))
    configure_topk(model, final_ratio)
    ratios = ltprune.get_config(model).keep_ratios
    lengths = [20, 13, 7, 2]
    for r in ratios:  # no ties at .5, where float32 and float64 rounding could differ
        assert all(abs(r * n - int(r * n) - 0.5) > 1e-3 for n in lengths)
    ids, mask = random_batch(lengths, seed=1)
    with torch.no_grad():
        rec = model(input_ids=ids, attention_mask=mask).ltp
    expected = torch.tensor([[max(1, round(r * n)) for r in ratios] for n in lengths])
    assert torch.equal(rec.tokens_kept, expected)
    assert torch.equal(rec.tokens_in[:, 1:], rec.tokens_kept[:, :-1])
    assert torch.equal(rec.tokens_in[:, 0], torch.tensor(lengths))
    assert bool(rec.kept_mask[:, 0].all())  # CLS survives


def test_length_configs_are_valid():
    rng = random.Random(0)
    for _ in range(200):
        config = lat.random_length_config(6, 40, 0.3, rng)
        assert lat.is_valid_length_config(config, 6, 40)
        child = lat.mutate_length_config(config, 40, 0.5, rng)
        assert lat.is_valid_length_config(child, 6, 40)
        other = lat.random_length_config(6, 40, 0.3, rng)
        assert lat.is_valid_length_config(lat.crossover_length_configs(config, other), 6, 40)
    assert not lat.is_valid_length_config([4, 5, 2])       # increasing
    assert not lat.is_valid_length_config([4, 0])          # below 1
    assert not lat.is_valid_length_config([4, 2], num_layers=3)
    assert not lat.is_valid_length_config([50, 2], max_length=40)
    # the training-time sub-models: cumulative retention in (0, 1], non-increasing
    smallest = lat.smallest_keep_ratios(3, 0.2)
    assert smallest == pytest.approx([0.8, 0.64, 0.512])
    sampled = lat.random_keep_ratios(6, 0.2, random.Random(1))
    assert all(0.8 ** (i + 1) - 1e-12 <= r <= 1 for i, r in enumerate(sampled))
    assert all(b <= a for a, b in zip(sampled, sampled[1:]))


def test_length_config_flops_by_hand():
    D, I = 32, 48

    def macs(n, k):
        return 4 * D * D * n + 2 * D * n * n + 2 * D * I * k

    # lengths 9 and 5 through keep_lengths [6, 4, 2]: (n_l, k_l) = (9,6) (6,4) (4,2) and (5,5) (5,4) (4,2)
    pruned = macs(9, 6) + macs(6, 4) + macs(4, 2) + macs(5, 5) + macs(5, 4) + macs(4, 2)
    full = 3 * (macs(9, 9) + macs(5, 5))
    assert lat.length_config_flops([6, 4, 2], [9, 5], D, I) == pytest.approx(pruned / full)
    # the engine does the same on a real forward
    model = ltprune.patch(tiny_model(), ltprune.LTPConfig())  # 3 layers, D = 32, I = 48
    lat.configure_length(model, [6, 4, 2])
    ids, mask = random_batch([9, 5])
    with torch.no_grad():
        rec = model(input_ids=ids, attention_mask=mask).ltp
    assert rec.tokens_in.tolist() == [[9, 6, 4], [5, 5, 4]]
    assert rec.tokens_kept.tolist() == [[6, 4, 2], [5, 4, 2]]
    assert rec.relative_flops == pytest.approx(pruned / full)
    assert float(rec.macs().sum()) == pytest.approx(pruned)
    assert float(flops.gflops(rec.macs()).sum()) == pytest.approx(2 * pruned / 1e9)


INFO = TaskInfo(name="toy", num_labels=3, is_regression=False, metric="accuracy", has_pair=False, label_names=None)


def _toy_dev(n=24, seed=0):
    g = random.Random(seed)
    rows = {"input_ids": [], "attention_mask": [], "label": []}
    for _ in range(n):
        length = g.randint(3, 30)
        rows["input_ids"].append([2] + [g.randint(5, 119) for _ in range(length - 1)])
        rows["attention_mask"].append([1] * length)
        rows["label"].append(g.randint(0, 2))
    return datasets.Dataset.from_dict(rows)


def _counting(model, dev):
    inner = lat.make_length_evaluator(model, dev, INFO, pad_id=0)
    calls = []

    def run(config):
        calls.append(list(config))
        return inner(config)

    return run, calls


def test_search_respects_target_and_resumes(tmp_path):
    model = ltprune.patch(tiny_model(), ltprune.LTPConfig(mode="off"))
    dev = _toy_dev()
    target = 0.55
    state = tmp_path / "population.json"
    fn, calls = _counting(model, dev)
    first = lat.search_length_config(model, dev, INFO, 0, target, population=4, generations=1,
                                     state_file=state, evaluate_fn=fn)
    saved = json.loads(state.read_text())
    assert saved["generation"] == 1 and 1 <= len(calls) <= 4
    assert first["relative_flops"] <= target
    for entry in saved["evaluated"]:
        assert entry["relative_flops"] <= target + 1e-9
        assert lat.is_valid_length_config(entry["keep_lengths"], 3)
    assert ltprune.get_config(model).mode == "off"  # evaluations restore the config

    calls.clear()
    second = lat.search_length_config(model, dev, INFO, 0, target, population=4, generations=2,
                                      state_file=state, evaluate_fn=fn)
    assert second["resumed_from"] == 1 and second["generation"] == 2
    # the saved population was loaded, not re-evaluated: only the new children ran
    assert 1 <= len(calls) <= 4
    assert not {tuple(c) for c in calls} & {tuple(c) for c in saved["population"]}
    assert second["metric"] >= first["metric"]  # elitist: the best never gets worse
    assert second["relative_flops"] <= target
    assert len(json.loads(state.read_text())["history"]) == 2
    # a resumed search equals an uninterrupted one
    straight = lat.search_length_config(model, dev, INFO, 0, target, population=4, generations=2,
                                        state_file=tmp_path / "straight.json")
    assert straight["keep_lengths"] == second["keep_lengths"] and straight["population"] == second["population"]
    # a different target cannot resume this file; an unreachable target is refused
    with pytest.raises(ltprune.ConfigError, match="different setting"):
        lat.search_length_config(model, dev, INFO, 0, 0.5, population=4, generations=3, state_file=state)
    with pytest.raises(ltprune.ConfigError, match="below what any"):
        lat.search_length_config(model, dev, INFO, 0, 0.01, population=4, generations=1)


def test_lengthdrop_loss_backprops():
    model = ltprune.patch(tiny_model(num_hidden_layers=4), ltprune.LTPConfig(mode="off")).train()
    ids, mask = random_batch([20, 15, 9, 12], seed=2)
    labels = torch.tensor([0, 1, 2, 1])
    records = []
    model.register_forward_hook(lambda m, a, out: records.append(out.ltp))
    loss, outputs = lat.lengthdrop_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                                        length_drop_prob=0.3, rng=random.Random(0))
    assert len(records) == 4  # full model + smallest + two random sub-models
    assert records[0].relative_flops == 1.0
    smallest = records[1]
    expected = [max(1, round(n * 0.7 ** 4)) for n in (20, 15, 9, 12)]
    assert smallest.tokens_kept[:, -1].tolist() == expected
    assert all(r.relative_flops < 1.0 for r in records[1:])
    assert loss.item() > outputs.loss.item()  # the distillation terms are positive
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "encoder.layer" in n]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    config = ltprune.get_config(model)
    assert config.mode == "off" and config.method == "threshold"  # restored after the step
    with pytest.raises(ltprune.LTPError, match="labels"):
        lat.lengthdrop_loss(model, {"input_ids": ids, "attention_mask": mask})


def test_distillation_loss_is_soft_cross_entropy():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.tensor([[0.5, 0.1, 0.2]], requires_grad=True)
    p = teacher.softmax(-1)
    expected = -(p * student.log_softmax(-1)).sum()
    assert lat.distillation_loss(student, teacher).item() == pytest.approx(expected.item())
    assert lat.distillation_loss(torch.tensor([[1.0]]), torch.tensor([[3.0]])).item() == pytest.approx(4.0)
