"""Knowledge distillation into the (quantized) LTP student, paper §4.6.

The teacher is the unpruned full-precision model; the student is the LTP model (usually
quantization-aware, see :mod:`ltprune.quantization`). The objective is a convex combination::

    loss = (1 - alpha) * task + alpha * (KD_logits + MSE_embeddings)
    KD_logits = T^2 * KL(softmax(teacher / T) || softmax(student / T))    (Hinton et al., 2015)

``task`` is the student's ``outputs.loss``, which in the soft stage already holds
``lambda * L_reg``; it is scaled by ``1 - alpha`` with the rest of the "original loss", so the
effective regularizer weight is ``(1 - alpha) * lambda``. ``MSE_embeddings`` matches the outputs
of the embedding layers (``model.base_model.embeddings``), captured with forward hooks, over
real (non-padding) tokens. For regression heads (one output) the logit term is an MSE.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from .checkpoint import from_pretrained
from .errors import CheckpointError, ConfigError, LTPError, read_json
from .names import CONFIG_KEY, QA_SUFFIX
from .quantization import _record_ranges, baked_state_dict, has_fake_quant_weights, quantize_model
from .trainer import LTPTrainer

log = logging.getLogger("ltprune")

LABEL_KEYS = ("labels", "start_positions", "end_positions")


def check_distill_args(alpha: float, temperature: float) -> None:
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"distillation alpha must lie in [0, 1], got {alpha!r}")
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature!r}")


def kd_logits_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                   regression: bool = False) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), batch mean; the T^2 keeps the gradient scale independent
    of T. Regression: MSE between the outputs."""
    if student.shape != teacher.shape:
        raise LTPError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ: "
                       "the teacher must have the same head")
    teacher = teacher.detach().to(student.dtype)
    if regression:
        return F.mse_loss(student, teacher)
    t = temperature
    log_student = F.log_softmax(student.reshape(-1, student.shape[-1]) / t, dim=-1)
    p_teacher = F.softmax(teacher.reshape(-1, teacher.shape[-1]) / t, dim=-1)
    return F.kl_div(log_student, p_teacher, reduction="batchmean") * t * t


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference of the embedding outputs over real tokens (padding excluded)."""
    if student.shape != teacher.shape:
        raise LTPError(f"student embeddings {tuple(student.shape)} and teacher embeddings {tuple(teacher.shape)} "
                       "differ: the teacher must have the same architecture")
    sq = (student - teacher.detach().to(student.dtype)) ** 2
    if mask is None or mask.shape != sq.shape[:2]:
        return sq.mean()
    m = mask.to(sq.dtype)[..., None]
    return (sq * m).sum() / (m.sum() * sq.shape[-1]).clamp_min(1)


def distillation_loss(task_loss: torch.Tensor, student_logits, teacher_logits, student_emb=None, teacher_emb=None,
                      *, alpha: float, temperature: float, mask=None, regression: bool = False):
    """(loss, parts): the convex combination of the module docstring. ``*_logits`` may be a
    tensor or a tuple of tensors (QA: start, end; their KD terms are averaged)."""
    s = student_logits if isinstance(student_logits, (tuple, list)) else (student_logits,)
    t = teacher_logits if isinstance(teacher_logits, (tuple, list)) else (teacher_logits,)
    kd = sum(kd_logits_loss(a, b, temperature, regression) for a, b in zip(s, t)) / len(s)
    emb = embedding_mse(student_emb, teacher_emb, mask) if student_emb is not None else kd.new_zeros(())
    loss = (1 - alpha) * task_loss + alpha * (kd + emb)
    return loss, {"task_loss": task_loss.detach(), "kd_logits": kd.detach(), "kd_embeddings": emb.detach()}


def embeddings_module(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", model)
    module = getattr(base, "embeddings", None)
    if not isinstance(module, nn.Module):
        raise LTPError(f"{type(model).__name__} has no base_model.embeddings to distill from")
    return module


@contextmanager
def capture_embeddings(model: nn.Module):
    """Yields a dict whose ``"out"`` is the embedding layer's output of the pass run inside."""
    store = {}

    def hook(module, args, output):
        store["out"] = output[0] if isinstance(output, (tuple, list)) else output

    handle = embeddings_module(model).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _logits(outputs):
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits
    if getattr(outputs, "start_logits", None) is not None:
        return (outputs.start_logits, outputs.end_logits)
    raise LTPError("the model output has no logits to distill")


class QuantAwareTrainer(LTPTrainer):
    """LTPTrainer whose final ``save_model`` writes baked (quantized float) weights.

    Checkpoints written during training keep the latent full-precision weights (the
    parametrization's ``original``), so ``--resume`` continues quantization-aware training
    exactly; the final model, written through ``save_model`` by the caller, is an ordinary
    checkpoint that ``ltprune.from_pretrained`` loads.
    """

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if _internal_call or not has_fake_quant_weights(model):
            return super().save_model(output_dir, _internal_call)
        _record_ranges(model)
        self._save(output_dir or self.args.output_dir, state_dict=baked_state_dict(model))


