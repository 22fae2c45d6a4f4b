"""Exactness of every non-BERT family on tiny random-init models (the checks of test_core.py).

Each family gets a masked reference written with its stock HF layers (eager attention, an explicit
additive key mask, nothing removed): the engine, which really removes tokens, must keep the same
tokens at every layer and give the same logits in both layouts.
"""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ltprune

from conftest import random_batch, training_step

LENGTHS = [9, 4, 13, 2, 7]


class Family:
    """A family's tiny model, inputs and the pieces its masked reference needs."""

    name: str
    prefix: str
    heads = {"seq": "ForSequenceClassification", "qa": "ForQuestionAnswering", "base": "Model"}
    text = True

    def config(self, **overrides):
        raise NotImplementedError

    def model(self, head="seq", seed=0):
        torch.manual_seed(seed)
        # a wide init spreads attention, so thresholds prune some tokens at every layer, not all
        config = self.config(num_labels=2 if head == "qa" else 3, initializer_range=0.3)
        return getattr(transformers, self.prefix + self.heads[head])(config).eval()

    def batch(self, lengths, seed=0):
        """Model inputs and the (B, n) mask of real tokens."""
        ids, mask = random_batch(lengths, seed=seed, family="roberta" if self.name == "xlm-roberta" else "bert")
        return {"input_ids": ids, "attention_mask": mask}, mask

    def embed(self, base, inputs):
        return base.embeddings(input_ids=inputs["input_ids"])

    def layers(self, base):
        return base.encoder.layer

    def layer(self, layer, x, bias):
        """(stock layer output, attention probabilities) with ``bias`` added to the attention logits."""
        return layer(x, bias), layer.attention(x, attention_mask=bias)[1]

    def final(self, base, hidden):
        """What the base model puts on top of the last layer's states."""
        return hidden

    def logits(self, model, hidden):
        return model.classifier(hidden)


class DistilBert(Family):
    name, prefix = "distilbert", "DistilBert"

    def config(self, **overrides):
        return transformers.DistilBertConfig(
            vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=48, max_position_embeddings=80,
            dropout=0.1, attention_dropout=0.1, **overrides)

    def embed(self, base, inputs):
        return base.embeddings(inputs["input_ids"])

    def layers(self, base):
        return base.transformer.layer

    def logits(self, model, hidden):
        return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))


class Electra(Family):
    # embedding_size != hidden_size: embeddings_project runs before the encoder
    name, prefix = "electra", "Electra"

    def config(self, **overrides):
        return transformers.ElectraConfig(
            vocab_size=120, embedding_size=16, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=80, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, **overrides)

    def embed(self, base, inputs):
        return base.embeddings_project(base.embeddings(input_ids=inputs["input_ids"]))


class XLMRoberta(Family):
    name, prefix = "xlm-roberta", "XLMRoberta"

    def config(self, **overrides):
        return transformers.XLMRobertaConfig(
            vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=80, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            pad_token_id=1, **overrides)


class ViT(Family):
    name, prefix = "vit", "ViT"
    heads = {"seq": "ForImageClassification", "base": "Model"}
    text = False
    tokens = 17  # (32 / 8)^2 patches + [CLS]

    def config(self, **overrides):
        return transformers.ViTConfig(
            image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=3,
            num_attention_heads=4, intermediate_size=48, hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1, **overrides)

    def batch(self, count, seed=0):
        """``count`` different random images (every token is real)."""
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randn(count, 3, 32, 32, generator=g)
        return {"pixel_values": pixels}, torch.ones(count, self.tokens, dtype=torch.long)

    def embed(self, base, inputs):
        return base.embeddings(inputs["pixel_values"])

    def layers(self, base):
        return base.layers

    def layer(self, layer, x, bias):
        return layer(x, bias), layer.attention(layer.layernorm_before(x), bias)[1]

    def final(self, base, hidden):
        return base.layernorm(hidden)

    def logits(self, model, hidden):
        return model.classifier(model.vit.layernorm(hidden)[:, 0])


FAMILIES = {f.name: f for f in (DistilBert(), Electra(), XLMRoberta(), ViT())}
HEADS = [(name, head) for name, f in FAMILIES.items() for head in f.heads]


