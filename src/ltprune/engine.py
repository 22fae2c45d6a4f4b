"""Removal engine: runs an encoder's layers on the tokens that are still alive.

Two batch layouts hold the alive tokens (METHOD §6):

* ``packed``: every alive token of the batch in one (T, D) matrix, so the dense layers (Q/K/V,
  output projection, FFN: most of the FLOPs) never touch padding; attention runs per sequence.
* ``padded``: (B, n, D) re-padded to the batch's longest survivor after each removal; simple,
  and the natural form for batch 1.

Both expose the same small interface (flat per-token views, ``attention``, ``select``) so the
layer loop in :func:`run_encoder` is written once. A removed token leaves the computation for
good; its last state (the input of the layer that removed it) is scattered back at the end, so
``last_hidden_state`` keeps the input's shape ("drop and restore", for token-level heads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import flops as flops_mod
from . import pruning
from .config import LTPConfig
from .errors import LTPError
from .models.base import Dims, FamilyAdapter


@dataclass
class LTPRecords:
    """What one forward pass did, per example. Comes back as ``outputs.ltp``.

    tokens_in[b, l]: tokens alive entering layer l; tokens_kept[b, l]: alive after its pruning
    step; pruned_at[b, i]: the layer that removed token i (num_layers if it survived, -1 for
    padding); reg_loss: L_reg of the soft stage (None otherwise).
    """

    lengths: torch.Tensor
    tokens_in: torch.Tensor
    tokens_kept: torch.Tensor
    pruned_at: torch.Tensor
    hidden: int
    intermediate: int
    reg_loss: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return self.tokens_in.shape[1]

    @property
    def kept_mask(self) -> torch.Tensor:
        """(B, n) True for tokens that survived every layer."""
        return self.pruned_at == self.num_layers

    def macs(self) -> torch.Tensor:
        return flops_mod.example_macs(self.tokens_in, self.tokens_kept, self.hidden, self.intermediate)

    def baseline_macs(self) -> torch.Tensor:
        return flops_mod.baseline_macs(self.lengths, self.num_layers, self.hidden, self.intermediate)

    @property
    def gflops(self) -> torch.Tensor:
        return flops_mod.gflops(self.macs())

    @property
    def baseline_gflops(self) -> torch.Tensor:
        return flops_mod.gflops(self.baseline_macs())

    @property
    def relative_flops(self) -> float:
        """Sum of MACs over the batch / the unpruned model's on the same unpadded inputs."""
        return float(self.macs().sum() / self.baseline_macs().sum())


class _Padded:
    """(B, n, D) layout: alive tokens first in each row, padding after."""

    def __init__(self, x, alive, pos, first):
        self.x, self.alive, self.pos, self.first = x, alive, pos, first

    @classmethod
    def from_input(cls, x, mask):
        batch, n = mask.shape
        pos = torch.arange(batch * n, device=x.device).view(batch, n)
        first = torch.zeros_like(mask)
        first[torch.arange(batch, device=x.device), mask.long().argmax(1)] = True
        return cls(x, mask, pos, first & mask)

    def counts(self):
        return self.alive.sum(1)

    def flat(self):
        batch, n = self.alive.shape
        seq_id = torch.arange(batch, device=self.x.device).repeat_interleave(n)
        return self.alive.flatten(), self.first.flatten(), seq_id

    def attention(self, q, k, v, heads, need_probs, dropout_p, key_bias=None, keep_probs=False):
        """(context, raw scores or None[, probabilities when ``keep_probs``])."""
        batch, n, dim = q.shape
        q, k, v = (t.view(batch, n, heads, -1).transpose(1, 2) for t in (q, k, v))
        everyone = bool(self.alive.all())
        probs = None
        if need_probs or keep_probs:
            logits = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            if not everyone:
                bias = torch.zeros(self.alive.shape, dtype=logits.dtype, device=q.device)
                bias = bias.masked_fill(~self.alive, torch.finfo(logits.dtype).min)
                logits = logits + bias[:, None, None, :]
            if key_bias is not None:
                logits = logits + key_bias[:, None, None, :].to(logits.dtype)
            probs = logits.softmax(-1)
            raw = pruning.importance_scores(probs, None if everyone else self.alive).flatten()
            dropped = F.dropout(probs, dropout_p, training=True) if dropout_p > 0 else probs
            ctx = torch.matmul(dropped, v)
        else:
            mask = None if everyone else self.alive[:, None, None, :]
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            raw = None
        ctx = ctx.transpose(1, 2).reshape(batch, n, dim)
        return (ctx, raw, probs) if keep_probs else (ctx, raw)

    def pruned(self, keep):
        gone = self.alive & ~keep.view_as(self.alive)
        return self.pos[gone], self.x[gone]

    def select(self, keep, *tensors):
        keep = keep.view_as(self.alive)
        if bool((keep == self.alive).all()):
            return self, tensors
        batch, n = keep.shape
        counts = keep.sum(1)
        width = int(counts.max())
        order = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
        index = (order + torch.arange(batch, device=keep.device)[:, None] * n).flatten()

        def take(t):
            return t.reshape(batch * n, *t.shape[2:]).index_select(0, index).view(batch, width, *t.shape[2:])

        alive = torch.arange(width, device=keep.device)[None, :] < counts[:, None]
        state = _Padded(None, alive, take(self.pos), take(self.first) & alive)
        return state, tuple(take(t) for t in tensors)

    def final(self):
        return self.pos[self.alive], self.x[self.alive]


