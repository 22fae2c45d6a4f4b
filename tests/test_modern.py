"""ModernBERT and DeBERTa-v2/v3: exactness of pruning with position-dependent attention.

Tiny random-init models. The masked references below run the stock layers on the full input
(nothing removed, so every token sits at its original position): pruned tokens stop being keys and
queries through the attention mask and keep their state. For ModernBERT the reference writes the
sliding window out in those original positions (``|i - j| <= local_attention // 2``) and rotates
by them; for DeBERTa the stock relative positions 0..n-1 are the original ones. The engine really
removes tokens, so it must carry each kept token's original position to match them.
"""

from __future__ import annotations

import copy

import datasets
import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ltprune
from ltprune import flops
from ltprune.baselines import length_config_flops
from ltprune.evaluation import Predictions, flops_summary, predict_dataset
from ltprune.patch import get_dims

from conftest import random_batch, training_step

MIN = torch.finfo(torch.float32).min
LENGTHS = [22, 9, 17, 4, 24, 13]  # longer than ModernBERT's window (9 keys), beyond DeBERTa's 4 exact buckets


class ModernBert:
    name, prefix = "modernbert", "ModernBert"
    heads = {"seq": "ForSequenceClassification", "qa": "ForQuestionAnswering", "tok": "ForTokenClassification",
             "base": "Model"}
    thresholds = {"reference": [0.004, 0.006, 0.008, 0.01], "length": [0.03, 0.05, 0.07, 0.09]}

    def config(self, **overrides):
        # layers: global, local, global, local (global_attn_every_n_layers=2); window |i - j| <= 4
        return transformers.ModernBertConfig(
            vocab_size=120, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=40,
            max_position_embeddings=256, local_attention=8, global_attn_every_n_layers=2, pad_token_id=0,
            bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, attention_dropout=0.1,
            mlp_dropout=0.1, **overrides)

    def reference(self, model, ids, mask, thresholds, n_ref=128, normalization="reference"):
        """Masked hard pruning through the stock ModernBERT layers (eager attention)."""
        model.set_attn_implementation("eager")
        base = model.base_model
        batch, n = ids.shape
        x = base.embeddings(input_ids=ids)
        position = torch.arange(n)
        near = (position[:, None] - position[None, :]).abs() <= base.config.sliding_window  # original positions
        alive = mask.bool().clone()
        kept = []
        for index, layer in enumerate(base.layers):
            allowed = alive[:, None, :].expand(batch, n, n)
            if layer.attention_type == "sliding_attention":
                allowed = allowed & near
            bias = torch.zeros(batch, 1, n, n).masked_fill(~allowed[:, None], MIN)
            rotary = base.rotary_emb(x, position[None].expand(batch, n), layer.attention_type)
            _, probs = layer.attn(layer.attn_norm(x), position_embeddings=rotary, attention_mask=bias)
            out = layer(x, attention_mask=bias, position_embeddings=rotary)
            x, alive = _prune_step(x, out, probs, alive, thresholds[index], base.config.num_attention_heads, n_ref,
                                   normalization)
            kept.append(alive.clone())
        return base.final_norm(x), kept

    def logits(self, model, hidden, mask):
        if model.config.classifier_pooling == "mean":
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:
            pooled = hidden[:, 0]
        return model.classifier(model.drop(model.head(pooled)))