def _inputs(family, seed=0):
    return family.batch(LENGTHS if family.text else 5, seed=seed)


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


@torch.no_grad()
def masked_reference(family, model, inputs, mask, thresholds, n_ref=128, normalization="reference"):
    """Hard pruning without removal: pruned tokens stop being keys/queries and keep their state."""
    model.set_attn_implementation("eager")
    base = model.base_model
    x = family.embed(base, inputs)
    alive = mask.bool().clone()
    heads = base.config.num_attention_heads
    kept_per_layer = []
    for index, layer in enumerate(family.layers(base)):
        bias = torch.zeros(alive.shape).masked_fill(~alive, torch.finfo(torch.float32).min)[:, None, None, :]
        out, probs = family.layer(layer, x, bias)
        probs = probs * alive[:, None, :, None]  # only alive queries vote
        norm = heads * (n_ref if normalization == "reference" else alive.sum(1, keepdim=True))
        scores = probs.sum(dim=(1, 2)) / norm
        keep = alive & (scores >= thresholds[index])
        keep[:, 0] = True
        x = torch.where(keep[..., None], out, x)
        alive = keep
        kept_per_layer.append(alive.clone())
    return x, kept_per_layer


@pytest.mark.parametrize("name,head", HEADS)
def test_off_mode_is_the_stock_model(name, head):
    family = FAMILIES[name]
    model = family.model(head)
    inputs, mask = _inputs(family)
    stock = _run(model, inputs)
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    ours = _run(model, inputs)
    assert list(ours.keys()) == list(stock.keys()) and type(ours) is type(stock)
    for key in stock.keys():
        assert (stock[key] - ours[key]).abs().max() <= 1e-5, key
    assert ours.ltp.relative_flops == 1.0
    assert torch.equal(ours.ltp.lengths, mask.sum(1))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_zero_thresholds_remove_nothing(name, layout):
    family = FAMILIES[name]
    model = family.model()
    inputs, _ = _inputs(family)
    stock = _run(model, inputs).logits
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0, layout=layout))
    out = _run(model, inputs)
    assert (out.logits - stock).abs().max() <= 1e-5
    assert out.ltp.relative_flops == 1.0


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("normalization", ["reference", "length"])
def test_removal_equals_masked_reference(name, layout, normalization):
    family = FAMILIES[name]
    model = family.model()
    inputs, mask = family.batch([12, 5, 9, 3, 12, 7] if family.text else 6, seed=3)
    thresholds = (torch.tensor([0.004, 0.006, 0.008]) if normalization == "reference"
                  else torch.tensor([0.04, 0.07, 0.1]))
    ref_hidden, ref_kept = masked_reference(family, copy.deepcopy(model), inputs, mask, thresholds,
                                            normalization=normalization)
    ltprune.patch(model, ltprune.LTPConfig(layout=layout, score_normalization=normalization))
    ltprune.set_thresholds(model, thresholds)
    out = _run(model, inputs)
    records = out.ltp
    for index, kept in enumerate(ref_kept):
        assert torch.equal(records.pruned_at > index, kept), f"layer {index}"
        assert torch.equal(records.tokens_kept[:, index], kept.sum(1))
    assert 0 < records.relative_flops < 1  # the thresholds really pruned something
    assert bool((records.tokens_kept[:, -1] > 1).any())  # ... and not everything
    assert bool((records.tokens_kept[:, 1] < records.tokens_in[:, 1]).any())
    hidden = _run(model.base_model, inputs).last_hidden_state
    real = mask.bool()
    assert (hidden[real] - family.final(model.base_model, ref_hidden)[real]).abs().max() <= 1e-5
    assert (out.logits - family.logits(model, ref_hidden)).abs().max() <= 1e-5


_MODELS = {}