class _Packed:
    """(T, D) layout: the alive tokens of all sequences, sequence after sequence."""

    pad_attention = False  # one padded attention call instead of a loop (config.packed_attention)

    def __init__(self, x, pos, first, seq_id, lengths):
        self.x, self.pos, self.first, self.seq_id, self.lengths = x, pos, first, seq_id, lengths

    @classmethod
    def from_input(cls, x, mask):
        batch, n = mask.shape
        pos = mask.flatten().nonzero().squeeze(1)
        lengths = mask.sum(1)
        starts = torch.cumsum(lengths, 0) - lengths
        first = torch.zeros(pos.numel(), dtype=torch.bool, device=x.device)
        first[starts] = True
        seq_id = torch.div(pos, n, rounding_mode="floor")
        return cls(x.reshape(batch * n, -1).index_select(0, pos), pos, first, seq_id, lengths)

    def counts(self):
        return self.lengths

    def flat(self):
        return torch.ones_like(self.first), self.first, self.seq_id

    def attention(self, q, k, v, heads, need_probs, dropout_p, key_bias=None):
        if self.pad_attention and self.lengths.numel() > 1:
            return self._attention_padded(q, k, v, heads, need_probs, dropout_p)
        total, dim = q.shape
        sizes = self.lengths.tolist()
        splits = [t.view(total, heads, -1).transpose(0, 1).split(sizes, dim=1) for t in (q, k, v)]
        scale = (dim // heads) ** -0.5
        ctxs, raws = [], []
        for qi, ki, vi in zip(*splits):
            if need_probs:
                probs = (torch.matmul(qi, ki.transpose(-1, -2)) * scale).softmax(-1)
                raws.append(probs.float().sum(dim=(0, 1)))
                if dropout_p > 0:
                    probs = F.dropout(probs, dropout_p, training=True)
                ctxs.append(torch.matmul(probs, vi))
            else:
                ctxs.append(F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p))
        ctx = torch.cat(ctxs, dim=1).transpose(0, 1).reshape(total, dim)
        return ctx, (torch.cat(raws) if need_probs else None)

    def _attention_padded(self, q, k, v, heads, need_probs, dropout_p):
        """Attention of a packed batch through one padded call: only attention sees padding."""
        total, dim = q.shape
        batch = self.lengths.numel()
        width = int(self.lengths.max())
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        slot = torch.arange(total, device=q.device) - starts[self.seq_id]
        flat = self.seq_id * width + slot
        alive = torch.arange(width, device=q.device)[None, :] < self.lengths[:, None]
        grid = _Padded(None, alive, None, None)

        def pad(t):
            return t.new_zeros(batch * width, dim).index_copy(0, flat, t).view(batch, width, dim)

        ctx, raw = grid.attention(pad(q), pad(k), pad(v), heads, need_probs, dropout_p)
        ctx = ctx.reshape(batch * width, dim).index_select(0, flat)
        return ctx, (raw.index_select(0, flat) if raw is not None else None)

    def pruned(self, keep):
        gone = (~keep).nonzero().squeeze(1)
        return self.pos.index_select(0, gone), self.x.index_select(0, gone)

    def select(self, keep, *tensors):
        if bool(keep.all()):
            return self, tensors
        index = keep.nonzero().squeeze(1)
        lengths = torch.zeros_like(self.lengths).index_add_(0, self.seq_id, keep.long())
        state = _Packed(None, self.pos.index_select(0, index), self.first.index_select(0, index),
                        self.seq_id.index_select(0, index), lengths)
        state.pad_attention = self.pad_attention
        return state, tuple(t.index_select(0, index) for t in tensors)

    def final(self):
        return self.pos, self.x


