"""A deliberately plain masked reference for hard pruning, written with the stock HF modules.

Nothing is removed: pruned tokens stay in the tensors, are excluded as keys and queries by the
attention mask, and keep the state they had when pruned. The engine must match it exactly.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def masked_reference(model, ids, mask, thresholds, n_ref=128, keep_first=True, normalization="reference"):
    model.set_attn_implementation("eager")
    base = model.base_model
    x = base.embeddings(input_ids=ids)
    alive = mask.bool().clone()
    heads = base.config.num_attention_heads
    kept_per_layer = []
    for index, layer in enumerate(base.encoder.layer):
        bias = torch.zeros(alive.shape).masked_fill(~alive, torch.finfo(torch.float32).min)[:, None, None, :]
        attn_out, probs = layer.attention(x, attention_mask=bias)
        probs = probs * alive[:, None, :, None]  # only alive queries vote
        norm = heads * (n_ref if normalization == "reference" else alive.sum(1, keepdim=True))
        scores = probs.sum(dim=(1, 2)) / norm
        keep = alive & (scores >= thresholds[index])
        if keep_first:
            keep[:, 0] = True
        out = layer.feed_forward_chunk(attn_out)
        x = torch.where(keep[..., None], out, x)
        alive = keep
        kept_per_layer.append(alive.clone())
    return x, kept_per_layer


def head_logits(model, hidden):
    """Apply a sequence-classification head to final hidden states."""
    if hasattr(model, "bert"):
        return model.classifier(model.bert.pooler(hidden))
    return model.classifier(hidden)


def soft_reference(model, ids, mask, thresholds, temperature, cumulative=False, n_ref=128):
    """The soft stage written out (METHOD §3): masks scale each layer's output; ``cumulative``
    multiplies them into a running product that also biases later keys by log M."""
    model.set_attn_implementation("eager")
    base = model.base_model
    x = base.embeddings(input_ids=ids)
    alive = mask.bool()
    heads = base.config.num_attention_heads
    running = torch.ones(alive.shape)
    masks = []
    for index, layer in enumerate(base.encoder.layer):
        bias = torch.zeros(alive.shape).masked_fill(~alive, torch.finfo(torch.float32).min)
        if cumulative and index > 0:
            bias = bias + torch.log(running.clamp_min(1e-20))
        attn_out, probs = layer.attention(x, attention_mask=bias[:, None, None, :])
        scores = (probs * alive[:, None, :, None]).sum(dim=(1, 2)) / (heads * n_ref)
        m = torch.sigmoid((scores - thresholds[index]) / temperature)
        m = torch.cat([torch.ones_like(m[:, :1]), m[:, 1:]], dim=1) * alive  # the first token is kept
        if cumulative:
            running = running * m
            m = running
        masks.append(m)
        x = layer.feed_forward_chunk(attn_out) * m[..., None]
    reg = sum((m * alive).sum() for m in masks) / (alive.shape[0] * n_ref)
    return x, reg
