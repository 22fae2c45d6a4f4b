"""Removal engine: runs an encoder's layers on the tokens that are still alive.

Two batch layouts hold the alive tokens (METHOD §6):

* ``packed``: every alive token of the batch in one (T, D) matrix, so the dense layers (Q/K/V,
  output projection, FFN: most of the FLOPs) never touch padding; attention runs per sequence.
* ``padded``: (B, n, D) re-padded to the batch's longest survivor after each removal; simple,
  and the natural form for batch 1.

Both (and the static form of ``packed`` for CUDA graphs) live in ``layouts.py`` and expose the
same small interface (flat per-token views, ``attention``, ``remove``), so the layer loop in
:func:`run_encoder` is written once. A removed token leaves the computation for
good; its last state (the input of the layer that removed it) is scattered back at the end, so
``last_hidden_state`` keeps the input's shape ("drop and restore", for token-level heads).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import pruning
from . import flops as flops_mod
from .config import LTPConfig
from .errors import LTPError
from .layouts import Packed, Padded, Sink, Static, plan_capacities
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
        state = Static.from_input(hidden_states, mask, rooms)
    else:
        # attention probabilities are recorded from the padded layout (same numbers, known positions)
        layout = "padded" if capture.attentions else config.layout
        state = (Packed if layout == "packed" else Padded).from_input(hidden_states, mask)
        if layout == "packed":
            auto = config.packed_attention == "auto" and hidden_states.is_cuda
            state.pad_attention = config.packed_attention == "pad" or auto
    tokens_in = torch.zeros(batch, num_layers, dtype=torch.long, device=mask.device)
    tokens_kept = torch.zeros_like(tokens_in)
    sink = Sink(hidden_states, mask, num_layers)
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


def _scatter_probs(probs: torch.Tensor, state: "Padded", batch: int, n: int) -> torch.Tensor:
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
    state = Padded.from_input(hidden_states, mask)
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