@dataclass
class Capture:
    """Per-layer outputs a caller asked for (``output_hidden_states`` / ``output_attentions``).

    ``hidden_states`` get L + 1 entries of shape (B, n, D), as the stock model's: the layer-0
    input, then each layer's output restored to the input's shape (a removed token holds its last
    state, a padding slot its sequence's first token). ``attentions`` get L entries of shape
    (B, H, n, n): each layer's probabilities among its alive tokens, zero for removed tokens and
    padding. Recording costs a full-size copy per layer, so it is only done when asked.
    """

    hidden: bool = False
    attentions: bool = False
    hidden_states: list = field(default_factory=list)
    attention_probs: list = field(default_factory=list)

    @property
    def any(self) -> bool:
        return self.hidden or self.attentions


def checkpointed(layer, fn, *tensors):
    """``fn(*tensors)``, under the layer's own gradient checkpointing when the user enabled it
    (``model.gradient_checkpointing_enable()``): the engine calls the layer's parts directly, so
    the checkpointing wrapper of ``layer.__call__`` would otherwise be bypassed silently."""
    if getattr(layer, "gradient_checkpointing", False) and layer.training and torch.is_grad_enabled():
        return layer._gradient_checkpointing_func(fn, *tensors)
    return fn(*tensors)


def _check_traceable() -> None:
    if torch.compiler.is_exporting():
        raise LTPError("torch.export cannot trace hard or soft pruning yet (each removal decides a "
                       "data-dependent shape); export the model in 'off' mode (ltprune.set_mode(model, 'off'))")