class DebertaV2:
    name, prefix = "deberta-v2", "DebertaV2"
    heads = {"seq": "ForSequenceClassification", "qa": "ForQuestionAnswering", "base": "Model"}
    thresholds = {"reference": [0.004, 0.006, 0.008], "length": [0.03, 0.05, 0.07]}

    def config(self, **overrides):
        # v3-style: relative attention only (no absolute positions), shared keys, log buckets beyond +-4
        return transformers.DebertaV2Config(
            vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=64, relative_attention=True, position_buckets=8, max_relative_positions=32,
            pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, pad_token_id=0, **overrides)

    def reference(self, model, ids, mask, thresholds, n_ref=128, normalization="reference"):
        """Masked hard pruning through the stock DeBERTa layers (relative positions 0..n-1)."""
        base = model.base_model
        x = base.embeddings(input_ids=ids, mask=mask)
        encoder = base.encoder
        relative = encoder.get_rel_pos(x)
        rel_embeddings = encoder.get_rel_embedding()
        alive = mask.bool().clone()
        kept = []
        for index, layer in enumerate(encoder.layer):
            keys = alive[:, None, None, :].expand(-1, 1, ids.shape[1], -1)
            out, probs = layer(x, keys, relative_pos=relative, rel_embeddings=rel_embeddings, output_attentions=True)
            x, alive = _prune_step(x, out, probs, alive, thresholds[index], base.config.num_attention_heads, n_ref,
                                   normalization)
            kept.append(alive.clone())
        return x, kept

    def logits(self, model, hidden, mask):
        return model.classifier(model.pooler(hidden))


def _prune_step(x, out, probs, alive, threshold, heads, n_ref, normalization):
    """Eq. 7 and 8 on the reference's probabilities; a pruned token keeps its state."""
    probs = probs * alive[:, None, :, None]  # only alive queries vote
    norm = heads * (n_ref if normalization == "reference" else alive.sum(1, keepdim=True))
    keep = alive & (probs.sum(dim=(1, 2)) / norm >= threshold)
    keep[:, 0] = True
    return torch.where(keep[..., None], out, x), keep


FAMILIES = {f.name: f for f in (ModernBert(), DebertaV2())}
HEADS = [(name, head) for name, f in FAMILIES.items() for head in f.heads]


def _model(family, head="seq", seed=0, **overrides):
    torch.manual_seed(seed)
    config = family.config(num_labels=2 if head == "qa" else 3, initializer_range=0.3, **overrides)
    return getattr(transformers, family.prefix + family.heads[head])(config).eval()


def _batch(lengths, seed=0):
    ids, mask = random_batch(lengths, seed=seed)
    return {"input_ids": ids, "attention_mask": mask}, mask


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("name,head", HEADS)
def test_off_mode_and_zero_thresholds_are_the_stock_model(name, head):
    model = _model(FAMILIES[name], head)
    inputs, mask = _batch(LENGTHS)
    stock = _run(model, inputs)
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    ours = _run(model, inputs)
    assert type(ours) is type(stock) and list(ours.keys()) == list(stock.keys())
    for key in stock.keys():
        assert (stock[key] - ours[key]).abs().max() <= 1e-5, key
    assert ours.ltp.relative_flops == 1.0
    for layout in ("packed", "padded"):  # the engine, removing nothing, on real tokens
        ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0, layout=layout))
        ours = _run(model, inputs)
        real = mask.bool()
        for key in stock.keys():
            a, b = stock[key], ours[key]
            if a.shape[:2] == mask.shape:  # token-level outputs: padding slots differ by design
                a, b = a[real], b[real]
            assert (a - b).abs().max() <= 1e-5, (layout, key)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("normalization", ["reference", "length"])
def test_removal_equals_masked_reference(name, layout, normalization):
    family = FAMILIES[name]
    model = _model(family)
    inputs, mask = _batch(LENGTHS, seed=3)
    thresholds = torch.tensor(family.thresholds[normalization])
    ref_hidden, ref_kept = family.reference(copy.deepcopy(model), inputs["input_ids"], mask, thresholds,
                                            normalization=normalization)
    ltprune.patch(model, ltprune.LTPConfig(layout=layout, score_normalization=normalization))
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, inputs)
    records = out.ltp
    for index, kept in enumerate(ref_kept):
        assert torch.equal(records.pruned_at > index, kept), f"layer {index}"
    assert 0 < records.relative_flops < 1  # the thresholds really pruned something ...
    assert bool((records.tokens_kept[:, -1] > 1).any())  # ... and not everything
    assert bool((records.tokens_kept[:, 1] < records.tokens_in[:, 1]).any())
    hidden = _run(model.base_model, inputs).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - ref_hidden[real]).abs().max() <= 1e-5
    assert (out.logits - family.logits(model, ref_hidden, mask)).abs().max() <= 1e-5


