"""One-call patching of a stock transformers model, and its checkpoints.

``patch(model, config)`` keeps the user's model object and class: it adds the thresholds as a
parameter of the encoder (so they are trained, saved and loaded with the weights), replaces only
the encoder's ``forward`` with the removal engine, and adds two hooks: one that hands the
engine the 2-D padding mask, one that attaches the pass's records to the output as
``outputs.ltp``. In ``off`` mode the stock encoder forward runs unchanged.
"""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

import torch
from torch import nn

from .config import MODES, LTPConfig
from .engine import LTPRecords, run_encoder
from .errors import CheckpointError, ConfigError, LTPError, UnsupportedModelError
from .models import find_adapter, supported_classes
from .pruning import init_thresholds

THRESHOLDS = "ltp_thresholds"
CONFIG_KEY = "ltp_config"


class _LTPState:
    """Per-model bookkeeping (not a Module: nothing here is saved except through the config)."""

    def __init__(self, config, adapter, base, encoder, original_forward):
        self.config = config
        self.adapter = adapter
        self.base = base
        self.encoder = encoder
        self.original_forward = original_forward
        self.dims = adapter.dims(base.config)
        self.mask = None
        self.records: LTPRecords | None = None


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
    ``final_threshold`` changes (it defines their initial schedule). Supported classes:
    ``ltprune.supported_classes()``.
    """
    config = LTPConfig() if config is None else config
    if not isinstance(config, LTPConfig):
        raise ConfigError(f"config must be an ltprune.LTPConfig, got {type(config).__name__}")
    config = config.replace()  # a private copy, validated
    if is_patched(model):
        state = model._ltp
        _check_lengths(config, state.dims.num_layers)
        if config.final_threshold != state.config.final_threshold:
            set_thresholds(model, init_thresholds(state.dims.num_layers, config.final_threshold))
        state.config = config
        model.config.ltp_config = config.to_dict()
        return model
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a transformers model, got {type(model).__name__}")
    adapter = find_adapter(model)
    base = adapter.base_model(model)
    encoder = adapter.encoder(base)
    dims = adapter.dims(base.config)
    _check_lengths(config, dims.num_layers)
    param = next(encoder.parameters())
    thresholds = init_thresholds(dims.num_layers, config.final_threshold).to(param.device)
    encoder.register_parameter(THRESHOLDS, nn.Parameter(thresholds))
    state = _LTPState(config, adapter, base, encoder, encoder.forward)
    # The hooks find the state through the module they run on, never through a closure, so
    # that copy.deepcopy(model) runs its own layers with its own config and thresholds.
    for module in {id(m): m for m in (model, base, encoder)}.values():
        object.__setattr__(module, "_ltp", state)
    encoder.forward = types.MethodType(_encoder_forward, encoder)
    base.register_forward_pre_hook(_capture_mask, with_kwargs=True)
    model.register_forward_hook(_attach_records)
    model.config.ltp_config = config.to_dict()
    return model


def _check_lengths(config: LTPConfig, num_layers: int) -> None:
    for name in ("keep_ratios", "keep_lengths"):
        values = getattr(config, name)
        if values is not None and len(values) != num_layers:
            raise ConfigError(f"{name} has {len(values)} entries; the model has {num_layers} layers")


def _capture_mask(module, args, kwargs):
    state = module._ltp
    mask = kwargs.get("attention_mask")
    position = state.adapter.mask_position
    if mask is None and position is not None and len(args) > position:
        mask = args[position]
    if mask is not None and mask.dim() != 2:
        raise LTPError(f"ltprune needs a 2-D (batch, length) attention_mask, got shape {tuple(mask.shape)}")
    state.mask = mask
    state.records = None


def _encoder_forward(encoder, *args, **kwargs):
    state = encoder._ltp
    mask, state.mask = state.mask, None
    if state.config.mode == "off":
        out = state.original_forward(*args, **kwargs)
        state.records = _unpruned_records(state, _mask_or_all(mask, out[0]))
        return out

    def run(hidden_states):
        hidden, state.records = run_encoder(
            state.adapter, state.adapter.layers(state.base), state.dims, state.config,
            getattr(encoder, THRESHOLDS), hidden_states,
            _mask_or_all(mask, hidden_states).to(hidden_states.device), encoder.training)
        return hidden

    return state.adapter.encoder_forward(encoder, run, *args, **kwargs)


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
    return LTPRecords(lengths, counts, counts.clone(), torch.where(mask, layers, -1),
                      state.dims.hidden, state.dims.intermediate)


def _attach_records(model, args, output):
    state = model._ltp
    records, state.records = state.records, None
    if records is None or isinstance(output, tuple):
        return output  # return_dict=False: a plain tuple has no room for the records
    output.ltp = records  # an attribute, not a dict key: tuples and Trainer are unaffected
    cfg = state.config
    if (cfg.add_reg_to_loss and records.reg_loss is not None and cfg.lambda_ > 0
            and getattr(output, "loss", None) is not None):
        output.loss = output.loss + cfg.lambda_ * records.reg_loss
    if type(model).__name__.endswith("ForQuestionAnswering") and not model.training:
        # A pruned token cannot be an answer boundary (METHOD §2, drop and restore).
        gone = (records.pruned_at >= 0) & ~records.kept_mask
        for name in ("start_logits", "end_logits"):
            logits = getattr(output, name, None)
            if logits is not None:
                setattr(output, name, logits.masked_fill(gone, torch.finfo(logits.dtype).min))
    return output


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """Switch between ``off`` (the stock model), ``soft`` and ``hard``; returns the model."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return patch(model, _state(model).config.replace(mode=mode))


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
    """Thresholds back to the initial linear schedule of the model's ``final_threshold``."""
    state = _state(model)
    set_thresholds(model, init_thresholds(state.dims.num_layers, state.config.final_threshold))


