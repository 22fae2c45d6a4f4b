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

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import attention, pruning
from . import flops as flops_mod
from .config import LTPConfig
from .errors import LTPError
from .models.base import Dims, FamilyAdapter


@dataclass
class LTPRecords:
    """What one forward pass did, per example. Comes back as ``outputs.ltp``.

    tokens_in[b, l]: tokens alive entering layer l; tokens_kept[b, l]: alive after its pruning
    step; pruned_at[b, i]: the layer that removed token i (num_layers if it survived, -1 for
    padding); reg_loss: L_reg of the soft stage (None otherwise); expected_relative_flops: the
    soft stage's differentiable FLOPs estimate from its masks (what a FLOPs target steers).
    """

    lengths: torch.Tensor
    tokens_in: torch.Tensor
    tokens_kept: torch.Tensor
    pruned_at: torch.Tensor
    hidden: int
    intermediate: int
    reg_loss: torch.Tensor | None = None
    expected_relative_flops: torch.Tensor | None = None
    #: static step inside a CUDA graph: a device flag, True when the batch must be rerun exactly
    overflow: torch.Tensor | None = None
    #: FLOPs terms of position-dependent families (Dims.windows, Dims.position_keys; flops.py)
    windows: tuple | None = None
    position_keys: int = 0

    @property
    def num_layers(self) -> int:
        return self.tokens_in.shape[1]

    @property
    def kept_mask(self) -> torch.Tensor:
        """(B, n) True for tokens that survived every layer."""
        return self.pruned_at == self.num_layers

    def macs(self) -> torch.Tensor:
        return flops_mod.example_macs(self.tokens_in, self.tokens_kept, self.hidden, self.intermediate,
                                      self.windows, self.position_keys)

    def baseline_macs(self) -> torch.Tensor:
        return flops_mod.baseline_macs(self.lengths, self.num_layers, self.hidden, self.intermediate,
                                       self.windows, self.position_keys)

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


class _Sink:
    """Where removed tokens go: their last state and the layer that removed them, written into
    full-size buffers with one trash row (static shapes: a kept row is routed to the trash)."""

    def __init__(self, hidden_states, mask, num_layers):
        batch, n, dim = hidden_states.shape
        self.trash = batch * n
        self.out = hidden_states.new_zeros(batch * n + 1, dim)
        self.pruned_at = torch.full((batch * n + 1,), num_layers, dtype=torch.long, device=mask.device)
        self.pruned_at[:-1].masked_fill_(~mask.flatten(), -1)

    def drop(self, pos, x, layer):
        """Rows ``x`` at flat positions ``pos`` (trash where not removed) leave at ``layer``."""
        self.out.index_copy_(0, pos, x)
        self.pruned_at.index_fill_(0, pos, layer)

    def finish(self, pos, x, shape):
        self.out.index_copy_(0, pos, x)
        return self.out[:-1].view(shape), self.pruned_at[:-1].view(shape[:2])