def test_modernbert_mean_pooling_and_window_reach():
    """Mean pooling reads every restored token; the window really cuts keys in a local layer."""
    family = FAMILIES["modernbert"]
    model = _model(family, classifier_pooling="mean")
    inputs, mask = _batch(LENGTHS, seed=5)
    thresholds = torch.tensor(family.thresholds["reference"])
    ref_hidden, _ = family.reference(copy.deepcopy(model), inputs["input_ids"], mask, thresholds)
    ltprune.patch(model, ltprune.LTPConfig())
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, {**inputs, "output_attentions": True})
    assert (out.logits - family.logits(model, ref_hidden, mask)).abs().max() <= 1e-5
    local = out.attentions[1]  # layer 1 is local: no query attends beyond 4 original positions
    far = (torch.arange(24)[:, None] - torch.arange(24)[None, :]).abs() > 4
    assert float(local[..., far].abs().max()) == 0.0 and float(out.attentions[0][..., far].max()) > 0


_CACHE = {}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=5), final=st.floats(0.0, 0.03),
       layout=st.sampled_from(["packed", "padded"]), name=st.sampled_from(sorted(FAMILIES)),
       who=st.integers(0, 4))
def test_batch_invariance(lengths, final, layout, name, who):
    """An example's logits and kept sets do not depend on the other examples in its batch."""
    who = who % len(lengths)
    if name not in _CACHE:
        _CACHE[name] = _model(FAMILIES[name])
    model = _CACHE[name]
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, layout=layout))
    inputs, _ = _batch(lengths, seed=sum(lengths))
    together = _run(model, inputs)
    n = lengths[who]
    alone = _run(model, {key: value[who:who + 1, :n] for key, value in inputs.items()})
    assert (together.logits[who] - alone.logits[0]).abs().max() <= 1e-5
    assert torch.equal(together.ltp.pruned_at[who, :n], alone.ltp.pruned_at[0])


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_training_step(name, mode):
    """Training runs (dropout on): soft trains the thresholds, hard removes tokens."""
    model = _model(FAMILIES[name])
    inputs, mask = _batch(LENGTHS)
    training_step(model, inputs, mask, mode)
    weights = [p.grad for n, p in model.named_parameters() if "ltp_thresholds" not in n and p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in weights[:4])


@pytest.mark.parametrize("name", FAMILIES)
def test_save_and_load_round_trip(name, tmp_path):
    model = _model(FAMILIES[name])
    ltprune.patch(model, ltprune.LTPConfig(layout="padded"))
    ltprune.set_thresholds(model, FAMILIES[name].thresholds["reference"])
    inputs, _ = _batch(LENGTHS)
    before = _run(model, inputs)
    assert before.ltp.relative_flops < 1
    model.save_pretrained(tmp_path)
    loaded = ltprune.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and ltprune.get_config(loaded) == ltprune.get_config(model)
    after = _run(loaded, inputs)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.ltp.pruned_at, after.ltp.pruned_at)


@pytest.mark.parametrize("name,head", [("modernbert", "qa"), ("modernbert", "tok"), ("deberta-v2", "qa")])
def test_token_level_heads_drop_and_restore(name, head):
    model = _model(FAMILIES[name], head)
    inputs, mask = _batch(LENGTHS)
    ltprune.patch(model, ltprune.LTPConfig())
    ltprune.set_thresholds(model, FAMILIES[name].thresholds["reference"])
    out = _run(model, inputs)
    gone = (out.ltp.pruned_at >= 0) & ~out.ltp.kept_mask
    assert gone.any()
    if head == "qa":
        assert out.start_logits.shape == mask.shape
        assert bool((out.start_logits[gone] < -1e30).all()) and bool((out.start_logits[out.ltp.kept_mask] > -1e30).all())
    else:
        assert out.logits.shape[:2] == mask.shape and bool(torch.isfinite(out.logits).all())