def _validate_thresholds(values, num_layers: int, where: str, error=CheckpointError) -> None:
    if values.numel() != num_layers:
        raise error(f"{where}: {values.numel()} thresholds for a model with {num_layers} layers")
    if not bool(torch.isfinite(values).all()):
        raise error(f"{where}: thresholds contain NaN or infinity: {values.tolist()}")


def from_pretrained(path, *, mode: str | None = None, **overrides) -> nn.Module:
    """Load a checkpoint written by ``model.save_pretrained`` of a patched model.

    The model class recorded in the checkpoint is loaded (weights through safetensors only,
    never remote code), patched with the saved LTP config (``mode`` and other keyword arguments
    override it), and its thresholds restored and validated.
    """
    import transformers

    path = Path(path)
    config_file = path / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json)")
    try:
        raw = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_file}: unreadable JSON ({exc})") from None
    if CONFIG_KEY not in raw:
        raise CheckpointError(
            f"{path}: no LTP config in config.json; for a plain transformers checkpoint use "
            "ltprune.patch(AutoModelFor...from_pretrained(path), LTPConfig())")
    ltp = LTPConfig.from_dict(raw[CONFIG_KEY])
    changes = dict(overrides)
    if mode is not None:
        changes["mode"] = mode
    ltp = ltp.replace(**changes)
    archs = raw.get("architectures") or []
    if not archs or archs[0] not in supported_classes():
        raise UnsupportedModelError(
            f"{path}: architecture {archs[:1]} is not supported; supported: {', '.join(supported_classes())}")
    cls = getattr(transformers, archs[0])
    weights = _weight_files(path)
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the thresholds are an "unexpected" key for the stock class
    try:
        model = cls.from_pretrained(path, use_safetensors=True)
    except Exception as exc:  # corrupt or truncated files surface here from several libraries
        raise CheckpointError(f"{path}: cannot load the weights ({type(exc).__name__}: {exc})") from None
    finally:
        logger.setLevel(level)
    patch(model, ltp)
    set_thresholds_from_files(model, weights)
    if (raw.get("ltp_quantization") or {}).get("activation_bits"):
        from .quantization import restore_quantization

        restore_quantization(model)  # the activation quantizers it was trained with, saved ranges
    return model


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no .safetensors weights (ltprune loads safetensors only)")
    return files


def set_thresholds_from_files(model: nn.Module, files: list[Path]) -> None:
    from safetensors import safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    if key.endswith(THRESHOLDS):
                        values = handle.get_tensor(key)
                        _validate_thresholds(values, get_thresholds(model).numel(), str(file))
                        set_thresholds(model, values)
                        return
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
    raise CheckpointError(f"{files[0].parent}: the checkpoint has no {THRESHOLDS} tensor")
