"""Attention over the alive tokens, returning the importance scores' raw column sums with it.

A pruning layer needs, for every key j, ``sum_h sum_{i alive} P_h[i, j]`` (METHOD §1). Two ways:

* ``explicit``: softmax(QK^T) materialised, summed, then multiplied by V. Cheapest for short
  sequences (the (n, n) tensor is small), and the only way that is differentiable in the scores
  (the soft stage) or that applies dropout to the probabilities (training).
* ``lse`` (the "two-call" identity, FASTPATH.md §2): one fused attention that also returns its
  log-sum-exp per query, lse_i = log sum_j exp(s q_i.k_j); then a second fused call with the
  roles swapped and -lse_i added to the logits, whose log-sum-exp per key j is
  log sum_i exp(s q_i.k_j - lse_i) = log sum_i P_ij. The probabilities are never written out;
  dead queries get -inf and drop out. Pays for long sequences (the cost is one more fused call).

Tensors are (B, H, n, d); ``alive`` is (B, n) and marks the tokens that are both queries and keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import pruning

#: Alive length from which the two-call scores beat explicit probabilities on the CPU (measured for
#: one sequence, 12 heads of 32 and of 64 dims: explicit wins to 192, the two trade places with the
#: head size from 256 to 384, the two-call wins by 20-35% at 512;
#: docs/BENCHMARKS.md, "Score kernels"); ``score_kernel="auto"`` picks by it.
LSE_FROM_LENGTH_CPU = 448
#: On CUDA the two-call scores let attention stay padding-free and fused (varlen kernels have no
#: probabilities to give): used at every length. Not yet measured against explicit on a GPU
#: (scripts/gpu_check.sh compares them).
LSE_FROM_LENGTH_CUDA = 0


def choose_kernel(setting: str, length: int, device: torch.device, masked: bool = False) -> str:
    """``explicit`` or ``lse`` for attention over sequences of at most ``length`` tokens.

    ``setting`` is ``LTPConfig.score_kernel``. ``"auto"`` on the CPU: explicit below
    :data:`LSE_FROM_LENGTH_CPU`, and explicit whenever the fused call would need a key mask
    (padded layouts), which makes the CPU flash kernel about twice as slow; on CUDA: the two-call
    identity (varlen kernels have no probabilities to give)."""
    if setting in ("explicit", "lse"):
        return setting
    if device.type == "cuda":
        return "lse" if length >= LSE_FROM_LENGTH_CUDA else "explicit"
    return "lse" if length >= LSE_FROM_LENGTH_CPU and not masked else "explicit"


def _key_bias(alive: torch.Tensor | None, dtype) -> torch.Tensor | None:
    if alive is None:
        return None
    return torch.zeros(alive.shape, dtype=dtype, device=alive.device).masked_fill(
        ~alive, float("-inf"))[:, None, None, :]


def positional_bias(positions_of_layer, q, k, positions, alive=None):
    """Additive logits (B, H or 1, n, n) for a layer's :class:`~ltprune.models.base.LayerPositions`,
    or None. ``positions`` (B, n) are original positions; ``alive`` (B, n) marks the real queries:
    the window is applied to them only, so a dead slot's row never has every key masked (its
    probabilities would be NaN, and NaN * 0 still poisons the column sums)."""
    lp = positions_of_layer
    bias = None if lp.bias is None else lp.bias(q, k, positions)
    if lp.window is not None:
        far = (positions[:, :, None] - positions[:, None, :]).abs() > lp.window
        if alive is not None:
            far = far & alive[:, :, None]
        window = torch.zeros(far.shape, dtype=q.dtype, device=q.device).masked_fill(far, float("-inf"))[:, None]
        bias = window if bias is None else bias + window
    return bias


def explicit(q, k, v, alive=None, key_bias=None, dropout_p: float = 0.0, keep_probs: bool = False, bias=None):
    """(context, raw scores (B, n)[, probabilities]) with the probabilities materialised.

    ``bias``: additive logits broadcastable to (B, H, n, n) (positions: a window, DeBERTa's terms)."""
    logits = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if bias is not None:
        logits = logits + bias
    if alive is not None:
        logits = logits + _key_bias(alive, logits.dtype)
    if key_bias is not None:
        logits = logits + key_bias[:, None, None, :].to(logits.dtype)
    probs = logits.softmax(-1)
    raw = pruning.importance_scores(probs, alive)
    dropped = F.dropout(probs, dropout_p, training=True) if dropout_p > 0 else probs
    ctx = torch.matmul(dropped, v)
    return (ctx, raw, probs) if keep_probs else (ctx, raw)


def per_sequence(q, k, v, sizes, kernel: str | None, dropout_p: float = 0.0, bias_for=None):
    """Attention of packed rows, one call per sequence: (context (H, T, d), raw scores (T,) or None).

    ``q``, ``k``, ``v`` are (H, T, d), contiguous: every sequence's slice is then a plain strided
    batch for bmm (splitting the (T, H, d) view instead copied each slice). Short sequences make
    this loop cheaper than one padded call on the CPU (docs/BENCHMARKS.md). ``bias_for(i, qi, ki)``:
    additive logits (H or 1, n_i, n_i) of sequence i, or None (position-dependent attention).
    """
    scale = q.shape[-1] ** -0.5
    ctxs, raws = [], []
    for index, (qi, ki, vi) in enumerate(zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1))):
        bias = None if bias_for is None else bias_for(index, qi, ki)
        chosen = None if kernel is None else choose_kernel(kernel, qi.shape[1], q.device)  # by its own length
        if bias is not None and kernel is None:  # context only, with the bias
            probs = torch.bmm(qi, ki.transpose(1, 2)).mul_(scale).add_(bias).softmax(-1)
            ctxs.append(torch.bmm(F.dropout(probs, dropout_p, training=True) if dropout_p > 0 else probs, vi))
            continue
        if bias is not None:
            chosen = "explicit"  # (the two-call identity has no bias term)
        if chosen == "explicit" or (chosen is not None and dropout_p > 0):
            logits = torch.bmm(qi, ki.transpose(1, 2)).mul_(scale)
            probs = (logits if bias is None else logits.add_(bias)).softmax(-1)
            raws.append(probs.float().sum((0, 1)))
            ctxs.append(torch.bmm(F.dropout(probs, dropout_p, training=True) if dropout_p > 0 else probs, vi))
        elif chosen == "lse":
            ctx, raw = two_call(qi[None], ki[None], vi[None])
            ctxs.append(ctx[0])
            raws.append(raw[0])
        elif q.is_cuda or dropout_p > 0:
            ctxs.append(F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout_p))
        else:  # the CPU's fused kernel costs more than plain bmm-softmax-bmm on one short sequence
            ctxs.append(torch.bmm(torch.bmm(qi, ki.transpose(1, 2)).mul_(scale).softmax(-1), vi))
    return torch.cat(ctxs, 1), (torch.cat(raws) if kernel is not None else None)


