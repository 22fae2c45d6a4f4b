"""One-call patching of a stock transformers model, and its checkpoints.

``patch(model, config)`` keeps the user's model object and class: it adds the thresholds as a
parameter of the encoder (so they are trained, saved and loaded with the weights), replaces only
the encoder's ``forward`` with the removal engine, and adds two hooks: one that hands the
engine the 2-D padding mask, one that attaches the pass's records to the output as
``outputs.ltp``. In ``off`` mode the stock encoder forward runs unchanged. The instance's
``save_pretrained`` also writes a model card section (``write_model_card``).
"""

from __future__ import annotations

import json
import math
import threading
import types
import weakref
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from transformers.loss.loss_utils import ForQuestionAnsweringLoss

from .card import CARD_HEADING, _scalars, card_section, write_card  # noqa: F401 (CARD_HEADING re-exported)
from .config import MODES, LTPConfig
from .engine import Capture, LTPRecords, run_encoder
from .errors import CheckpointError, ConfigError, LTPError, UnsupportedModelError
from .models import find_adapter
from .names import CONFIG_KEY, THRESHOLDS, is_qa_class  # noqa: F401 (CONFIG_KEY, THRESHOLDS: re-exported)
from .pruning import add_pruning_terms, init_thresholds

class _LTPState:
    """Per-model bookkeeping (not a Module: nothing here is saved except through the config)."""

    def __init__(self, config, adapter, base, encoder, original_forward):
        self.config = config
        self.adapter = adapter
        self.base = base
        self.encoder = encoder
        self.original_forward = original_forward
        self.dims = adapter.dims(base.config)
        # The last evaluate() result (scalars) and a fingerprint of the model it measured: the
        # model card only claims these metrics while the model is still the one evaluated.
        self.last_eval: dict | None = None
        self.eval_fingerprint = None


# What one forward pass hands from hook to hook (the padding mask, the records, QA labels) lives
# per thread and per model, never on the model: two threads calling one model (a threaded
# server) each see only their own pass.
_PASSES = threading.local()


def _pass(state: _LTPState) -> dict:
    table = getattr(_PASSES, "table", None)
    if table is None:
        table = _PASSES.table = weakref.WeakKeyDictionary()
    return table.setdefault(state, {})


def _state(model) -> _LTPState:
    state = getattr(model, "_ltp", None)
    if state is None:
        raise LTPError("this model is not patched: call ltprune.patch(model, config) first")
    return state


def is_patched(model) -> bool:
    return getattr(model, "_ltp", None) is not None


def patch(model: nn.Module, config: LTPConfig | None = None) -> nn.Module:
    """Turn a loaded transformers model into an LTP model, in place; returns it.

    Patching a patched model updates its config; the thresholds are re-initialised only when
    ``final_threshold`` or ``threshold_shape`` changes (they define their initial schedule). To change how an installed
    model prunes without touching its parameters, use :func:`configure` / :func:`configured`.
    Supported classes: ``ltprune.supported_classes()``.
    """
    if _is_sentence_transformer(model):  # the embedding task's (a layer above): ltprune.patch routes it
        raise UnsupportedModelError("a SentenceTransformer is patched by ltprune.patch (or "
                                    "ltprune.embedding.patch_sentence_transformer), not ltprune.patch.patch")
    config = LTPConfig() if config is None else config
    if not isinstance(config, LTPConfig):
        raise ConfigError(f"config must be an ltprune.LTPConfig, got {type(config).__name__}")
    config = config.replace()  # a private copy, validated
    if is_patched(model):
        state = model._ltp
        _check_lengths(config, state.dims.num_layers)
        if (config.final_threshold, config.threshold_shape) != (state.config.final_threshold,
                                                                state.config.threshold_shape):
            set_thresholds(model, init_thresholds(state.dims.num_layers, config.final_threshold,
                                                  config.threshold_shape))
        return configure(model, config)
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a transformers model, got {type(model).__name__}")
    adapter = find_adapter(model)
    base = adapter.base_model(model)
    encoder = adapter.encoder(base)
    dims = adapter.dims(base.config)
    _check_lengths(config, dims.num_layers)
    param = next(encoder.parameters())
    thresholds = init_thresholds(dims.num_layers, config.final_threshold, config.threshold_shape).to(param.device)
    # Only the soft stage trains the thresholds: in off and hard mode they get no gradient, and a
    # trainable parameter without one breaks plain DDP (find_unused_parameters=False).
    encoder.register_parameter(THRESHOLDS, nn.Parameter(thresholds, requires_grad=config.mode == "soft"))
    state = _LTPState(config, adapter, base, encoder, encoder.forward)
    # The hooks find the state through the module they run on, never through a closure, so
    # that copy.deepcopy(model) runs its own layers with its own config and thresholds.
    for module in {id(m): m for m in (model, base, encoder)}.values():
        object.__setattr__(module, "_ltp", state)
    encoder.forward = types.MethodType(_encoder_forward, encoder)
    base.register_forward_pre_hook(_capture_mask, with_kwargs=True)
    if _is_qa(model):
        model.register_forward_pre_hook(_capture_qa_labels, with_kwargs=True)
    model.register_forward_hook(_attach_records)
    # Methods bound to the instance (no closure): copy.deepcopy rebinds them to the copy.
    model.save_pretrained = types.MethodType(_save_pretrained, model)
    for module in {id(m): m for m in (model, base)}.values():
        if hasattr(module, "_init_weights"):
            module._init_weights = types.MethodType(_init_weights, module)
    model.config.ltp_config = config.to_dict()
    return model


