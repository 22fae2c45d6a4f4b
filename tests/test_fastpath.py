"""The fast paths equal the masked reference: the static (sync-free) step, the two-call scores.

Also: the static step has no data-dependent output shapes (traced with make_fx), overflowing a
planned capacity reruns exactly, and the log-sum-exp identity holds against explicit
probabilities with dead queries and padding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ltprune
from ltprune import attention, engine
from ltprune.fastpath import plan_capacity

from conftest import random_batch, tiny_model
from reference import head_logits, masked_reference
from test_families import FAMILIES
from test_families import masked_reference as family_reference

PATHS = [dict(step="static"), dict(score_kernel="lse"), dict(step="static", score_kernel="lse"),
         dict(layout="padded", score_kernel="lse")]
THRESHOLDS = {"reference": [0.004, 0.009, 0.02], "length": [0.03, 0.07, 0.12]}


def _ids(path):
    return "-".join(f"{k}={v}" for k, v in path.items())


def _run(model, **inputs):
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("path", PATHS, ids=_ids)
@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("normalization", ["reference", "length"])
def test_fast_paths_equal_the_masked_reference(path, family, normalization):
    model = tiny_model(family)
    ids, mask = random_batch([12, 5, 9, 3, 12, 7], family=family, seed=3)
    thresholds = torch.tensor(THRESHOLDS[normalization])
    ref_hidden, ref_kept = masked_reference(copy.deepcopy(model), ids, mask, thresholds,
                                            normalization=normalization)
    ltprune.patch(model, ltprune.LTPConfig(score_normalization=normalization, **path))
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, input_ids=ids, attention_mask=mask)
    for index, kept in enumerate(ref_kept):
        assert torch.equal(out.ltp.pruned_at > index, kept), f"layer {index}"
        assert torch.equal(out.ltp.tokens_kept[:, index], kept.sum(1))
    assert 0 < out.ltp.relative_flops < 1
    assert (out.logits - head_logits(model, ref_hidden)).abs().max() <= 1e-5
    hidden = _run(model.base_model, input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - ref_hidden[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("path", PATHS[:2], ids=_ids)
@pytest.mark.parametrize("name", FAMILIES)
def test_fast_paths_equal_the_reference_for_every_family(path, name):
    family = FAMILIES[name]
    model = family.model()
    inputs, mask = family.batch([12, 5, 9, 3, 12, 7] if family.text else 6, seed=3)
    thresholds = torch.tensor([0.004, 0.006, 0.008])
    ref_hidden, ref_kept = family_reference(family, copy.deepcopy(model), inputs, mask, thresholds)
    ltprune.patch(model, ltprune.LTPConfig(**path))
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, **inputs)
    for index, kept in enumerate(ref_kept):
        assert torch.equal(out.ltp.pruned_at > index, kept), f"layer {index}"
    assert 0 < out.ltp.relative_flops < 1
    assert (out.logits - family.logits(model, ref_hidden)).abs().max() <= 1e-5


def _count_runs(monkeypatch):
    calls = []
    real = engine._run_hard

    def spy(*args, static, **kwargs):
        calls.append(static)
        return real(*args, static=static, **kwargs)

    monkeypatch.setattr(engine, "_run_hard", spy)
    return calls


def test_static_step_with_a_planned_capacity_saves_rows_and_overflow_reruns_exactly(monkeypatch):
    model = tiny_model("bert")
    ids, mask = random_batch([12, 5, 9, 3, 12, 7], seed=3)
    ltprune.patch(model, ltprune.LTPConfig(step="exact"))
    ltprune.set_thresholds(model, THRESHOLDS["reference"])
    exact = _run(model, input_ids=ids, attention_mask=mask)
    ltprune.set_mode(model, "hard")
    fractions = plan_capacity(model, [{"input_ids": ids, "attention_mask": mask}], margin=0.0)
    assert ltprune.get_config(model).capacity == fractions and min(fractions) < 1
    ltprune.patch(model, ltprune.get_config(model).replace(step="static"))
    calls = _count_runs(monkeypatch)
    planned = _run(model, input_ids=ids, attention_mask=mask)
    assert calls == [True]  # it fitted: no rerun
    assert torch.equal(planned.ltp.pruned_at, exact.ltp.pruned_at)
    assert (planned.logits - exact.logits).abs().max() <= 1e-5
    # a plan far too tight: the flag trips and the batch is rerun on the exact step
    ltprune.patch(model, ltprune.get_config(model).replace(capacity=[0.05, 0.05, 0.05]))
    calls.clear()
    tight = _run(model, input_ids=ids, attention_mask=mask)
    assert calls == [True, False]
    assert torch.equal(tight.ltp.pruned_at, exact.ltp.pruned_at)
    assert (tight.logits - exact.logits).abs().max() <= 1e-5


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6), final=st.floats(0.0, 0.05),
       tight=st.floats(0.05, 1.0), kernel=st.sampled_from(["explicit", "lse"]),
       keep_first=st.booleans())
def test_property_static_step_equals_exact(lengths, final, tight, kernel, keep_first):
    model = _MODEL
    ids, mask = random_batch(lengths, seed=sum(lengths))
    base = ltprune.LTPConfig(final_threshold=final, keep_first_token=keep_first, score_kernel=kernel)
    ltprune.patch(model, base.replace(step="exact"))
    exact = _run(model, input_ids=ids, attention_mask=mask)
    ltprune.patch(model, base.replace(step="static", capacity=[tight] * 3))
    fast = _run(model, input_ids=ids, attention_mask=mask)
    assert torch.equal(fast.ltp.pruned_at, exact.ltp.pruned_at)
    assert torch.equal(fast.ltp.tokens_in, exact.ltp.tokens_in)
    assert (fast.logits - exact.logits).abs().max() <= 1e-5


_MODEL = tiny_model("bert")


@pytest.mark.parametrize("with_padding", [False, True])
def test_two_call_scores_equal_explicit_probabilities(with_padding):
    torch.manual_seed(0)
    batch, heads, n, d = 3, 4, 37, 16
    q, k, v = (torch.randn(batch, heads, n, d) * 2 for _ in range(3))
    alive = None
    if with_padding:  # padding and dead (pruned) tokens: neither queries nor keys
        alive = torch.rand(batch, n) > 0.3
        alive[:, 0] = True
        alive[2, 20:] = False
    ctx_e, raw_e = attention.explicit(q, k, v, alive)
    ctx_l, raw_l = attention.two_call(q, k, v, alive)
    real = torch.ones(batch, n, dtype=torch.bool) if alive is None else alive
    assert (raw_e - raw_l)[real].abs().max() <= 1e-4 * raw_e.abs().max()
    assert bool((raw_l[~real] == 0).all())
    assert (ctx_e - ctx_l).transpose(1, 2)[real].abs().max() <= 1e-5
    # the scores of a sequence sum to its number of alive queries, summed over heads
    assert torch.allclose(raw_l.sum(1), heads * real.sum(1).float(), rtol=1e-4)


def _dynamic_ops(fn, *args):
    """The ops of ``fn``'s graph whose output shape (or value on the host) depends on the data."""
    from torch.fx.experimental.proxy_tensor import make_fx

    graph = make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args).graph
    flagged = []
    for node in graph.nodes:
        tags = getattr(node.target, "tags", ())
        if torch.Tag.dynamic_output_shape in tags or torch.Tag.data_dependent_output in tags:
            flagged.append(str(node.target))
    return flagged