def fused_with_lse(q, k, v, bias=None, scale=None):
    """Fused attention that also returns lse (B, H, n): the CPU flash kernel, or CUDA's
    memory-efficient kernel (fp32-capable)."""
    if q.is_cuda:
        out, lse, *_ = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, scale=scale)
        return out, lse[..., : q.shape[-2]].float()
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias,
                                                                          scale=scale)
    return out, lse.float()


def column_sums_from_lse(q, k, v, lse, alive=None):
    """Call 2: raw scores (B, n), sum_h exp(log sum_i P_h[i, j]), from call 1's ``lse``.

    The shift -lse_i rides in one more head dimension (keys' = [q_i, -lse_i / s], queries' =
    [k_j, 1]), not in an attention mask: a masked fused call costs about twice an unmasked one on
    the CPU (docs/BENCHMARKS.md). Dead queries get -inf there and drop out. Run in fp32: an lse
    carried in half precision errs by several percent, enough to flip threshold decisions.
    """
    d = q.shape[-1]
    scale = d ** -0.5
    shift = -lse / scale
    if alive is not None:
        shift = shift.masked_fill(~alive[:, None, :], float("-inf"))  # dead queries do not vote
    width = -(-(d + 1) // 8) * 8 if q.is_cuda else d + 1  # CUDA kernels want multiples of 8
    pad = [q.new_zeros(*q.shape[:-1], width - d - 1, dtype=torch.float32)] if width > d + 1 else []
    keys2 = torch.cat([q.float(), shift[..., None]] + pad, -1)
    queries2 = torch.cat([k.float(), torch.ones_like(shift)[..., None]] + pad, -1)
    _, lse2 = fused_with_lse(queries2, keys2, keys2, scale=scale)  # (any values: only lse2 is used)
    raw = lse2.exp().sum(1)
    return raw if alive is None else raw * alive


def two_call(q, k, v, alive=None):
    """(context, raw scores (B, n)) without materialising the probabilities."""
    ctx, lse = fused_with_lse(q, k, v, _key_bias(alive, q.dtype))
    return ctx, column_sums_from_lse(q, k, v, lse, alive)


def scored(setting: str, q, k, v, alive=None, dropout_p: float = 0.0):
    """(context, raw scores) with the kernel ``setting`` resolves to for these shapes."""
    if dropout_p == 0.0 and choose_kernel(setting, q.shape[-2], q.device, masked=alive is not None) == "lse":
        return two_call(q, k, v, alive)
    return explicit(q, k, v, alive, dropout_p=dropout_p)


def unscored(q, k, v, alive=None, dropout_p: float = 0.0, bias=None):
    """Context only (a layer that prunes nothing needs no scores): the fastest fused kernel."""
    mask = None if alive is None else alive[:, None, None, :]
    if bias is not None:
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


# --------------------------------------------------------------------------------------------
# Padding-free (varlen) attention over packed rows, CUDA only (FASTPATH.md §3)


def varlen_available(t: torch.Tensor) -> bool:
    """Varlen kernels exist for CUDA tensors (they raise NotImplementedError on the CPU)."""
    return t.is_cuda


def _efficient_varlen(q, k, v, cu, max_len, scale, lse: bool):
    """fp32-capable memory-efficient kernel: (out (T, H, dv), lse (S, H, ceil(max/32)*32) or None)."""
    out, logsumexp, *_ = torch.ops.aten._efficient_attention_forward(
        q[None], k[None], v[None], None, cu, cu, max_len, max_len, 0.0, 0, lse, scale=scale)
    return out[0], (logsumexp if lse else None)


def _lse_per_row(logsumexp, cu, seq, rows: int):
    """(S, H, M) per-sequence lse -> (T, H) per packed row (row r is slot r - cu[seq] of seq)."""
    seqs, heads, width = logsumexp.shape
    slot = torch.arange(rows, device=cu.device) - cu[:-1].index_select(0, seq)
    flat = logsumexp.permute(0, 2, 1).reshape(seqs * width, heads)
    return flat.index_select(0, (seq * width + slot).clamp(0, seqs * width - 1))


def varlen(q, k, v, lengths, max_len: int, scored_: bool, seq=None):
    """(context (T, H, d), raw scores (T,) or None) for rows packed sequence after sequence.

    ``lengths`` (B,) on the device, ``max_len`` a static upper bound (so CUDA graphs can capture
    it), ``seq`` (T,) the sequence of each row (rows past the last sequence are ignored). bf16 /
    fp16 use flash ``varlen_attn``, fp32 the memory-efficient kernel. Scores: call 2 of the
    two-call identity in fp32, with -lse_i / s appended to the queries as one more key dimension
    (the head dimension padded to a multiple of 8 for the kernel).
    """
    rows, heads, d = q.shape
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=q.device)
    cu[1:] = torch.cumsum(lengths, 0)
    scale = d ** -0.5
    if q.dtype == torch.float32:
        ctx, logsumexp = _efficient_varlen(q, k, v, cu, max_len, scale, scored_)
        lse_rows = _lse_per_row(logsumexp, cu, seq, rows) if scored_ else None
    else:
        from torch.nn.attention.varlen import AuxRequest, varlen_attn

        if scored_:
            ctx, lse = varlen_attn(q, k, v, cu, cu, max_len, max_len, return_aux=AuxRequest(lse=True))
            lse_rows = lse.transpose(0, 1).float()  # (H, T) -> (T, H)
        else:
            ctx, lse_rows = varlen_attn(q, k, v, cu, cu, max_len, max_len), None
    if not scored_:
        return ctx, None
    width = -(-(d + 1) // 8) * 8
    extra = width - d - 1
    ones = q.new_ones(rows, heads, 1, dtype=torch.float32)
    keys2 = torch.cat([q.float(), (-lse_rows / scale)[..., None], ones.new_zeros(rows, heads, extra)], -1)
    queries2 = torch.cat([k.float(), ones, ones.new_zeros(rows, heads, extra)], -1)
    _, lse2 = _efficient_varlen(queries2, keys2, ones.new_zeros(rows, heads, 8), cu, max_len, scale, True)
    raw = _lse_per_row(lse2, cu, seq, rows).exp().sum(-1)
    return ctx, raw
