"""Correct for every caller: what transformers' own model tests exercise and the core tests did not.

Left padding, several threads on one model, gradient checkpointing, meta-device init, the QA loss
on padded batches, the thresholds' gradient flag, 4-D masks, per-layer outputs and torch.export.
Each test failed before its fix (ltprune 0.1 as landed).
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import transformers

import ltprune

from conftest import random_batch, tiny_config, tiny_model

LENGTHS = [9, 4, 13, 2, 7]


def _run(model, **inputs):
    with torch.no_grad():
        return model(**inputs)


def _left_padded(ids, mask, pad_id):
    """The same rows, padding moved to the left."""
    width = ids.shape[1]
    left_ids, left_mask = torch.full_like(ids, pad_id), torch.zeros_like(mask)
    for row, n in enumerate(mask.sum(1).tolist()):
        left_ids[row, width - n:] = ids[row, :n]
        left_mask[row, width - n:] = 1
    return left_ids, left_mask


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("final", [0.0, 0.02])
def test_left_padding_gives_what_each_input_gives_unpadded(family, layout, final):
    model = tiny_model(family, initializer_range=0.2)  # inputs that give visibly different logits
    ids, mask = random_batch(LENGTHS, family=family)
    left_ids, left_mask = _left_padded(ids, mask, 1 if family == "roberta" else 0)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, layout=layout))
    # positions count real tokens (RoBERTa does so itself; BERT numbers slots unless told)
    count = torch.cumsum(left_mask, 1) * left_mask
    pos = count + 1 if family == "roberta" else (count - 1).clamp_min(0)
    left = _run(model, input_ids=left_ids, attention_mask=left_mask, position_ids=pos).logits
    for row, n in enumerate(LENGTHS):
        alone = _run(model, input_ids=ids[row:row + 1, :n], attention_mask=mask[row:row + 1, :n]).logits
        assert (left[row] - alone[0]).abs().max() <= 1e-5, row
    # the rows differ (before the fix every left-padded row gave the same constant logits)
    assert (left[0] - left[1]).abs().max() > 1e-4


def test_one_model_called_from_two_threads():
    model = tiny_model("bert")
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.02))
    batches = [random_batch(lengths, seed=i) for i, lengths in enumerate(([9, 4, 13], [3, 11], [6, 6, 2, 8]))]
    expected = [_run(model, input_ids=i, attention_mask=m) for i, m in batches]
    wrong = []

    def worker(k):
        ids, mask = batches[k]
        for _ in range(150):
            out = _run(model, input_ids=ids, attention_mask=mask)
            if (out.logits.shape != expected[k].logits.shape
                    or (out.logits - expected[k].logits).abs().max() > 1e-6
                    or not torch.equal(out.ltp.pruned_at, expected[k].ltp.pruned_at)):
                wrong.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} of 450 calls got another thread's mask or records"


def _grads_and_saved(model, ids, mask, labels):
    """Gradients of every parameter and the number of elements autograd saved for the backward."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, sum(saved)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_gradient_checkpointing_is_honoured(mode):
    model = tiny_model("bert", num_hidden_layers=4).train()
    ltprune.patch(model, ltprune.LTPConfig(mode=mode, final_threshold=0.02, lambda_=0.3))
    ids, mask = random_batch([24, 17, 30, 9], seed=1)
    labels = torch.tensor([0, 1, 2, 0])
    plain, plain_saved = _grads_and_saved(model, ids, mask, labels)
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    checked, checked_saved = _grads_and_saved(model, ids, mask, labels)
    assert set(plain) == set(checked)
    for name in plain:  # the same gradients (dropout replayed with the same random state) ...
        assert torch.allclose(plain[name], checked[name], atol=1e-6), name
    assert checked_saved < 0.6 * plain_saved  # ... for far fewer saved activations


def test_meta_device_init_sets_the_thresholds():
    config = tiny_config("bert", num_labels=2)
    with torch.device("meta"):
        model = transformers.BertForSequenceClassification(config)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.03))
    model.to_empty(device="cpu")
    with torch.no_grad():
        ltprune.get_thresholds(model).fill_(1234.5)  # what uninitialised memory may hold
    model.init_weights()
    assert torch.allclose(ltprune.get_thresholds(model), torch.tensor([0.0, 0.015, 0.03]))
    ids, mask = random_batch(LENGTHS)
    out = _run(model.eval(), input_ids=ids, attention_mask=mask)
    assert 0 < out.ltp.relative_flops < 1  # real thresholds prune (garbage ones removed all)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_qa_loss_on_a_padded_batch_is_the_unpadded_loss(family):
    model = tiny_model(family, "qa")
    stock = copy.deepcopy(model)
    ids, mask = random_batch(LENGTHS, family=family)
    starts, ends = torch.tensor([1, 2, 5, 0, 3]), torch.tensor([3, 2, 9, 1, 6])
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0))
    out = _run(model, input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    alone = [_run(stock, input_ids=ids[r:r + 1, :n], attention_mask=mask[r:r + 1, :n],
                  start_positions=starts[r:r + 1], end_positions=ends[r:r + 1]).loss for r, n in enumerate(LENGTHS)]
    assert out.loss.item() == pytest.approx(torch.stack(alone).mean().item(), abs=1e-5)
    pad = ~mask.bool()
    assert bool((out.start_logits[pad] < -1e30).all()) and bool((out.end_logits[pad] < -1e30).all())
    # real positions are the stock model's logits (nothing is pruned at thresholds 0)
    ref = _run(stock, input_ids=ids, attention_mask=mask)
    assert (out.start_logits[~pad] - ref.start_logits[~pad]).abs().max() <= 1e-5


def test_thresholds_train_only_in_the_soft_stage():
    model = tiny_model("bert").train()
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    ids, mask = random_batch(LENGTHS)
    model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2, 0, 1])).loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable), \
        [n for n, p in trainable if p.grad is None]  # what plain DDP needs
    for mode, trains in (("soft", True), ("hard", False), ("off", False)):
        assert ltprune.get_thresholds(ltprune.set_mode(model, mode)).requires_grad is trains


