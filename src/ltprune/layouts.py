"""The batch layouts of the removal engine (METHOD §6): where the alive tokens sit between layers.

* :class:`Packed`: every alive token of the batch in one (T, D) matrix, so the dense layers
  (Q/K/V, output projection, FFN: most of the FLOPs) never touch padding; attention runs per
  sequence (or through one padded call, ``config.packed_attention``).
* :class:`Padded`: (B, w, D) re-padded to the batch's longest survivor after each removal;
  simple, and the natural form for batch 1 (and the soft stage's, which removes nothing).
* :class:`Static`: the packed layout with shapes fixed in advance (CUDA graphs; FASTPATH.md).

Each exposes the same small interface, so the layer loop of ``engine.run_encoder`` is written
once: ``counts()`` (alive tokens per sequence), ``flat()`` (per-row alive / first-token /
sequence views for the pruning decision), ``attention(q, k, v, ...)`` -> (context, raw scores),
``remove(keep, sink, layer, x, ctx)`` -> the survivors' (state, x, ctx), and ``final()``.
A removed token goes to the :class:`Sink` with its last state and the layer that removed it.
"""

from __future__ import annotations

import math

import torch

from . import attention


class Sink:
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


class Padded:
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
        return Padded(None, alive, take(self.pos), take(self.first) & alive), take(x), take(ctx)

    def final(self):
        return self.pos[self.alive], self.x[self.alive]


class Packed:
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
        grid = Padded(None, alive, None, None)

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
        state = Packed(None, self.pos.index_select(0, index), self.first.index_select(0, index),
                        self.seq_id.index_select(0, index), lengths)
        state.pad_attention = self.pad_attention
        return state, x.index_select(0, index), ctx.index_select(0, index)

    def final(self):
        return self.pos, self.x


class Static:
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
        state = Static(None, move(self.pos, sink.trash), move(self.seq, batch), move(fits),
                        move(self.first & fits), lengths, self.width, overflow, self.capacities)
        return state, move(x), move(ctx)

    def final(self):
        return torch.where(self.valid, self.pos, self.batch * self.width), self.x


def plan_capacities(fractions, batch: int, n: int, multiple: int = 8) -> list[int]:
    """Rows kept after each pruning layer: ``fraction * B * n``, rounded up to ``multiple``."""
    total = batch * n
    return [min(total, -(-math.ceil(f * total) // multiple) * multiple) for f in fractions]
