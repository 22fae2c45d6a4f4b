"""8-bit LTP (paper §4.6, Fig. 7): quantization-aware weights, BOPs, and real int8 inference on CPU.

* **Training** (:func:`quantize_model`): every ``nn.Linear`` of the encoder and the head (not the
  embeddings: their bit-width does not change inference cost, paper §4.6) gets a
  ``torch.nn.utils.parametrize`` parametrization on ``weight`` that fake-quantizes it with static
  uniform symmetric integer quantization: ``scale = max|w| / (2^(b-1) - 1)``, round to nearest
  (ties to even), clamp to ``±(2^(b-1) - 1)``. The backward pass is a straight-through estimator.
  The modules stay ``nn.Linear`` and are still called by the removal engine, so pruning, packing
  and soft masks are unaffected. **Granularity**: per output channel by default (one scale per
  row: the usual choice for int8 weights, noticeably more accurate than one scale per matrix on
  small models, and what the int8 CPU kernels support at no extra cost); ``per_channel=False``
  gives one scale per tensor.
* Optional activation quantization (off by default): the input of each such Linear is
  fake-quantized symmetrically with a range tracked as an EMA of ``max|x|`` during training.
* :func:`bake` removes the parametrizations, leaving the quantized float weights, so that
  ``save_pretrained`` writes ordinary safetensors that :func:`ltprune.from_pretrained` loads; the
  bits are recorded in ``model.config.ltp_quantization``.
* ``ltprune.int8.export_int8`` gives a model whose Linear layers run int8 kernels (PyTorch dynamic
  quantization); ``ltprune.int8.int8_throughput`` times it side by side with the fp32 models.
* :func:`bops_summary`: bit operations = MACs x weight bits x activation bits, against the 16-bit
  unpruned model, as in the paper.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import flops as flops_mod
from .errors import ConfigError, LTPError
from .patch import get_config, is_patched, patch

CONFIG_KEY = "ltp_quantization"
REFERENCE_BITS = 16  # the paper's reference is the FP16 unpruned model
_INPUT_QUANT = "ltp_input_quant"


def qmax(bits: int) -> int:
    """Largest integer level of a symmetric ``bits``-bit grid (127 for 8 bits: -128 is unused,
    so the grid is symmetric and zero is exact)."""
    _check_bits(bits, "bits")
    return 2 ** (bits - 1) - 1


def _check_bits(bits, name: str) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ConfigError(f"{name} must be an integer between 2 and 16, got {bits!r}")


def weight_scale(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """``max|w| / qmax`` per output row (shape (out, 1)) or for the whole tensor (shape ())."""
    w = weight.detach()
    top = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) if per_channel else w.abs().max()
    scale = top / qmax(bits)
    return torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero


def fake_quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Weights rounded to the symmetric integer grid, returned in float.

    Straight-through: the gradient w.r.t. ``weight`` is the identity (every weight lies inside
    the range, which is set by the largest one), and the scale gets none.
    """
    scale = weight_scale(weight, bits, per_channel)
    top = qmax(bits)
    q = torch.clamp(torch.round(weight.detach() / scale), -top, top) * scale
    return weight + (q - weight.detach())