class _Padded:
    """(B, w, D) layout: alive tokens first in each row, padding after; w = longest survivor."""

    def __init__(self, x, alive, pos, first):
        self.x, self.alive, self.pos, self.first = x, alive, pos, first

    @classmethod
    def from_input(cls, x, mask):
        batch, n = mask.shape
        pos = torch.arange(batch * n, device=x.device).view(batch, n)
        first = torch.zeros_like(mask)
        first[torch.arange(batch, device=x.device), mask.long().argmax(1)] = True
        return cls(x, mask, pos, first & mask)

    @property
    def width(self) -> int:
        return self.alive.shape[1]

    def counts(self):
        return self.alive.sum(1)

    def flat(self):
        batch, n = self.alive.shape
        seq_id = torch.arange(batch, device=self.x.device).repeat_interleave(n)
        return self.alive.flatten(), self.first.flatten(), seq_id

    def attention(self, q, k, v, heads, kernel, dropout_p, key_bias=None, keep_probs=False, where=None):
        """(context, flat raw scores or None[, probabilities when ``keep_probs``]).

        ``kernel``: None (no scores needed: fused sdpa) or a ``score_kernel`` setting. ``where``:
        (LayerPositions, (B, w) original positions) of a position-dependent layer, or None."""
        batch, n, dim = q.shape
        q, k, v = (t.view(batch, n, heads, -1).transpose(1, 2) for t in (q, k, v))
        alive = None if bool(self.alive.all()) else self.alive
        bias = None if where is None else attention.positional_bias(where[0], q, k, where[1], self.alive)
        probs = raw = None
        if keep_probs or key_bias is not None or (bias is not None and kernel is not None):
            ctx, raw, probs = attention.explicit(q, k, v, alive, key_bias, dropout_p, keep_probs=True, bias=bias)
        elif kernel is not None:
            ctx, raw = attention.scored(kernel, q, k, v, alive, dropout_p)
        else:
            ctx = attention.unscored(q, k, v, alive, dropout_p, bias=bias)
        ctx = ctx.transpose(1, 2).reshape(batch, n, dim)
        raw = None if raw is None else raw.flatten()
        return (ctx, raw, probs) if keep_probs else (ctx, raw)

    def remove(self, keep, sink, layer, x, ctx):
        """Drop the tokens not kept (into ``sink``); returns (state, x, ctx) of the survivors."""
        keep = keep.view_as(self.alive)
        gone = self.alive & ~keep
        sink.drop(self.pos[gone], self.x[gone], layer)
        if not bool(gone.any()):
            return self, x, ctx
        batch, n = keep.shape
        counts = keep.sum(1)
        width = int(counts.max())
        order = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]
        index = (order + torch.arange(batch, device=keep.device)[:, None] * n).flatten()

        def take(t):
            return t.reshape(batch * n, *t.shape[2:]).index_select(0, index).view(batch, width, *t.shape[2:])

        alive = torch.arange(width, device=keep.device)[None, :] < counts[:, None]
        return _Padded(None, alive, take(self.pos), take(self.first) & alive), take(x), take(ctx)

    def final(self):
        return self.pos[self.alive], self.x[self.alive]