def _hard_pass(model, static):
    state = model._ltp
    thresholds = ltprune.get_thresholds(model)
    thetas = engine.host_thresholds(thresholds)

    def run(hidden, mask):
        out, records, _ = engine._run_hard(
            state.adapter, state.adapter.layers(state.base), state.dims, state.config, thresholds, thetas,
            hidden, mask, mask.sum(1), False, engine.Capture(), static=static)
        return out, records.pruned_at, records.tokens_kept

    return run


@pytest.mark.parametrize("kernel", ["explicit", "lse"])
def test_static_step_has_no_data_dependent_shapes(kernel):
    model = ltprune.patch(tiny_model("bert"), ltprune.LTPConfig(score_kernel=kernel, capacity=[0.8, 0.6, 0.5]))
    ltprune.set_thresholds(model, THRESHOLDS["reference"])
    ids, mask = random_batch([12, 5, 9, 3], seed=2)
    with torch.no_grad():
        hidden = model.base_model.embeddings(input_ids=ids)
        flagged = _dynamic_ops(_hard_pass(model, static=True), hidden, mask.bool())
        assert flagged == [], flagged
        # the exact step does have them (the guard has teeth)
        try:
            flagged = _dynamic_ops(_hard_pass(model, static=False), hidden, mask.bool())
        except Exception:  # noqa: BLE001 - a host read of a traced value also fails the trace
            flagged = ["(could not trace: data-dependent control flow)"]
        assert flagged


