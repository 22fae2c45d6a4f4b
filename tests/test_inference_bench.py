"""predict() and the benchmark plumbing (no speed is asserted here: speed lives in `ltprune bench`)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

import ltprune
from ltprune import bench
from ltprune.inference import predict

from conftest import offline_model_dir, random_batch, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(offline_model_dir())


def _model(**overrides):
    model = tiny_model("bert", vocab_size=30522, num_labels=2, **overrides)
    return ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.03))


def test_predict_matches_one_by_one_and_keeps_order(tokenizer):
    model = _model()
    texts = ["a fine film", "the plot was dull and the actors were quite weak , really", "superb", "ok then"]
    batched = predict(model, tokenizer, texts, batch_size=3, return_tokens=True)
    assert [r["text"] for r in batched] == texts
    for text, item in zip(texts, batched):
        alone = predict(model, tokenizer, [text], batch_size=1, return_tokens=True)[0]
        assert alone["label"] == item["label"] and alone["score"] == pytest.approx(item["score"], abs=1e-5)
        assert alone["kept_tokens"] == item["kept_tokens"]
        assert item["tokens"] == len(tokenizer(text)["input_ids"])
        assert [len(k) for k in item["kept_tokens"]] == item["tokens_per_layer"]
        assert item["kept_tokens"][-1][0] == "[CLS]"


@pytest.mark.parametrize("bad", [[""], ["   "], [], [3]])
def test_predict_rejects_empty_and_non_text(tokenizer, bad):
    with pytest.raises(ltprune.LTPError):
        predict(_model(), tokenizer, bad)


def test_predict_truncates_long_texts_with_a_warning(tokenizer):
    model = _model(max_position_embeddings=64)
    with pytest.warns(UserWarning, match="truncated"):
        out = predict(model, tokenizer, ["word " * 200], max_length=64)
    assert out[0]["tokens"] == 64


@pytest.mark.parametrize("need_probs", [0.0, 0.03])
def test_packed_attention_strategies_agree(need_probs):
    model = ltprune.patch(tiny_model("bert"), ltprune.LTPConfig(final_threshold=need_probs, packed_attention="loop"))
    ids, mask = random_batch([11, 3, 17, 8, 8])
    with torch.no_grad():
        loop = model(input_ids=ids, attention_mask=mask)
        ltprune.patch(model, ltprune.get_config(model).replace(packed_attention="pad"))
        pad = model(input_ids=ids, attention_mask=mask)
    assert (loop.logits - pad.logits).abs().max() <= 1e-5
    assert torch.equal(loop.ltp.pruned_at, pad.ltp.pruned_at)


def test_bench_functions_report_ratios():
    rows = bench.decision_cost(batch=4, lengths=(32,), keep=(0.25,), hidden=16, repeats=1, inner=1)
    assert rows[0]["n"] == 32 and rows[0]["topk_over_threshold"] > 0 and rows[0]["with_gather_ratio"] > 0
    model = _model()
    stock = tiny_model("bert", vocab_size=30522, num_labels=2)
    import datasets

    ids, mask = random_batch([12, 5, 9, 7, 3, 10], vocab=30522)
    data = datasets.Dataset.from_dict({"input_ids": [i[m.bool()].tolist() for i, m in zip(ids, mask)],
                                       "attention_mask": [m[m.bool()].tolist() for m in mask]})
    batches = bench.length_sorted_tensors(data, 0, 4)
    ramp = bench.calibrate_thresholds(model, batches, target=0.6)
    assert ramp > 0
    # bisection on a handful of tiny sequences: the pruned FLOPs land near the target
    assert abs(1 / bench.flops_reduction(model, batches) - 0.6) < 0.1
    rows = bench.throughput_vs_batch(stock, model, data, 0, batch_sizes=(1, 4), repeats=1)
    for r in rows:
        assert r["flops_reduction"] > 1
        for layout in ("padded", "packed"):
            assert r[layout]["realised_over_theoretical"] == pytest.approx(
                r[layout]["speedup"] / r["flops_reduction"])
    assert "Throughput" in bench.markdown({"environment": bench.environment(), "task": "t", "num_sequences": 6,
                                           "mean_length": 7.7, "throughput": {"tiny": rows},
                                           "models": {"tiny": {"layers": 3, "hidden": 32}}})
