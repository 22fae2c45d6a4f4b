"""Exactness of the core on tiny random-init models (METHOD §1-3, §5)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ltprune
from ltprune.patch import reset_thresholds
from ltprune.pruning import init_thresholds, manual_thresholds

from conftest import random_batch, tiny_model
from reference import head_logits, masked_reference

FAMILIES = ["bert", "roberta"]
LENGTHS = [9, 4, 13, 1 + 1, 7]


def _run(model, ids, mask, **kw):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", ["seq", "qa", "base"])
def test_off_mode_is_the_stock_model(family, head):
    model = tiny_model(family, head)
    ids, mask = random_batch(LENGTHS, family=family)
    stock = _run(model, ids, mask)
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    ours = _run(model, ids, mask)
    for key in stock.keys():
        assert (stock[key] - ours[key]).abs().max() <= 1e-5, key
    assert ours.ltp.relative_flops == 1.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_zero_thresholds_remove_nothing(family, layout):
    model = tiny_model(family)
    ids, mask = random_batch(LENGTHS, family=family)
    stock = _run(model, ids, mask).logits
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0, layout=layout))
    out = _run(model, ids, mask)
    assert (out.logits - stock).abs().max() <= 1e-5
    assert out.ltp.relative_flops == 1.0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("normalization", ["reference", "length"])
def test_removal_equals_masked_reference(family, layout, normalization):
    model = tiny_model(family)
    ids, mask = random_batch([12, 5, 9, 3, 12, 7], family=family, seed=3)
    thresholds = torch.tensor([0.004, 0.009, 0.02]) if normalization == "reference" else torch.tensor([0.03, 0.07, 0.12])
    ref_hidden, ref_kept = masked_reference(copy.deepcopy(model), ids, mask, thresholds,
                                            normalization=normalization)
    ltprune.patch(model, ltprune.LTPConfig(layout=layout, score_normalization=normalization))
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, ids, mask, output_hidden_states=False)
    records = out.ltp
    # same kept sets per layer
    for index, kept in enumerate(ref_kept):
        ours = (records.pruned_at > index)
        assert torch.equal(ours, kept), f"layer {index}"
        assert torch.equal(records.tokens_kept[:, index], kept.sum(1))
    assert 0 < records.relative_flops < 1  # the thresholds really pruned something
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - ref_hidden[real]).abs().max() <= 1e-5
    assert (out.logits - head_logits(model, ref_hidden)).abs().max() <= 1e-5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    final=st.floats(0.0, 0.05),
    layout=st.sampled_from(["packed", "padded"]),
    family=st.sampled_from(FAMILIES),
    who=st.integers(0, 5),
)
def test_batch_invariance(lengths, final, layout, family, who):
    """An example's logits and kept sets do not depend on the other examples in its batch."""
    who = who % len(lengths)
    model = _cached_model(family)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, layout=layout))
    ids, mask = random_batch(lengths, family=family, seed=sum(lengths))
    together = _run(model, ids, mask)
    n = lengths[who]
    alone = _run(model, ids[who:who + 1, :n], mask[who:who + 1, :n])
    assert (together.logits[who] - alone.logits[0]).abs().max() <= 1e-5
    assert torch.equal(together.ltp.pruned_at[who, :n], alone.ltp.pruned_at[0])
    assert torch.equal(together.ltp.tokens_in[who], alone.ltp.tokens_in[0])


_MODELS = {}


def _cached_model(family):
    if family not in _MODELS:
        _MODELS[family] = tiny_model(family)
    return _MODELS[family]


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_first_token_kept_and_huge_threshold_leaves_only_it(layout):
    model = tiny_model("bert")
    ids, mask = random_batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=1e6, layout=layout))
    records = _run(model, ids, mask).ltp
    assert torch.equal(records.tokens_kept[:, -1], torch.ones(len(LENGTHS), dtype=torch.long))
    assert bool(records.kept_mask[:, 0].all())
    # layer 0 has threshold 0: it keeps everything; from layer 1 on only the first token is left
    assert torch.equal(records.tokens_kept[:, 0], torch.tensor(LENGTHS))
    assert bool((records.tokens_kept[:, 1:] == 1).all())


def test_at_least_one_token_survives_without_keep_first():
    model = tiny_model("bert")
    ids, mask = random_batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=1e6, keep_first_token=False))
    records = _run(model, ids, mask).ltp
    assert bool((records.tokens_kept >= 1).all())