def test_graph_runner_buckets_pads_and_slices_back():
    """The runner's logic without CUDA (graphs off): padded to a bucket, same results, sliced back."""
    from ltprune.fastpath import GraphRunner, _clone, bucket_length

    assert [bucket_length(n, (16, 32)) for n in (1, 16, 17, 40)] == [16, 16, 32, 40]
    model = ltprune.patch(tiny_model("bert", "qa"), ltprune.LTPConfig(capacity=[1.0, 0.9, 0.8]))
    ltprune.set_thresholds(model, THRESHOLDS["reference"])
    ids, mask = random_batch([9, 4, 13], seed=5)
    direct = _run(model, input_ids=ids, attention_mask=mask)
    runner = GraphRunner(model, buckets=(8, 24), graphs=False)
    assert ltprune.get_config(model).step == "static"
    out = runner(ids, mask)
    assert out.start_logits.shape == ids.shape and out.ltp.pruned_at.shape == ids.shape
    assert torch.equal(out.ltp.pruned_at, direct.ltp.pruned_at)
    real = mask.bool()
    assert (out.start_logits[real] - direct.start_logits[real]).abs().max() <= 1e-5
    copy_ = _clone(out)
    copy_.start_logits.add_(1.0)
    copy_.ltp.tokens_kept.add_(1)
    assert not torch.equal(copy_.start_logits, out.start_logits)  # no aliasing
    assert not torch.equal(copy_.ltp.tokens_kept, out.ltp.tokens_kept)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and varlen kernels need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_varlen_and_graphs_equal_the_exact_step(dtype):
    from ltprune.fastpath import GraphRunner

    model = tiny_model("bert").cuda().to(dtype)
    ids, mask = (t.cuda() for t in random_batch([12, 5, 9, 3, 12, 7], seed=3))
    ltprune.patch(model, ltprune.LTPConfig(step="exact", score_kernel="explicit"))
    ltprune.set_thresholds(model, THRESHOLDS["reference"])
    exact = _run(model, input_ids=ids, attention_mask=mask)
    ltprune.patch(model, ltprune.get_config(model).replace(step="static", score_kernel="lse"))
    varlen = _run(model, input_ids=ids, attention_mask=mask)
    graphed = GraphRunner(model)(ids, mask)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for out in (varlen, graphed):
        agree = (out.ltp.pruned_at == exact.ltp.pruned_at).float().mean().item()
        assert agree == 1.0 if dtype == torch.float32 else agree >= 0.95
        assert (out.logits.float() - exact.logits.float()).abs().max() <= tol


@pytest.mark.parametrize("kernel", ["explicit", "lse"])
def test_bfloat16_model_scores_in_fp32(kernel):
    """Half precision runs every path; scores are summed in fp32. bf16 numerics move some
    near-threshold decisions, so the agreement with fp32 is a tolerance, not equality."""
    model = tiny_model("bert", initializer_range=0.2)
    ids, mask = random_batch([12, 5, 9, 3, 12, 7], seed=3)
    ltprune.patch(model, ltprune.LTPConfig(score_kernel=kernel))
    ltprune.set_thresholds(model, THRESHOLDS["reference"])
    fp32 = _run(model, input_ids=ids, attention_mask=mask)
    half = _run(model.to(torch.bfloat16), input_ids=ids, attention_mask=mask)
    assert half.logits.dtype == torch.bfloat16
    real = mask.bool()
    agree = (half.ltp.pruned_at == fp32.ltp.pruned_at)[real].float().mean().item()
    assert agree >= 0.9, agree
    assert (half.logits.float() - fp32.logits).abs().max() <= 0.1 * fp32.logits.abs().max() + 0.05