def configure(model: nn.Module, config: LTPConfig | None = None, /, **changes) -> nn.Module:
    """Change how an installed model prunes: ``config`` (default: its current one) with
    ``changes`` (any ``LTPConfig`` field); returns the model. Never touches a parameter: the
    thresholds keep their values even when ``final_threshold`` changes (``reset_thresholds``
    puts them back to that value's schedule). Only ``soft`` mode trains the thresholds."""
    state = _state(model)
    if config is not None and not isinstance(config, LTPConfig):
        raise ConfigError(f"config must be an ltprune.LTPConfig, got {type(config).__name__}")
    config = (state.config if config is None else config).replace(**changes)  # a validated copy
    _check_lengths(config, state.dims.num_layers)
    state.config = config
    get_thresholds(model).requires_grad_(config.mode == "soft")
    # The base model's config (the model's own for a transformers model; the encoder's inside a
    # SentenceTransformer, which has no config of its own to save).
    state.base.config.ltp_config = config.to_dict()
    return model


@contextmanager
def configured(model: nn.Module, **changes):
    """``with configured(model, mode="off"):`` runs the block with ``changes`` and puts the
    model's config back afterwards, whatever the block did to it (like peft's
    ``disable_adapter()``). Parameters are never touched."""
    before = get_config(model)
    trainable = get_thresholds(model).requires_grad
    configure(model, **changes)
    try:
        yield model
    finally:
        configure(model, before)
        get_thresholds(model).requires_grad_(trainable)


def _is_sentence_transformer(model) -> bool:
    """A ``SentenceTransformer`` (by class name: sentence-transformers is an optional extra)."""
    return any(c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
               for c in type(model).__mro__)


def _check_lengths(config: LTPConfig, num_layers: int) -> None:
    for name in ("keep_ratios", "keep_lengths", "capacity", "threshold_shape"):
        values = getattr(config, name)
        if values is not None and len(values) != num_layers:
            raise ConfigError(f"{name} has {len(values)} entries; the model has {num_layers} layers")


def _is_qa(model) -> bool:
    return is_qa_class(type(model).__name__)


def _init_weights(module, target):
    """The class's ``_init_weights``, then the thresholds' initial schedule when ``target`` is the
    encoder holding them: a model built on the meta device, patched, then ``to_empty()`` +
    ``init_weights()`` gets real thresholds, not whatever was in memory."""
    type(module)._init_weights(module, target)
    state = getattr(target, "_ltp", None)
    if state is not None and target is state.encoder:
        with torch.no_grad():
            getattr(target, THRESHOLDS).copy_(init_thresholds(state.dims.num_layers, state.config.final_threshold,
                                                              state.config.threshold_shape))