def _cached_model(name):
    if name not in _MODELS:
        _MODELS[name] = FAMILIES[name].model()
    return _MODELS[name]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6),
    final=st.floats(0.0, 0.05),
    layout=st.sampled_from(["packed", "padded"]),
    name=st.sampled_from(["distilbert", "electra", "xlm-roberta"]),
    who=st.integers(0, 5),
)
def test_text_batch_invariance(lengths, final, layout, name, who):
    """An example's logits and kept sets do not depend on the other examples in its batch."""
    who = who % len(lengths)
    family = FAMILIES[name]
    model = _cached_model(name)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, layout=layout))
    inputs, _ = family.batch(lengths, seed=sum(lengths))
    together = _run(model, inputs)
    n = lengths[who]
    alone = _run(model, {key: value[who:who + 1, :n] for key, value in inputs.items()})
    assert (together.logits[who] - alone.logits[0]).abs().max() <= 1e-5
    assert torch.equal(together.ltp.pruned_at[who, :n], alone.ltp.pruned_at[0])
    assert torch.equal(together.ltp.tokens_in[who], alone.ltp.tokens_in[0])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 6),
    seed=st.integers(0, 1000),
    final=st.floats(0.0, 0.05),
    layout=st.sampled_from(["packed", "padded"]),
    who=st.integers(0, 5),
)
def test_vit_batch_invariance(count, seed, final, layout, who):
    """Different images prune differently; each image's result is the same alone and batched."""
    who = who % count
    model = _cached_model("vit")
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, layout=layout))
    inputs, _ = FAMILIES["vit"].batch(count, seed=seed)
    together = _run(model, inputs)
    alone = _run(model, {"pixel_values": inputs["pixel_values"][who:who + 1]})
    assert (together.logits[who] - alone.logits[0]).abs().max() <= 1e-5
    assert torch.equal(together.ltp.pruned_at[who], alone.ltp.pruned_at[0])
    assert torch.equal(together.ltp.tokens_in[who], alone.ltp.tokens_in[0])


@pytest.mark.parametrize("name", FAMILIES)
def test_save_and_load_round_trip(name, tmp_path):
    family = FAMILIES[name]
    model = family.model()
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02, layout="padded"))
    ltprune.set_thresholds(model, [0.0, 0.011, 0.017])
    inputs, _ = _inputs(family)
    before = _run(model, inputs)
    assert before.ltp.relative_flops < 1
    model.save_pretrained(tmp_path)
    loaded = ltprune.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert ltprune.get_config(loaded) == ltprune.get_config(model)
    assert torch.equal(ltprune.get_thresholds(loaded), ltprune.get_thresholds(model))
    after = _run(loaded, inputs)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.ltp.pruned_at, after.ltp.pruned_at)
    off = ltprune.from_pretrained(tmp_path, mode="off", layout="packed")
    assert ltprune.get_config(off).mode == "off"
    assert torch.equal(ltprune.get_thresholds(off), ltprune.get_thresholds(model))


@pytest.mark.parametrize("name", ["distilbert", "electra"])
def test_question_answering_drop_and_restore(name):
    family = FAMILIES[name]
    model = family.model("qa")
    inputs, mask = _inputs(family)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    out = _run(model, inputs)
    assert out.start_logits.shape == mask.shape
    gone = (out.ltp.pruned_at >= 0) & ~out.ltp.kept_mask
    assert gone.any()
    assert bool((out.start_logits[gone] < -1e30).all()) and bool((out.end_logits[gone] < -1e30).all())
    assert bool((out.start_logits[out.ltp.kept_mask] > -1e30).all())


def test_vit_base_model_keeps_its_output():
    """ViTModel's replaced forward still applies the final LayerNorm and the pooler."""
    family = FAMILIES["vit"]
    model = family.model("base")
    inputs, _ = family.batch(3)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    out = _run(model, inputs)
    assert type(out) is transformers.modeling_outputs.BaseModelOutputWithPooling
    assert out.ltp.relative_flops < 1
    assert torch.allclose(out.pooler_output, model.pooler(out.last_hidden_state))


def test_supported_classes_list_every_family():
    classes = ltprune.supported_classes()
    for family in FAMILIES.values():
        for suffix in family.heads.values():
            assert family.prefix + suffix in classes
            assert hasattr(transformers, family.prefix + suffix)  # from_pretrained looks it up there
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)
    with pytest.raises(ltprune.UnsupportedModelError, match="DistilBertModel.*ElectraModel.*ViTModel"):
        ltprune.patch(transformers.GPT2Model(config))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_training_step(name, mode):
    """Training runs through the adapter (dropout on): soft trains the thresholds, hard removes."""
    family = FAMILIES[name]
    inputs, mask = _inputs(family)
    training_step(family.model(), inputs, mask, mode)