class DistillTrainer(QuantAwareTrainer):
    """Trains the student on the distillation objective; evaluation reports the task loss only
    (comparable across runs, and no teacher pass)."""

    loss_is_scaled_for_ga = False  # per-batch means: let Trainer divide by the accumulation steps

    def __init__(self, *args, teacher: nn.Module, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        check_distill_args(alpha, temperature)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self._parts: dict[str, float] = {}
        self._parts_n = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        student = self.accelerator.unwrap_model(model)
        with capture_embeddings(student) as s_emb:
            task, outputs = super().compute_loss(model, inputs, return_outputs=True)
        teacher_inputs = {k: v for k, v in inputs.items() if k not in LABEL_KEYS}
        with torch.no_grad(), capture_embeddings(self.teacher) as t_emb:
            teacher_out = self.teacher(**teacher_inputs)
        regression = getattr(student.config, "problem_type", None) == "regression" or (
            getattr(outputs, "logits", None) is not None and outputs.logits.shape[-1] == 1)
        loss, parts = distillation_loss(task, _logits(outputs), _logits(teacher_out), s_emb.get("out"),
                                        t_emb.get("out"), alpha=self.alpha, temperature=self.temperature,
                                        mask=inputs.get("attention_mask"), regression=regression)
        for key, value in parts.items():
            self._parts[key] = self._parts.get(key, 0.0) + float(value)
        self._parts_n += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self._parts_n and "loss" in logs:
            logs.update({k: round(v / self._parts_n, 6) for k, v in self._parts.items()})
            self._parts, self._parts_n = {}, 0
        super().log(logs, start_time)


def _head(class_name: str) -> str:
    for suffix in ("ForSequenceClassification", "ForImageClassification", QA_SUFFIX):
        if class_name.endswith(suffix):
            return suffix
    return "Model"


def load_teacher(path, student: nn.Module | None = None) -> nn.Module:
    """The teacher from a checkpoint folder (or hub name): an ltprune checkpoint runs in ``off``
    mode (exactly the stock model), a plain transformers checkpoint as it is. Eval mode, frozen.
    With ``student``, its head must match the student's."""
    config_file = Path(path) / "config.json"
    raw = read_json(config_file) if config_file.is_file() else {}
    if Path(path).exists() and not raw:
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    if CONFIG_KEY in raw:
        teacher = from_pretrained(path, mode="off")
    else:
        archs = raw.get("architectures") or []
        cls = getattr(transformers, archs[0], None) if archs else None
        if cls is None:
            cls = type(student) if student is not None else transformers.AutoModelForSequenceClassification
        try:
            teacher = cls.from_pretrained(str(path), use_safetensors=True)
        except OSError as exc:
            raise CheckpointError(f"cannot load teacher {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if raw.get("ltp_quantization"):
        log.warning("teacher %s is a quantized checkpoint; the paper distills from the full-precision model", path)
    if student is not None:
        head = _head(type(student).__name__)
        if _head(type(teacher).__name__) != head:
            raise ConfigError(f"teacher {path} is a {type(teacher).__name__}; the student is a "
                              f"{type(student).__name__}: distill from a fine-tuned model with the same kind of head")
        if student.config.num_labels != teacher.config.num_labels:
            raise ConfigError(f"teacher {path} has {teacher.config.num_labels} labels, the student "
                              f"{student.config.num_labels}")
    return teacher.eval().requires_grad_(False)


def prepare_quantized_training(model: nn.Module, args) -> tuple[type | None, dict | None]:
    """Apply ``--quantize*`` to ``model`` (in place) and load the ``--distill-from`` teacher.

    ``args``: anything with the attributes of the ``ltprune train`` quantization options (``ltprune.cli.options.add_quantization_options``) (missing ones count as
    unset). Returns ``(trainer_cls, trainer_kwargs)`` for :func:`ltprune.training.run_stage`,
    ``(None, None)`` when nothing was asked.
    """
    bits = getattr(args, "quantize", None)
    act_bits = getattr(args, "quantize_activations", None)
    teacher_path = getattr(args, "distill_from", None)
    if act_bits is not None and bits is None:
        raise ConfigError("--quantize-activations needs --quantize (weight bits)")
    alpha = getattr(args, "distill_alpha", 0.5)
    temperature = getattr(args, "distill_temperature", 2.0)
    if teacher_path is None and (alpha, temperature) != (0.5, 2.0):
        log.warning("--distill-alpha / --distill-temperature have no effect without --distill-from")
    if bits is None and teacher_path is None:
        return None, None
    if teacher_path is not None:
        check_distill_args(alpha, temperature)
    if bits is not None:
        granularity = getattr(args, "quantize_granularity", "per-channel")
        quantize_model(model, bits, act_bits, per_channel=granularity != "per-tensor")
    if teacher_path is None:
        return QuantAwareTrainer, {}
    teacher = load_teacher(teacher_path, student=model)
    return DistillTrainer, {"teacher": teacher, "alpha": alpha, "temperature": temperature}


__all__ = ["DistillTrainer", "QuantAwareTrainer", "distillation_loss", "kd_logits_loss", "embedding_mse",
           "capture_embeddings", "load_teacher", "check_distill_args", "prepare_quantized_training"]