def _capture_mask(module, args, kwargs):
    state = module._ltp
    mask = kwargs.get("attention_mask")
    position = state.adapter.mask_position
    if mask is None and position is not None and len(args) > position:
        mask = args[position]
    if mask is not None and mask.dim() != 2 and state.config.mode != "off":
        raise LTPError(f"ltprune needs a 2-D (batch, length) padding mask to prune, got an attention_mask of "
                       f"shape {tuple(mask.shape)}; a 4-D mask passes through only in 'off' mode")
    slot = _pass(state)
    slot["mask"] = mask
    slot["records"] = None
    # what the caller asked the base model for, by name or through its config (DeBERTa's base
    # model overrides output_hidden_states when it calls its encoder)
    slot["asked"] = {k: bool(getattr(module.config, k, False) if kwargs.get(k) is None else kwargs[k])
                     for k in ("output_hidden_states", "output_attentions")}


def begin_pass(model, attention_mask) -> None:
    """Hand the engine the padding mask of the next pass, for callers that run ``model.forward``
    directly and so skip the module hooks (sentence-transformers' ``Transformer`` module does)."""
    _capture_mask(model, (), {"attention_mask": attention_mask})


def take_records(model) -> LTPRecords | None:
    """The records of the last pass run by ``model.forward`` directly (see ``begin_pass``)."""
    return _pass(_state(model)).pop("records", None)


def _capture_qa_labels(model, args, kwargs):
    _pass(model._ltp)["qa_labels"] = (kwargs.get("start_positions"), kwargs.get("end_positions"))


def _encoder_forward(encoder, *args, **kwargs):
    state = encoder._ltp
    slot = _pass(state)
    mask = slot.pop("mask", None)
    if state.config.mode == "off":
        out = state.original_forward(*args, **kwargs)
        hidden = out[0]
        plain = mask if mask is not None and mask.dim() == 2 else None
        slot["records"] = _unpruned_records(state, _mask_or_all(plain, hidden))
        return out

    capture = Capture(*state.adapter.wanted_outputs(encoder, kwargs, slot.pop("asked", {})))

    def run(hidden_states):
        hidden, slot["records"] = run_encoder(
            state.adapter, state.adapter.layers(state.base), state.dims, state.config,
            getattr(encoder, THRESHOLDS), hidden_states,
            _mask_or_all(mask, hidden_states).to(hidden_states.device), encoder.training, capture, state.base)
        return hidden

    out = state.adapter.encoder_forward(encoder, run, *args, **kwargs)
    if capture.any:
        state.adapter.deliver_outputs(capture, out)
    return out


def _mask_or_all(mask, hidden_states):
    """The captured padding mask, or every position alive when the caller gave none."""
    if mask is None:
        return torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
    return mask


def _unpruned_records(state: _LTPState, mask: torch.Tensor) -> LTPRecords:
    mask = mask.to(torch.bool)
    lengths = mask.sum(1)
    layers = state.dims.num_layers
    counts = lengths[:, None].expand(-1, layers).clone()
    return LTPRecords(lengths, counts, counts.clone(), torch.where(mask, layers, -1), state.dims.hidden,
                      state.dims.intermediate, windows=state.dims.windows, position_keys=state.dims.position_keys)


def _attach_records(model, args, output):
    state = model._ltp
    slot = _pass(state)
    records = slot.pop("records", None)
    qa_labels = slot.pop("qa_labels", (None, None))
    if records is None or isinstance(output, tuple):
        return output  # return_dict=False: a plain tuple has no room for the records
    output.ltp = records  # an attribute, not a dict key: tuples and Trainer are unaffected
    cfg = state.config
    if _is_qa(model) and cfg.mode != "off":
        _mask_qa_logits(model, output, records, qa_labels)
    if cfg.add_reg_to_loss and getattr(output, "loss", None) is not None:
        output.loss = add_pruning_terms(output.loss, records, cfg)
    return output


def _mask_qa_logits(model, output, records, labels) -> None:
    """Padding is never an answer boundary and never enters the QA loss (a padded batch scores as
    its examples do unpadded; the stock loss lets padding slots compete in the softmax). In
    evaluation a pruned token cannot be a boundary either (METHOD §2, drop and restore)."""
    gone = records.pruned_at < 0
    if not model.training:
        gone = gone | ~records.kept_mask
    for name in ("start_logits", "end_logits"):
        logits = getattr(output, name, None)
        if logits is not None:
            setattr(output, name, logits.masked_fill(gone.to(logits.device), torch.finfo(logits.dtype).min))
    if getattr(output, "loss", None) is not None and labels[0] is not None and labels[1] is not None:
        output.loss = ForQuestionAnsweringLoss(output.start_logits, output.end_logits, *labels)


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch between ``off`` (the stock model), ``soft`` and ``hard``; returns the model."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return configure(model, mode=mode)