def test_unsupported_position_schemes_keep_one_line_errors():
    with pytest.raises(ltprune.UnsupportedModelError, match="rope_type"):
        ltprune.patch(_model(FAMILIES["modernbert"], rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 160000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}))
    with pytest.raises(ltprune.UnsupportedModelError, match="conv_kernel_size"):
        ltprune.patch(_model(FAMILIES["deberta-v2"], conv_kernel_size=3))
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        position_embedding_type="relative_key"))
    with pytest.raises(ltprune.UnsupportedModelError, match="position_embedding_type"):
        ltprune.patch(bert)
    model = ltprune.patch(_model(FAMILIES["modernbert"]))
    ids, mask = random_batch([6])
    with pytest.raises(ltprune.LTPError, match="position_ids"):
        model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(6).flip(0)[None])


def test_local_layer_flops_by_hand():
    """D = 2, I = 3: a local layer of window 3 keys on n = 5 tokens, k = 2 kept; a global one."""
    # global: 4 D^2 n + 2 D n^2 + 2 D I k = 80 + 100 + 24 = 204; local: 80 + 2*2*5*3 + 24 = 164
    assert flops.layer_macs(torch.tensor(5), torch.tensor(2), 2, 3).item() == 204
    assert flops.layer_macs(torch.tensor(5), torch.tensor(2), 2, 3, window=3).item() == 164
    assert flops.layer_macs(torch.tensor(2), torch.tensor(2), 2, 3, window=3).item() == 32 + 16 + 24  # n < window
    # DeBERTa-style position keys P = 4: + 2 D n P = 80
    assert flops.layer_macs(torch.tensor(5), torch.tensor(2), 2, 3, position_keys=4).item() == 204 + 80
    tokens_in, kept = torch.tensor([[5, 5]]), torch.tensor([[5, 2]])
    assert flops.example_macs(tokens_in, kept, 2, 3, windows=(None, 3)).item() == (80 + 100 + 60) + 164
    assert flops.baseline_macs(torch.tensor([5]), 2, 2, 3, windows=(None, 3)).item() == (80 + 100 + 60) + (80 + 60 + 60)


def test_modernbert_records_count_the_window():
    model = ltprune.patch(_model(FAMILIES["modernbert"]), ltprune.LTPConfig(mode="off"))
    dims = get_dims(model)
    assert dims.windows == (None, 9, None, 9) and dims.intermediate == 60  # GLU: 1.5 x 40
    inputs, _ = _batch([24])
    records = _run(model, inputs).ltp
    d, i, n = 32, 60, 24
    glob, loc = 4 * d * d * n + 2 * d * n * n + 2 * d * i * n, 4 * d * d * n + 2 * d * n * 9 + 2 * d * i * n
    assert records.baseline_macs().item() == 2 * glob + 2 * loc