def test_thresholds_rise_linearly():
    assert torch.allclose(init_thresholds(4, 0.03), torch.tensor([0.0, 0.01, 0.02, 0.03]))
    assert torch.allclose(manual_thresholds(4, 0.04), torch.tensor([0.01, 0.02, 0.03, 0.04]))
    model = ltprune.patch(tiny_model("bert"), ltprune.LTPConfig(final_threshold=0.02))
    thresholds = ltprune.get_thresholds(model)
    # a parameter, trainable only in the soft stage (hard and off give it no gradient)
    assert isinstance(thresholds, torch.nn.Parameter) and not thresholds.requires_grad
    assert ltprune.get_thresholds(ltprune.set_mode(model, "soft")).requires_grad
    assert torch.allclose(thresholds, torch.tensor([0.0, 0.01, 0.02]))


def test_threshold_shape_sets_the_initial_schedule():
    """``threshold_shape`` replaces the ramp (scaled so its largest weight is the final
    threshold), survives reset and re-patching, and a wrong length or an all-zero shape is a
    ConfigError naming the option."""
    assert torch.allclose(init_thresholds(3, 0.02, [2, 1, 0]), torch.tensor([0.02, 0.01, 0.0]))
    model = ltprune.patch(tiny_model("bert"), ltprune.LTPConfig(final_threshold=0.02, threshold_shape=[1, 0, 0]))
    assert torch.allclose(ltprune.get_thresholds(model), torch.tensor([0.02, 0.0, 0.0]))
    ltprune.set_thresholds(model, torch.tensor([0.5, 0.5, 0.5]))
    reset_thresholds(model)
    assert torch.allclose(ltprune.get_thresholds(model), torch.tensor([0.02, 0.0, 0.0]))
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))  # back to the ramp: re-initialised
    assert torch.allclose(ltprune.get_thresholds(model), torch.tensor([0.0, 0.01, 0.02]))
    with pytest.raises(ltprune.ConfigError, match="threshold_shape has 2 entries"):
        ltprune.patch(tiny_model("bert"), ltprune.LTPConfig(threshold_shape=[1, 0]))
    for bad in ([0, 0, 0], [1, -1, 0], []):
        with pytest.raises(ltprune.ConfigError, match="threshold_shape"):
            ltprune.LTPConfig(threshold_shape=bad)


def test_flops_hand_computed_case():
    from ltprune import flops

    # D=2, I=3, one layer, n=4 entering, k=2 kept: 4*4*4 + 2*2*16 + 2*2*3*2 = 64 + 64 + 24 = 152
    assert flops.layer_macs(torch.tensor(4), torch.tensor(2), 2, 3).item() == 152
    # baseline for the same input: k = n = 4: 64 + 64 + 48 = 176
    assert flops.baseline_macs(torch.tensor([4]), 1, 2, 3).item() == 176
    assert flops.gflops(torch.tensor(5e8)).item() == 1.0
    records = ltprune.LTPRecords(torch.tensor([4]), torch.tensor([[4]]), torch.tensor([[2]]),
                                 torch.zeros(1, 4, dtype=torch.long), 2, 3)
    assert records.relative_flops == pytest.approx(152 / 176)


def test_records_match_the_flops_formula():
    model = tiny_model("bert")
    ids, mask = random_batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    records = _run(model, ids, mask).ltp
    d, i = 32, 48
    n, k = records.tokens_in.double(), records.tokens_kept.double()
    expected = (4 * d * d * n + 2 * d * n * n + 2 * d * i * k).sum(1)
    assert torch.allclose(records.macs(), expected)
    lengths = torch.tensor(LENGTHS, dtype=torch.double)
    assert torch.allclose(records.baseline_macs(), 3 * (4 * d * d * lengths + 2 * d * lengths**2 + 2 * d * i * lengths))
    assert torch.allclose(records.gflops, 2 * expected / 1e9)


@pytest.mark.parametrize("cumulative", [False, True])
def test_soft_mode_trains_thresholds_and_adds_the_regulariser(cumulative):
    model = tiny_model("bert").train()
    cfg = ltprune.LTPConfig(mode="soft", lambda_=0.5, soft_mask="cumulative" if cumulative else "original")
    ltprune.patch(model, cfg)
    ids, mask = random_batch(LENGTHS)
    labels = torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(1)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    reg = out.ltp.reg_loss
    assert reg is not None and reg.item() > 0
    # nothing removed in the soft stage: every real token goes through every layer
    assert out.ltp.relative_flops == 1.0
    # L_reg = sum of masks over real tokens / (B * N_ref) <= layers * max length / N_ref
    assert reg.item() <= 3 * sum(LENGTHS) / (5 * 128) + 1e-6
    torch.manual_seed(1)
    ltprune.patch(model, cfg.replace(add_reg_to_loss=False))
    task = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert out.loss.item() == pytest.approx(task.item() + 0.5 * reg.item(), rel=1e-5)
    out.loss.backward()
    grad = ltprune.get_thresholds(model).grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0