class _Packed:
    """(T, D) layout: the alive tokens of all sequences, sequence after sequence."""

    pad_attention = False  # one padded attention call instead of a loop (config.packed_attention)

    def __init__(self, x, pos, first, seq_id, lengths):
        self.x, self.pos, self.first, self.seq_id, self.lengths = x, pos, first, seq_id, lengths
        self._sizes = None

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

    @property
    def sizes(self) -> list[int]:
        if self._sizes is None:
            self._sizes = self.lengths.tolist()
        return self._sizes

    @property
    def width(self) -> int:
        return max(self.sizes)

    def counts(self):
        return self.lengths

    def flat(self):
        return torch.ones_like(self.first), self.first, self.seq_id

    def attention(self, q, k, v, heads, kernel, dropout_p, key_bias=None, where=None):
        if where is not None:  # position-dependent attention: per sequence, with its bias
            total, dim = q.shape
            qh, kh, vh = (t.view(total, heads, -1).transpose(0, 1).contiguous() for t in (q, k, v))
            lp, positions = where[0], where[1].split(self.sizes)

            def bias_for(i, qi, ki):
                return attention.positional_bias(lp, qi[None], ki[None], positions[i][None])[0]

            ctx, raw = attention.per_sequence(qh, kh, vh, self.sizes, kernel, dropout_p, bias_for)
            return ctx.transpose(0, 1).reshape(total, dim), raw
        if attention.varlen_available(q) and kernel != "explicit" and dropout_p == 0 and self.pad_attention:
            total, dim = q.shape
            ctx, raw = attention.varlen(*(t.view(total, heads, -1) for t in (q, k, v)), self.lengths,
                                        self.width, kernel is not None, self.seq_id)
            return ctx.reshape(total, dim), raw
        if self.pad_attention and self.lengths.numel() > 1:
            return self._attention_padded(q, k, v, heads, kernel, dropout_p)
        total, dim = q.shape
        qh, kh, vh = (t.view(total, heads, -1).transpose(0, 1).contiguous() for t in (q, k, v))
        ctx, raw = attention.per_sequence(qh, kh, vh, self.sizes, kernel, dropout_p)
        return ctx.transpose(0, 1).reshape(total, dim), raw

    def _attention_padded(self, q, k, v, heads, kernel, dropout_p):
        """Attention of a packed batch through one padded call: only attention sees padding."""
        total, dim = q.shape
        batch = self.lengths.numel()
        width = self.width
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        slot = torch.arange(total, device=q.device) - starts[self.seq_id]
        flat = self.seq_id * width + slot
        alive = torch.arange(width, device=q.device)[None, :] < self.lengths[:, None]
        grid = _Padded(None, alive, None, None)

        def pad(t):
            return t.new_zeros(batch * width, dim).index_copy(0, flat, t).view(batch, width, dim)

        ctx, raw = grid.attention(pad(q), pad(k), pad(v), heads, kernel, dropout_p)
        ctx = ctx.reshape(batch * width, dim).index_select(0, flat)
        return ctx, (raw.index_select(0, flat) if raw is not None else None)

    def remove(self, keep, sink, layer, x, ctx):
        gone = (~keep).nonzero().squeeze(1)
        if gone.numel() == 0:
            return self, x, ctx
        sink.drop(self.pos.index_select(0, gone), self.x.index_select(0, gone), layer)
        index = keep.nonzero().squeeze(1)
        lengths = torch.zeros_like(self.lengths).index_add_(0, self.seq_id, keep.long())
        state = _Packed(None, self.pos.index_select(0, index), self.first.index_select(0, index),
                        self.seq_id.index_select(0, index), lengths)
        state.pad_attention = self.pad_attention
        return state, x.index_select(0, index), ctx.index_select(0, index)

    def final(self):
        return self.pos, self.x