def test_eval_flops_summary_counts_the_family_terms_by_hand():
    """``ltprune eval``'s summary uses the window and relative-position terms, as the records do.

    D = 2, I = 3, P = 4; layer 0 global (n = k = 5), layer 1 local with 3 keys (n = 5, k = 2):
    layer 0 = 4 D^2 n + 2 D n^2 + 2 D n P + 2 D I k = 80 + 100 + 80 + 60 = 320,
    layer 1 = 80 + 2 D n 3 + 80 + 2 D I 2 = 80 + 60 + 80 + 24 = 244; unpruned layer 1 = 280.
    """
    pred = Predictions(np.zeros((1, 2), np.float32), np.array([5]), np.array([[5, 5]]), np.array([[5, 2]]),
                       2, 3, windows=(None, 3), position_keys=4)
    summary = flops_summary(pred)
    assert summary["gflops"] == pytest.approx(2 * 564 / 1e9, rel=1e-12)
    assert summary["baseline_gflops"] == pytest.approx(2 * 600 / 1e9, rel=1e-12)
    assert summary["relative_flops"] == pytest.approx(564 / 600, rel=1e-12)
    assert length_config_flops([5, 2], [5], 2, 3, (None, 3), 4) == pytest.approx(564 / 600, rel=1e-12)  # LAT's count
    plain = flops_summary(Predictions(pred.logits, pred.lengths, pred.tokens_in, pred.tokens_kept, 2, 3))
    assert plain["gflops"] == pytest.approx(2 * ((80 + 100 + 60) + (80 + 100 + 24)) / 1e9, rel=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_eval_summary_equals_the_records(name):
    """predict_dataset + flops_summary give the relative FLOPs of ``outputs.ltp`` on the same batch."""
    model = _model(FAMILIES[name])
    ltprune.patch(model, ltprune.LTPConfig())
    ltprune.set_thresholds(model, FAMILIES[name].thresholds["reference"])
    inputs, mask = _batch(LENGTHS, seed=3)
    records = _run(model, inputs).ltp
    rows = {"input_ids": [ids[m.bool()].tolist() for ids, m in zip(inputs["input_ids"], mask)]}
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    summary = flops_summary(predict_dataset(model, datasets.Dataset.from_dict(rows), 0, batch_size=len(LENGTHS),
                                            device="cpu"))
    assert 0 < records.relative_flops < 1
    assert summary["relative_flops"] == pytest.approx(records.relative_flops, rel=1e-9)
    assert summary["baseline_gflops"] == pytest.approx(float(records.baseline_gflops.mean()), rel=1e-9)


@pytest.mark.parametrize("name", FAMILIES)
def test_per_layer_hidden_states(name):
    """``output_hidden_states`` gives L + 1 states as the stock model does, also for DeBERTa, whose
    base model always asks its encoder for all of them: the caller's flag decides what is recorded."""
    family = FAMILIES[name]
    model = _model(family)
    inputs, mask = _batch(LENGTHS)
    layers = model.config.num_hidden_layers
    stock = _run(model, {**inputs, "output_hidden_states": True})
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0))
    ours = _run(model, {**inputs, "output_hidden_states": True})
    real = mask.bool()
    assert len(ours.hidden_states) == len(stock.hidden_states) == layers + 1
    for a, b in zip(ours.hidden_states, stock.hidden_states):
        assert (a[real] - b[real]).abs().max() <= 1e-5
    # with pruning: a removed token holds the state it had when removed
    ltprune.set_thresholds(model, family.thresholds["reference"])
    out = _run(model, {**inputs, "output_hidden_states": True})
    pruned_at = out.ltp.pruned_at
    assert bool(((pruned_at >= 0) & (pruned_at < layers)).any()) and len(out.hidden_states) == layers + 1
    # (ModernBERT's last one is after the final LayerNorm, as the stock model's: compared below)
    for layer in range(layers if name == "deberta-v2" else layers - 1):
        gone = (pruned_at >= 0) & (pruned_at < layer)
        assert torch.equal(out.hidden_states[layer + 1][gone], out.hidden_states[layer][gone])
    final = _run(model, inputs)
    assert final.hidden_states is None
    assert (out.logits - final.logits).abs().max() <= 1e-5 and torch.equal(final.ltp.pruned_at, pruned_at)
    base = _run(model.base_model, {**inputs, "output_hidden_states": True})  # the last one is the output
    assert torch.equal(base.hidden_states[-1], base.last_hidden_state) and len(base.hidden_states) == layers + 1
    if name == "deberta-v2":  # the tuple form has them too
        as_tuple = _run(model, {**inputs, "output_hidden_states": True, "return_dict": False})
        assert len(as_tuple[1]) == layers + 1 and torch.equal(as_tuple[0], out.logits)
        model.config.output_hidden_states = True  # through the config, as the stock model reads it
        assert len(_run(model, inputs).hidden_states) == layers + 1