def test_off_mode_passes_a_4d_mask_through():
    model = tiny_model("bert")
    ids, mask = random_batch(LENGTHS)
    bias = torch.zeros(len(LENGTHS), 1, ids.shape[1], ids.shape[1])
    bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)
    stock = _run(model, input_ids=ids, attention_mask=bias).logits
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    assert torch.equal(_run(model, input_ids=ids, attention_mask=bias).logits, stock)
    ltprune.set_mode(model, "hard")
    with pytest.raises(ltprune.LTPError, match="2-D .*padding mask.*'off' mode"):
        _run(model, input_ids=ids, attention_mask=bias)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_per_layer_outputs_in_hard_mode(layout):
    model = tiny_model("bert")
    model.set_attn_implementation("eager")  # the stock model returns probabilities only in eager
    ids, mask = random_batch(LENGTHS)
    stock = _run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0, layout=layout))
    ours = _run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    real = mask.bool()
    assert len(ours.hidden_states) == len(stock.hidden_states) == 4
    assert len(ours.attentions) == len(stock.attentions) == 3
    for a, b in zip(ours.hidden_states, stock.hidden_states):
        assert (a[real] - b[real]).abs().max() <= 1e-5
    both = real[:, None, :, None] & real[:, None, None, :]
    for a, b in zip(ours.attentions, stock.attentions):
        assert a.shape == b.shape and (a - b).abs().masked_fill(~both, 0).max() <= 1e-5
    # with pruning: a removed token holds the state it had when removed, and gets no attention
    ltprune.set_thresholds(model, [0.0, 0.012, 0.02])
    out = _run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    pruned_at = out.ltp.pruned_at
    assert bool(((pruned_at >= 0) & (pruned_at < 3)).any())
    for layer in range(3):
        gone = (pruned_at >= 0) & (pruned_at < layer)
        assert torch.equal(out.hidden_states[layer + 1][gone], out.hidden_states[layer][gone])
        assert bool((out.attentions[layer].sum(dim=(1, 2))[gone] == 0).all())
    final = _run(model, input_ids=ids, attention_mask=mask)
    assert (out.logits - final.logits).abs().max() <= 1e-5 and torch.equal(final.ltp.pruned_at, pruned_at)


def test_per_layer_outputs_of_vit_and_distilbert():
    vit_config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                        num_attention_heads=4, intermediate_size=48, num_labels=3)
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(vit_config).eval()
    vit.set_attn_implementation("eager")
    pixels = torch.randn(2, 3, 32, 32)
    stock = _run(vit, pixel_values=pixels, output_hidden_states=True, output_attentions=True)
    ltprune.patch(vit, ltprune.LTPConfig(final_threshold=0.0))
    ours = _run(vit, pixel_values=pixels, output_hidden_states=True, output_attentions=True)
    assert len(ours.hidden_states) == 4 and len(ours.attentions) == 3
    for a, b in zip(ours.hidden_states + ours.attentions, stock.hidden_states + stock.attentions):
        assert (a - b).abs().max() <= 1e-5

    config = transformers.DistilBertConfig(vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=48)
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(config).eval()
    ids, mask = random_batch(LENGTHS)
    stock = _run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True)
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0))
    ours = _run(model, input_ids=ids, attention_mask=mask, output_hidden_states=True)
    real = mask.bool()
    assert len(ours.hidden_states) == len(stock.hidden_states) == 4
    for a, b in zip(ours.hidden_states, stock.hidden_states):
        assert (a[real] - b[real]).abs().max() <= 1e-5


def test_torch_export_of_a_pruning_model_says_why_it_cannot():
    model = tiny_model("bert")
    ids, mask = random_batch([6, 4])
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask})  # off mode exports
    ltprune.set_mode(model, "hard")
    with pytest.raises(ltprune.LTPError, match="torch.export.*'off' mode"):
        torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask})


def test_install_script_stops_on_a_failed_pip_install(tmp_path):
    """scripts/install.sh with a stand-in python whose `pip install torch==...` fails."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "install.sh").write_text((root / "scripts" / "install.sh").read_text())
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\ncase "$*" in *torch==*) echo "ERROR: No matching distribution found for torch" >&2; '
                    'exit 1;; esac\nexit 0\n')
    fake.chmod(0o755)
    run = subprocess.run(["bash", "scripts/install.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "No matching distribution found for torch" in run.stderr and "failed" in run.stderr