class _Static:
    """(C, D) rows of a fixed capacity C: the packed layout with shapes that never depend on the data.

    Row r holds a token of sequence ``seq[r]`` from flat input position ``pos[r]`` when
    ``valid[r]``; the other rows are zeros (GEMMs and LayerNorm are row-independent, so they never
    reach a valid row). Removal writes kept rows to their ``cumsum`` destinations in a buffer of the
    next layer's capacity and everything else to a trash row; per-sequence counts are ``index_add``
    sums. Nothing is read back to the host inside a layer: no ``nonzero``, no ``.tolist()``, no
    ``bool(...)``. A kept row that does not fit sets ``overflow``, read once per forward; the
    engine then reruns the batch on the exact path (FASTPATH.md §1).
    """

    def __init__(self, x, pos, seq, valid, first, lengths, width, overflow, capacities):
        self.x, self.pos, self.seq, self.valid, self.first = x, pos, seq, valid, first
        self.lengths, self.width, self.overflow, self.capacities = lengths, width, overflow, capacities

    @classmethod
    def from_input(cls, x, mask, capacities):
        """The real tokens moved to the front, sequence after sequence (capacity B * n)."""
        batch, n = mask.shape
        total = batch * n
        flat = mask.flatten()
        first = torch.zeros_like(flat)
        first[torch.arange(batch, device=x.device) * n + mask.long().argmax(1)] = True
        target = torch.where(flat, torch.cumsum(flat.long(), 0) - 1, total)

        def move(t, fill=0):
            return t.new_full((total + 1, *t.shape[1:]), fill).index_copy_(0, target, t)[:total]

        return cls(move(x.reshape(total, -1)), move(torch.arange(total, device=x.device), total),
                   move(torch.arange(batch, device=x.device).repeat_interleave(n), batch), move(flat),
                   move(first & flat), mask.sum(1), n, torch.zeros((), dtype=torch.bool, device=x.device),
                   list(capacities))

    @property
    def batch(self) -> int:
        return self.lengths.shape[0]

    def counts(self):
        return self.lengths

    def flat(self):
        return self.valid, self.first, self.seq.clamp(max=self.batch - 1)

    def attention(self, q, k, v, heads, kernel, dropout_p, key_bias=None):
        """Attention through a (B, n, D) grid built with static scatters (the sequences' rows are
        contiguous and in order, so a row's slot is its index minus its sequence's start)."""
        rows, dim = q.shape
        batch, n = self.batch, self.width
        seq = self.seq.clamp(max=batch - 1)
        if attention.varlen_available(q) and kernel != "explicit" and dropout_p == 0:
            ctx, raw = attention.varlen(*(t.view(rows, heads, -1) for t in (q, k, v)), self.lengths, n,
                                        kernel is not None, seq)
            ctx = torch.where(self.valid[:, None], ctx.reshape(rows, dim), 0.0)
            return ctx, (None if raw is None else torch.where(self.valid, raw, 0.0))
        trash = batch * n
        starts = torch.cumsum(self.lengths, 0) - self.lengths
        slot = torch.arange(rows, device=q.device) - starts.index_select(0, seq)
        cell = torch.where(self.valid, seq * n + slot, trash)
        alive = torch.arange(n, device=q.device)[None, :] < self.lengths[:, None]

        def grid(t):
            return t.new_zeros(trash + 1, dim).index_copy_(0, cell, t)[:trash].view(batch, n, dim)

        qg, kg, vg = (grid(t).view(batch, n, heads, -1).transpose(1, 2) for t in (q, k, v))
        if kernel is None:
            ctx, raw = attention.unscored(qg, kg, vg, alive, dropout_p), None
        else:
            ctx, raw = attention.scored(kernel, qg, kg, vg, alive, dropout_p)
        back = cell.clamp(max=trash - 1)
        ctx = ctx.transpose(1, 2).reshape(trash, dim).index_select(0, back)
        ctx = torch.where(self.valid[:, None], ctx, 0.0)  # (where, not *: an overflowed row may be NaN)
        if raw is not None:
            raw = torch.where(self.valid, raw.reshape(trash).index_select(0, back), 0.0)
        return ctx, raw

    def remove(self, keep, sink, layer, x, ctx):
        keep = keep & self.valid
        sink.drop(torch.where(self.valid & ~keep, self.pos, sink.trash), self.x, layer)
        room = self.capacities.pop(0)
        dest = torch.cumsum(keep.long(), 0) - 1
        fits = keep & (dest < room)
        overflow = self.overflow | (keep & ~fits).any()
        target = torch.where(fits, dest, room)

        def move(t, fill=0):
            buf = t.new_full((room + 1, *t.shape[1:]), fill)
            return buf.index_copy_(0, target, t)[:room]

        batch = self.batch
        lengths = torch.zeros(batch + 1, dtype=self.lengths.dtype, device=keep.device).index_add_(
            0, torch.where(fits, self.seq, batch), torch.ones_like(self.seq))[:batch]
        state = _Static(None, move(self.pos, sink.trash), move(self.seq, batch), move(fits),
                        move(self.first & fits), lengths, self.width, overflow, self.capacities)
        return state, move(x), move(ctx)

    def final(self):
        return torch.where(self.valid, self.pos, self.batch * self.width), self.x