def test_soft_mode_in_eval_is_hard():
    model = tiny_model("bert")
    ids, mask = random_batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig(mode="hard", final_threshold=0.02))
    hard = _run(model, ids, mask)
    ltprune.set_mode(model, "soft")
    soft_eval = _run(model, ids, mask)
    assert torch.equal(hard.logits, soft_eval.logits)
    assert torch.equal(hard.ltp.tokens_kept, soft_eval.ltp.tokens_kept)


def test_hard_mode_trains_with_real_removal():
    model = tiny_model("bert").train()
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    ids, mask = random_batch(LENGTHS)
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2, 0, 1]))
    out.loss.backward()
    assert out.ltp.relative_flops < 1
    # gradients flow through the removal (index_select) into every layer's value projection
    grads = [p.grad for n, p in model.named_parameters() if "value.weight" in n]
    assert len(grads) == 3 and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert ltprune.get_thresholds(model).grad is None  # hard decisions give thresholds no gradient


def test_question_answering_drop_and_restore():
    model = tiny_model("bert", "qa")
    ids, mask = random_batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    out = _run(model, ids, mask)
    assert out.start_logits.shape == ids.shape
    gone = (out.ltp.pruned_at >= 0) & ~out.ltp.kept_mask
    assert gone.any()
    assert bool((out.start_logits[gone] < -1e30).all()) and bool((out.end_logits[gone] < -1e30).all())
    kept = out.ltp.kept_mask
    assert bool((out.start_logits[kept] > -1e30).all())


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model("roberta")
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02, layout="padded"))
    ltprune.set_thresholds(model, [0.0, 0.011, 0.017])
    ids, mask = random_batch(LENGTHS, family="roberta")
    before = _run(model, ids, mask)
    model.save_pretrained(tmp_path)
    loaded = ltprune.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert ltprune.get_config(loaded) == ltprune.get_config(model)
    assert torch.equal(ltprune.get_thresholds(loaded), ltprune.get_thresholds(model))
    after = _run(loaded, ids, mask)
    assert torch.equal(before.logits, after.logits)
    # a checkpoint written in one mode loads in another
    off = ltprune.from_pretrained(tmp_path, mode="off", layout="packed")
    assert ltprune.get_config(off).mode == "off"
    assert torch.equal(ltprune.get_thresholds(off), ltprune.get_thresholds(model))


def test_unknown_architecture_is_a_clear_error():
    import transformers

    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    with pytest.raises(ltprune.UnsupportedModelError, match="supported: BertModel"):
        ltprune.patch(transformers.GPT2Model(config))


def test_invalid_config_values():
    for bad in (dict(temperature=-1.0), dict(lambda_=-0.1), dict(final_threshold=-0.01),
                dict(mode="fast"), dict(layout="ragged"), dict(final_threshold=float("nan"))):
        with pytest.raises(ltprune.ConfigError):
            ltprune.LTPConfig(**bad)


@pytest.mark.parametrize("cumulative", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_soft_mode_equals_the_written_out_soft_stage(family, cumulative):
    from reference import soft_reference

    model = tiny_model(family, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids, mask = random_batch([12, 5, 9, 3, 12, 7], family=family, seed=4)
    thresholds = torch.tensor([0.004, 0.009, 0.012])
    ref_hidden, ref_reg = soft_reference(copy.deepcopy(model).train(), ids, mask, thresholds, 2e-3, cumulative)
    cfg = ltprune.LTPConfig(mode="soft", temperature=2e-3, soft_mask="cumulative" if cumulative else "original")
    ltprune.patch(model, cfg)
    ltprune.set_thresholds(model, thresholds)
    model.train()
    out = model(input_ids=ids, attention_mask=mask)
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - ref_hidden[real]).abs().max() <= 1e-5
    assert out.ltp.reg_loss.item() == pytest.approx(ref_reg.item(), rel=1e-5)
    assert (out.logits - head_logits(model, ref_hidden)).abs().max() <= 1e-5
    # the masks are really soft here (neither all ~1 nor all ~0), so the test has teeth
    assert 0.05 < ref_reg.item() / (3 * sum([12, 5, 9, 3, 12, 7]) / (6 * 128)) < 0.95