def get_config(model: nn.Module) -> LTPConfig:
    return _state(model).config


def get_dims(model: nn.Module):
    """Layers, heads, hidden and FFN sizes of a patched model (for FLOPs accounting)."""
    return _state(model).dims


def get_thresholds(model: nn.Module) -> torch.Tensor:
    """The per-layer thresholds theta_l (a view of the trainable parameter)."""
    return getattr(_state(model).encoder, THRESHOLDS)


def set_thresholds(model: nn.Module, values) -> None:
    param = get_thresholds(model)
    values = torch.as_tensor(values, dtype=param.dtype).flatten()
    _validate_thresholds(values, param.numel(), "given thresholds", ConfigError)
    with torch.no_grad():
        param.copy_(values.to(param.device))


def reset_thresholds(model: nn.Module) -> None:
    """Thresholds back to their initial schedule: ``final_threshold`` on the linear ramp (or on
    ``threshold_shape``)."""
    state = _state(model)
    set_thresholds(model, init_thresholds(state.dims.num_layers, state.config.final_threshold,
                                          state.config.threshold_shape))


def _validate_thresholds(values, num_layers: int, where: str, error=CheckpointError) -> None:
    if values.numel() != num_layers:
        raise error(f"{where}: {values.numel()} thresholds for a model with {num_layers} layers")
    if not bool(torch.isfinite(values).all()):
        raise error(f"{where}: thresholds contain NaN or infinity: {values.tolist()}")


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _save_pretrained(model, save_directory, *args, **kwargs):
    """The class's ``save_pretrained``, then the LTP section of ``README.md`` (main process only)."""
    result = type(model).save_pretrained(model, save_directory, *args, **kwargs)
    # (the stock method only logs and returns when given a file path: nothing to add a card to)
    if kwargs.get("is_main_process", args[0] if args else True) and Path(save_directory).is_dir():
        write_model_card(model, save_directory)
    return result


def _fingerprint(model) -> tuple:
    """Config, thresholds and a weight checksum: enough to tell that training changed the model."""
    with torch.no_grad():
        total = torch.stack([p.detach().sum(dtype=torch.float64).cpu() for p in model.parameters()]).sum()
    return (json.dumps(get_config(model).to_dict(), sort_keys=True),
            tuple(get_thresholds(model).detach().cpu().tolist()), float(total))


def record_eval(model, result: dict) -> None:
    """Remember the scalar metrics of an evaluation (``evaluate`` calls this) for the model card."""
    state = _state(model)
    state.last_eval = _scalars(result)
    state.eval_fingerprint = _fingerprint(model)


def current_eval(model) -> dict | None:
    """``last_eval`` if the model is still the one that was evaluated (else None: it has changed)."""
    state = _state(model)
    if state.last_eval is None or state.eval_fingerprint is None:
        return None
    (cfg, thr, total), (cfg0, thr0, total0) = _fingerprint(model), state.eval_fingerprint
    if cfg != cfg0 or thr != thr0 or not math.isclose(total, total0, rel_tol=1e-9, abs_tol=1e-9):
        return None
    return dict(state.last_eval)


def model_card_section(model, metrics: dict | None = None) -> str:
    """The card's LTP section for ``model`` (see ``ltprune.card``)."""
    return card_section(get_config(model), get_thresholds(model).detach().cpu().tolist(), metrics)


def write_model_card(model, path, metrics: dict | None = None) -> Path:
    """Write or replace the LTP section of ``path/README.md``, keeping everything else in it.

    ``metrics`` default to the last ``evaluate`` of this very model (``model._ltp.last_eval``),
    left out if the model changed since.
    """
    return write_card(path, type(model).__name__, get_config(model), get_thresholds(model).detach().cpu().tolist(),
                      current_eval(model) if metrics is None else metrics)