def plan_capacities(fractions, batch: int, n: int, multiple: int = 8) -> list[int]:
    """Rows kept after each pruning layer: ``fraction * B * n``, rounded up to ``multiple``."""
    total = batch * n
    return [min(total, -(-math.ceil(f * total) // multiple) * multiple) for f in fractions]


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
    batch, n, dim = out.shape  # (no shortcut when nothing is padding: that would read the mask)
    first = torch.arange(batch, device=out.device) * n + mask.long().argmax(1)
    firsts = out.reshape(batch * n, dim).index_select(0, first)
    return torch.where(mask[..., None], out, firsts[:, None, :])


#: How many static-step batches overflowed their planned capacity and were rerun exactly
#: (diagnostics for benchmarks; ``ltprune bench`` reports it).
STATIC_RERUNS = [0]


def host_thresholds(thresholds: torch.Tensor) -> list[float]:
    """The thresholds as Python floats, read back once per change (not once per forward: on a GPU
    each read is a host sync). Keyed on the tensor's version counter, which every in-place update
    (an optimizer step, ``set_thresholds``) bumps."""
    key = (thresholds._version, thresholds.data_ptr())
    cached = getattr(thresholds, "_ltp_host", None)
    if cached is None or cached[0] != key:
        cached = (key, thresholds.detach().tolist())
        thresholds._ltp_host = cached
    return cached[1]


def _use_static(config: LTPConfig, hidden_states: torch.Tensor, capture: Capture, positional: bool) -> bool:
    if config.layout != "packed" or capture.attentions or positional:  # (static: absolute positions only)
        return False
    if config.step == "auto":
        return hidden_states.is_cuda
    return config.step == "static"


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
    base=None,
) -> tuple[torch.Tensor, LTPRecords]:
    """Run ``layers`` with pruning; return (B, n, D) restored states and the records.

    ``base``: the base model, handed to ``adapter.layer_positions`` (position-dependent families)."""
    _check_traceable()
    mask = mask.to(torch.bool)
    lengths = mask.sum(1)
    capture = capture or Capture()
    training_soft = config.mode == "soft" and training
    thetas = host_thresholds(thresholds) if config.method == "threshold" else [None] * len(layers)
    if not training_soft and _use_static(config, hidden_states, capture, adapter.positional):
        out, records, overflow = _run_hard(adapter, layers, dims, config, thresholds, thetas, hidden_states,
                                           mask, lengths, training, capture, static=True, base=base)
        bad = overflow | (lengths == 0).any()  # an empty input is found (and refused) by the exact rerun
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            records.overflow = bad  # a CUDA graph being captured: its runner reads the flag after replay
            return out, records
        if not bool(bad):  # the one host read of the static path
            return out, records
        STATIC_RERUNS[0] += 1
        capture.hidden_states.clear()
    if bool((lengths == 0).any()):
        raise LTPError("an input in the batch has no tokens (its attention_mask is all zeros)")
    if training_soft:
        return _run_soft(adapter, layers, dims, config, thresholds, hidden_states, mask, capture, base)
    out, records, _ = _run_hard(adapter, layers, dims, config, thresholds, thetas, hidden_states, mask,
                                lengths, training, capture, static=False, base=base)
    return out, records


def _where(adapter, base, layer, training, state, n):
    """(LayerPositions, original positions of the state's rows) for a position-dependent layer."""
    if not adapter.positional:
        return None
    lp = adapter.layer_positions(base, layer, training)
    return None if lp is None else (lp, state.pos % n)


def _rotated(where, q, k, v):
    if where is not None and where[0].rotate is not None:
        q, k = where[0].rotate(q, k, where[1])
    return q, k, v


def _run_hard(adapter, layers, dims, config, thresholds, thetas, hidden_states, mask, lengths, training,
              capture, static, base=None):
    """The hard-mode layer loop over one layout; returns (states, records, overflow flag)."""
    batch, n, dim = hidden_states.shape
    num_layers = len(layers)
    if static:
        fractions = config.capacity or [1.0] * num_layers
        rooms = plan_capacities([f for i, f in enumerate(fractions)  # one per pruning layer
                                 if pruning.layer_prunes(config, i, thetas[i])], batch, n)
        state = _Static.from_input(hidden_states, mask, rooms)
    else:
        # attention probabilities are recorded from the padded layout (same numbers, known positions)
        layout = "padded" if capture.attentions else config.layout
        state = (_Packed if layout == "packed" else _Padded).from_input(hidden_states, mask)
        if layout == "packed":
            auto = config.packed_attention == "auto" and hidden_states.is_cuda
            state.pad_attention = config.packed_attention == "pad" or auto
    tokens_in = torch.zeros(batch, num_layers, dtype=torch.long, device=mask.device)
    tokens_kept = torch.zeros_like(tokens_in)
    sink = _Sink(hidden_states, mask, num_layers)
    full = hidden_states.reshape(batch * n, dim)
    if capture.hidden:
        capture.hidden_states.append(hidden_states)
    for index, layer in enumerate(layers):
        alive_count = state.counts()
        tokens_in[:, index] = alive_count
        theta = thetas[index]
        prunes = pruning.layer_prunes(config, index, theta)
        # the score kernel setting; each layout resolves "auto" for its shapes (attention.py)
        kernel = "explicit" if training else config.score_kernel
        x = state.x
        dropout = adapter.attention_dropout(layer) if training else 0.0

        where = _where(adapter, base, layer, training, state, n)

        def attend(x, state=state, layer=layer, kernel=kernel if prunes else None, dropout=dropout, where=where):
            extra = {"keep_probs": True} if capture.attentions else {}  # (then the layout is padded)
            if where is not None and (where[0].bias is not None or where[0].window is not None):
                extra["where"] = where
            return state.attention(*_rotated(where, *adapter.qkv(layer, x)), dims.num_heads, kernel, dropout, **extra)

        outs = checkpointed(layer, attend, x)
        ctx, raw = outs[0], outs[1]
        if capture.attentions:
            capture.attention_probs.append(_scatter_probs(outs[2], state, batch, n))
        if prunes:
            alive, first, seq_id = state.flat()
            scores = pruning.normalize_scores(raw, config, dims.num_heads, alive_count, seq_id)
            keep = pruning.keep_decision(
                scores, alive, first, seq_id, batch, config=config, layer=index,
                threshold=thresholds[index].detach() if config.method == "threshold" else None,
                n_input=lengths, n_alive=alive_count)
            state, x, ctx = state.remove(keep, sink, index, x, ctx)
        state.x = checkpointed(
            layer, lambda c, h, layer=layer: adapter.feed_forward(layer, adapter.attention_output(layer, c, h)), ctx, x)
        tokens_kept[:, index] = state.counts()
        if capture.hidden:
            pos, x = state.final()
            full = torch.cat([full, full.new_zeros(1, dim)]).index_copy(0, pos, x)[:-1] if static \
                else full.index_copy(0, pos, x)
            capture.hidden_states.append(fill_padding(full.view(batch, n, dim), mask))
    pos, x = state.final()
    out, pruned_at = sink.finish(pos, x, (batch, n, dim))
    records = LTPRecords(lengths, tokens_in, tokens_kept, pruned_at, dims.hidden, dims.intermediate,
                         windows=dims.windows, position_keys=dims.position_keys)
    overflow = state.overflow if static else None
    return fill_padding(out, mask), records, overflow


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


def _run_soft(adapter, layers, dims, config, thresholds, hidden_states, mask, capture, base=None):
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

        where = _where(adapter, base, layer, True, state, n)

        def step(x, *bias, layer=layer, where=where):
            extra = {} if where is None or (where[0].bias is None and where[0].window is None) else {"where": where}
            outs = state.attention(*_rotated(where, *adapter.qkv(layer, x)), dims.num_heads, True,
                                   adapter.attention_dropout(layer), bias[0] if bias else None,
                                   keep_probs=capture.attentions, **extra)
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
    entering, kept = pruning.expected_tokens(pruning.survival(masks, config.soft_mask == "cumulative"), mask)
    expected = flops_mod.relative_flops(entering, kept, lengths, dims.hidden, dims.intermediate, dims.windows,
                                        dims.position_keys)
    records = LTPRecords(lengths, counts, counts.clone(), pruned_at, dims.hidden, dims.intermediate,
                         reg_loss=pruning.regularizer(masks, mask, config.n_ref), windows=dims.windows,
                         position_keys=dims.position_keys, expected_relative_flops=expected)
    return fill_padding(x, mask), records