def fake_quantize_activation(x: torch.Tensor, max_abs: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric fake quantization of ``x`` to the range ``±max_abs``; clipped straight-through
    estimator (gradient 1 inside the range, 0 for clipped values)."""
    top = qmax(bits)
    scale = (max_abs.detach().to(x.dtype) / top).clamp_min(torch.finfo(x.dtype).tiny)
    limit = scale * top
    clipped = torch.maximum(torch.minimum(x, limit), -limit)
    q = torch.round(clipped.detach() / scale) * scale
    return clipped + (q - clipped.detach())


class WeightFakeQuant(nn.Module):
    """The parametrization put on each Linear's ``weight`` (recomputed from the latent float
    weight at every access, so the optimizer keeps updating full-precision weights)."""

    def __init__(self, bits: int = 8, per_channel: bool = True):
        super().__init__()
        _check_bits(bits, "weight_bits")
        self.bits = bits
        self.per_channel = per_channel

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_weight(weight, self.bits, self.per_channel)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}"


class ActivationFakeQuant(nn.Module):
    """Fake-quantizes a Linear's input. The range is an EMA of the batch's ``max|x|`` while
    training (a static range at inference, as deployable int8 kernels need); before any
    training batch it falls back to the current batch's maximum."""

    def __init__(self, bits: int = 8, momentum: float = 0.9, max_abs: float | None = None):
        super().__init__()
        _check_bits(bits, "activation_bits")
        self.bits = bits
        self.momentum = momentum
        # not persistent: checkpoints stay ordinary transformers state dicts; the range is kept
        # in the config instead (see bake / restore_quantization)
        self.register_buffer("running_max", torch.tensor(float(max_abs or 0.0)), persistent=False)
        self.calibrated = max_abs is not None
        self.frozen = max_abs is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        learn = self.training and not self.frozen
        if not learn and self.calibrated:
            return fake_quantize_activation(x, self.running_max, self.bits)
        current = x.detach().abs().max().to(self.running_max.dtype)
        if learn:
            with torch.no_grad():
                if self.calibrated:
                    self.running_max.mul_(self.momentum).add_((1 - self.momentum) * current)
                else:
                    self.running_max.copy_(current)
                    self.calibrated = True
        return fake_quantize_activation(x, self.running_max if self.calibrated else current, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, momentum={self.momentum}, frozen={self.frozen}"


def _quantize_input_hook(module, args):
    return (getattr(module, _INPUT_QUANT)(args[0]), *args[1:])


def quantizable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` of the model except those inside the embedding module."""
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    skip = {id(m) for m in embeddings.modules()} if isinstance(embeddings, nn.Module) else set()
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and id(m) not in skip]


def quantize_model(model: nn.Module, weight_bits: int = 8, activation_bits: int | None = None, *,
                   per_channel: bool = True, momentum: float = 0.9) -> nn.Module:
    """Make ``model`` quantization-aware, in place; returns it.

    Weights of every Linear outside the embeddings are fake-quantized to ``weight_bits``;
    with ``activation_bits`` their inputs too. Calling it again replaces the previous setting.
    """
    _check_bits(weight_bits, "weight_bits")
    if activation_bits is not None:
        _check_bits(activation_bits, "activation_bits")
    remove_quantization(model)
    linears = quantizable_linears(model)
    if not linears:
        raise LTPError(f"{type(model).__name__} has no Linear layers outside its embeddings to quantize")
    for _, linear in linears:
        parametrize.register_parametrization(linear, "weight", WeightFakeQuant(weight_bits, per_channel))
        if activation_bits is not None:
            _add_input_quant(linear, ActivationFakeQuant(activation_bits, momentum))
    model.config.ltp_quantization = {"weight_bits": weight_bits, "activation_bits": activation_bits,
                                     "granularity": "per_channel" if per_channel else "per_tensor",
                                     "scheme": "symmetric", "layers": len(linears)}
    return model


def _add_input_quant(linear: nn.Linear, quantizer: ActivationFakeQuant) -> None:
    linear.add_module(_INPUT_QUANT, quantizer)
    linear._ltp_input_hook = linear.register_forward_pre_hook(_quantize_input_hook)


def _remove_input_quant(linear: nn.Module) -> None:
    handle = linear.__dict__.pop("_ltp_input_hook", None)
    if handle is not None:
        handle.remove()
    if _INPUT_QUANT in linear._modules:
        del linear._modules[_INPUT_QUANT]


def has_fake_quant_weights(model: nn.Module) -> bool:
    """Whether some Linear still carries the training-time weight parametrization."""
    return any(_weight_quantizer(m) is not None for m in model.modules())


def _weight_quantizer(module: nn.Module) -> WeightFakeQuant | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations.weight if isinstance(p, WeightFakeQuant)]
    return found[0] if found else None


def quantization_info(model: nn.Module) -> dict | None:
    """The recorded ``config.ltp_quantization`` (None for a full-precision model)."""
    info = getattr(model.config, CONFIG_KEY, None)
    return dict(info) if info else None


def model_bits(model: nn.Module) -> tuple[int, int]:
    """(weight bits, activation bits) for BOPs; unquantized parts count as 16-bit, the paper's
    FP16 reference."""
    info = quantization_info(model) or {}
    return info.get("weight_bits") or REFERENCE_BITS, info.get("activation_bits") or REFERENCE_BITS


def activation_ranges(model: nn.Module) -> dict[str, float]:
    """{linear name: range} of the calibrated activation quantizers."""
    return {name[: -len(_INPUT_QUANT) - 1]: float(m.running_max) for name, m in model.named_modules()
            if isinstance(m, ActivationFakeQuant) and m.calibrated}


def _record_ranges(model: nn.Module) -> None:
    info = quantization_info(model)
    if info is not None and info.get("activation_bits"):
        info["activation_ranges"] = activation_ranges(model)
        model.config.ltp_quantization = info


def baked_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as :func:`bake` would leave it (quantized ``weight`` keys), computed without
    touching the model: what a mid-training save of the final model needs."""
    out = {}
    prefixes = {}
    for name, module in model.named_modules():
        quantizer = _weight_quantizer(module)
        if quantizer is not None:
            prefixes[f"{name}." if name else ""] = (module, quantizer)
    for key, value in model.state_dict().items():
        head, sep, tail = key.partition("parametrizations.weight.original")
        if sep and not tail and head in prefixes:
            module, quantizer = prefixes[head]
            with torch.no_grad():
                out[head + "weight"] = quantizer(module.parametrizations.weight.original).detach().clone()
        else:
            out[key] = value
    return out


def bake(model: nn.Module) -> nn.Module:
    """Replace each fake-quantized weight by its quantized value and drop the parametrization,
    in place; returns the model. Activation quantizers stay (they hold no saved state; their
    ranges go into ``config.ltp_quantization['activation_ranges']`` for
    :func:`restore_quantization`)."""
    _record_ranges(model)
    for module in list(model.modules()):
        if _weight_quantizer(module) is not None:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def remove_quantization(model: nn.Module) -> nn.Module:
    """Undo :func:`quantize_model` keeping the latent full-precision weights (no baking)."""
    for module in list(model.modules()):
        if _weight_quantizer(module) is not None:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        _remove_input_quant(module)
    return model


def restore_quantization(model: nn.Module) -> nn.Module:
    """After loading a baked checkpoint: put back the activation quantizers with their saved
    (frozen) ranges, so the model computes what it computed when it was saved. Weights need
    nothing: they were saved quantized."""
    info = quantization_info(model) or {}
    bits, ranges = info.get("activation_bits"), info.get("activation_ranges") or {}
    if bits:
        modules = dict(model.named_modules())
        for name, value in ranges.items():
            if name in modules:
                _remove_input_quant(modules[name])
                _add_input_quant(modules[name], ActivationFakeQuant(bits, max_abs=value))
    return model


def _construct(cls, config) -> nn.Module:
    """``cls(config)`` without consuming the caller's random numbers (its weights are
    overwritten right after: a copy must not change what a seeded run does next)."""
    with torch.random.fork_rng(devices=[]):
        return cls(config)


def baked_copy(model: nn.Module) -> nn.Module:
    """A separate, baked copy of a (patched) model, without activation quantizers or weight
    parametrizations: the class constructed afresh (patched like ``model``) and loaded with the
    baked state dict, so the copy holds plain quantized weights whatever ``model`` carries."""
    config = copy.deepcopy(model.config)
    param = next(model.parameters())
    clone = _construct(type(model), config)
    if is_patched(model):
        patch(clone, get_config(model))
    clone.load_state_dict(baked_state_dict(model), strict=True)
    return clone.to(device=param.device, dtype=param.dtype).train(model.training)


# ---------------------------------------------------------------------------------------------
# bit operations


def bops_summary(eval_result: dict, weight_bits: int | None, activation_bits: int | None) -> dict:
    """BOPs per example (mean) of an :func:`ltprune.evaluation.evaluate` result, the 16-bit
    unpruned model's on the same inputs, and their ratio (paper Fig. 7).

    ``None`` bits count as 16 (a full-precision part runs in FP16 in the paper's reference).
    ``eval_result`` needs ``gflops`` and ``baseline_gflops`` (means per example).
    """
    wb = REFERENCE_BITS if weight_bits is None else weight_bits
    ab = REFERENCE_BITS if activation_bits is None else activation_bits
    _check_bits(wb, "weight_bits")
    _check_bits(ab, "activation_bits")
    macs = float(eval_result["gflops"]) * 1e9 / 2
    base_macs = float(eval_result["baseline_gflops"]) * 1e9 / 2
    bops = float(flops_mod.bops(macs, wb, ab))
    baseline = float(flops_mod.bops(base_macs, REFERENCE_BITS, REFERENCE_BITS))
    return {"bops": bops, "baseline_bops": baseline, "relative_bops": bops / baseline if baseline else float("nan"),
            "weight_bits": wb, "activation_bits": ab}


def bops_for(model: nn.Module, eval_result: dict) -> dict:
    """:func:`bops_summary` with the bits recorded in the model ({} for a full-precision model)."""
    if quantization_info(model) is None:
        return {}
    return bops_summary(eval_result, *model_bits(model))


__all__ = ["quantize_model", "bake", "remove_quantization", "restore_quantization", "baked_state_dict",
           "baked_copy", "bops_summary",
           "bops_for", "model_bits", "quantization_info", "has_fake_quant_weights", "fake_quantize_weight",
           "fake_quantize_activation", "weight_scale", "qmax", "quantizable_linears", "WeightFakeQuant",
           "ActivationFakeQuant"]