def fill_padding(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padding slots of (B, n, D) states take the state of their sequence's first real token.

    Poolers read position 0 (BERT, RoBERTa, DistilBERT, ELECTRA heads): with left padding that
    slot is padding, and this makes a left-padded input give what it gives unpadded. Token-level
    losses ignore padding, so nothing else reads these slots.
    """
    if bool(mask.all()):
        return out
    first = mask.long().argmax(1)
    firsts = out[torch.arange(out.shape[0], device=out.device), first]
    return torch.where(mask[..., None], out, firsts[:, None, :])


def run_encoder(
    adapter: FamilyAdapter,
    layers,
    dims: Dims,
    config: LTPConfig,
    thresholds: torch.Tensor,
    hidden_states: torch.Tensor,
    mask: torch.Tensor,
    training: bool,
    capture: Capture | None = None,
) -> tuple[torch.Tensor, LTPRecords]:
    """Run ``layers`` with pruning; return (B, n, D) restored states and the records."""
    _check_traceable()
    batch, n, dim = hidden_states.shape
    mask = mask.to(torch.bool)
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        raise LTPError("an input in the batch has no tokens (its attention_mask is all zeros)")
    capture = capture or Capture()
    if config.mode == "soft" and training:
        return _run_soft(adapter, layers, dims, config, thresholds, hidden_states, mask, capture)

    num_layers = len(layers)
    # attention probabilities are recorded from the padded layout (same numbers, known positions)
    layout = "padded" if capture.attentions else config.layout
    state = (_Packed if layout == "packed" else _Padded).from_input(hidden_states, mask)
    if layout == "packed":
        auto = config.packed_attention == "auto" and hidden_states.is_cuda
        state.pad_attention = config.packed_attention == "pad" or auto
    tokens_in = torch.zeros(batch, num_layers, dtype=torch.long, device=mask.device)
    tokens_kept = torch.zeros_like(tokens_in)
    pruned_at = torch.full((batch * n,), num_layers, dtype=torch.long, device=mask.device)
    pruned_at[~mask.flatten()] = -1
    saved_pos, saved_x = [], []
    thetas = thresholds.detach().tolist()
    full = hidden_states.reshape(batch * n, dim)
    if capture.hidden:
        capture.hidden_states.append(hidden_states)
    for index, layer in enumerate(layers):
        alive_count = state.counts()
        tokens_in[:, index] = alive_count
        theta = thetas[index] if config.method == "threshold" else None
        prunes = pruning.layer_prunes(config, index, theta)
        x = state.x
        dropout = adapter.attention_dropout(layer) if training else 0.0

        def attend(x, state=state, layer=layer, prunes=prunes, dropout=dropout):
            record = {"keep_probs": True} if capture.attentions else {}  # (then the layout is padded)
            return state.attention(*adapter.qkv(layer, x), dims.num_heads, prunes, dropout, **record)

        outs = checkpointed(layer, attend, x)
        ctx, raw = outs[0], outs[1]
        if capture.attentions:
            capture.attention_probs.append(_scatter_probs(outs[2], state, batch, n))
        if prunes:
            alive, first, seq_id = state.flat()
            scores = pruning.normalize_scores(raw, config, dims.num_heads, alive_count, seq_id)
            keep = pruning.keep_decision(
                scores, alive, first, seq_id, batch, config=config, layer=index,
                threshold=theta, n_input=lengths, n_alive=alive_count)
            pos, gone = state.pruned(keep)
            if pos.numel():
                saved_pos.append(pos)
                saved_x.append(gone)
                pruned_at[pos] = index
                state, (x, ctx) = state.select(keep, x, ctx)
        state.x = checkpointed(
            layer, lambda c, h, layer=layer: adapter.feed_forward(layer, adapter.attention_output(layer, c, h)), ctx, x)
        tokens_kept[:, index] = state.counts()
        if capture.hidden:
            pos, x = state.final()
            full = full.index_copy(0, pos, x)
            capture.hidden_states.append(fill_padding(full.view(batch, n, dim), mask))
    pos, x = state.final()
    out = hidden_states.new_zeros(batch * n, dim).index_copy(
        0, torch.cat(saved_pos + [pos]), torch.cat(saved_x + [x]))
    records = LTPRecords(lengths, tokens_in, tokens_kept, pruned_at.view(batch, n),
                         dims.hidden, dims.intermediate)
    return fill_padding(out.view(batch, n, dim), mask), records


def _scatter_probs(probs: torch.Tensor, state: "_Padded", batch: int, n: int) -> torch.Tensor:
    """(B, H, w, w) probabilities of the padded layout -> (B, H, n, n) in input positions, zero
    for removed tokens and padding (a trash row and column n take the dead slots)."""
    heads, width = probs.shape[1], probs.shape[-1]
    slot = torch.where(state.alive, state.pos % n, n)  # (B, w)
    cols = probs.new_zeros(batch, heads, width, n + 1).scatter_(
        3, slot[:, None, None, :].expand(batch, heads, width, width), probs)
    full = probs.new_zeros(batch, heads, n + 1, n + 1).scatter_(
        2, slot[:, None, :, None].expand(batch, heads, width, n + 1), cols)
    return full[:, :, :n, :n]


def _run_soft(adapter, layers, dims, config, thresholds, hidden_states, mask, capture):
    """Soft stage (METHOD §3): nothing removed; each layer's output is scaled by its soft mask.

    ``original``: m_l scales layer l's output, scores of later layers see every token (as the
    original code). ``cumulative``: M_l = M_(l-1) * m_l scales the output and log M_l is added to
    the keys of later attentions, so a token soft-pruned early fades out as a key as well.
    """
    batch, n, _ = hidden_states.shape
    state = _Padded.from_input(hidden_states, mask)
    lengths = mask.sum(1)
    norm = pruning.score_normalizer(config, dims.num_heads, lengths)
    norm = norm if isinstance(norm, float) else norm[:, None]
    running = torch.ones(batch, n, dtype=hidden_states.dtype, device=mask.device)
    masks = []
    x = hidden_states
    if capture.hidden:
        capture.hidden_states.append(hidden_states)
    for index, layer in enumerate(layers):
        key_bias = None
        if config.soft_mask == "cumulative" and index > 0:
            key_bias = torch.log(running.clamp_min(1e-20))

        def step(x, *bias, layer=layer):
            outs = state.attention(*adapter.qkv(layer, x), dims.num_heads, True,
                                   adapter.attention_dropout(layer), bias[0] if bias else None,
                                   keep_probs=capture.attentions)
            return (adapter.feed_forward(layer, adapter.attention_output(layer, outs[0], x)), *outs[1:])

        outs = checkpointed(layer, step, x, *([] if key_bias is None else [key_bias]))
        out, raw = outs[0], outs[1]
        if capture.attentions:
            capture.attention_probs.append(outs[2])
        scores = raw.view(batch, n) / norm
        m = pruning.soft_mask(scores, thresholds[index], config.temperature)
        if config.keep_first_token:
            m = m.masked_fill(state.first, 1.0)
        m = m * mask
        if config.soft_mask == "cumulative":
            running = running * m
            m = running
        masks.append(m)
        x = out * m[..., None].to(out.dtype)
        if capture.hidden:
            capture.hidden_states.append(fill_padding(x, mask))
    counts = lengths[:, None].expand(batch, len(layers)).clone()
    pruned_at = torch.where(mask, len(layers), -1)
    records = LTPRecords(lengths, counts, counts.clone(), pruned_at, dims.hidden, dims.intermediate,
                         reg_loss=pruning.regularizer(masks, mask, config.n_ref))
    return fill_padding(x, mask), records
