"""LTPConfig and StageArgs: how a model prunes (saved in its checkpoint) and how a stage trains.

No torch import here: the CLI builds and checks both before any heavy library is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import ConfigError

MODES = ("off", "soft", "hard")
LAYOUTS = ("packed", "padded")
NORMALIZATIONS = ("reference", "length")
SOFT_MASKS = ("original", "cumulative")
METHODS = ("threshold", "topk", "length")
PACKED_ATTENTION = ("auto", "loop", "pad")
STEPS = ("auto", "exact", "static")
SCORE_KERNELS = ("auto", "explicit", "lse")


@dataclass
class LTPConfig:
    """How a patched model prunes tokens (METHOD.md §1-3).

    ``method`` picks how a layer decides what to keep: ``threshold`` is LTP (and the manual
    threshold baseline); ``topk`` keeps a fraction of the input per layer (SpAtten); ``length``
    keeps an absolute number of tokens per layer (LAT). All share the same scores, removal engine
    and FLOPs accounting, so comparisons between them are fair.
    """

    final_threshold: float = 0.01
    # The initial thresholds' shape over the layers, as relative weights (scaled so the largest
    # is final_threshold): None is METHOD §3's linear ramp, 0 at the first layer. On long inputs
    # the ramp spends the budget by emptying the last layers; (1, 0, ..., 0) starts LTP from one
    # pruning step after the first layer instead (docs/DECISIONS.md). The soft stage learns from it.
    threshold_shape: list[float] | None = None
    temperature: float = 1e-3
    lambda_: float = 0.1
    # A FLOPs budget for the soft stage (relative FLOPs, e.g. 0.5 for 2x fewer): the soft stage's
    # loss gets lambda_flops * (expected relative FLOPs - target)^2, computed from the soft masks
    # with flops.py's formula (pruning.expected_tokens), and ``training.train`` calibrates the
    # thresholds to it on training data before the hard stage (calibration.py). None: no target.
    target_flops: float | None = None
    lambda_flops: float = 10.0
    score_normalization: str = "reference"
    n_ref: int = 128
    keep_first_token: bool = True
    mode: str = "hard"
    layout: str = "packed"
    # How the packed layout runs attention: "loop" (one call per sequence, no padding at all),
    # "pad" (one padded call for attention only), "auto" (pad on GPU, loop on CPU).
    packed_attention: str = "auto"
    # How a hard-mode layer removes tokens (packed layout): "exact" (buffers sized to the kept
    # tokens; each removal reads a count back to the host), "static" (buffers of a planned
    # capacity, no host read inside a layer, one overflow check per forward with an exact rerun
    # if it overflowed), "auto" (static on CUDA, exact on CPU, where host reads cost nothing).
    step: str = "auto"
    # Rows each layer keeps room for after its pruning in the static step, as fractions of the
    # padded batch (B * n), one per layer (layers that prune nothing ignore theirs); None: 1.0
    # (never overflows, saves nothing in the dense layers). ``ltprune.plan_capacity`` measures them.
    capacity: list[float] | None = None
    # How the scores are computed: "explicit" probabilities, "lse" (two fused attention calls,
    # probabilities never written out), "auto" (by the alive length; see attention.py).
    score_kernel: str = "auto"
    soft_mask: str = "original"
    method: str = "threshold"
    keep_ratios: list[float] | None = None
    keep_lengths: list[int] | None = None
    # In soft mode with labels, add lambda * L_reg to ``outputs.loss`` so that a stock
    # ``Trainer`` optimises the LTP objective without a custom loss.
    add_reg_to_loss: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        for name in ("final_threshold", "temperature", "lambda_", "lambda_flops"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and math.isfinite(value),
                  f"{name} must be a finite number, got {value!r}")
        check(self.final_threshold >= 0, f"final_threshold must be >= 0, got {self.final_threshold}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(self.lambda_ >= 0, f"lambda_ must be >= 0, got {self.lambda_}")
        check(self.lambda_flops >= 0, f"lambda_flops must be >= 0, got {self.lambda_flops}")
        if self.target_flops is not None:
            check(isinstance(self.target_flops, (int, float)) and 0 < self.target_flops <= 1,
                  f"target_flops must lie in (0, 1] (relative FLOPs; 0.5 = 2x fewer), got {self.target_flops!r}")
            self.target_flops = float(self.target_flops)
        check(isinstance(self.n_ref, int) and self.n_ref > 0, f"n_ref must be a positive int, got {self.n_ref!r}")
        for name, allowed in (("mode", MODES), ("layout", LAYOUTS),
                              ("score_normalization", NORMALIZATIONS), ("soft_mask", SOFT_MASKS),
                              ("method", METHODS), ("packed_attention", PACKED_ATTENTION),
                              ("step", STEPS), ("score_kernel", SCORE_KERNELS)):
            check(getattr(self, name) in allowed,
                  f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.method == "topk":
            check(bool(self.keep_ratios), "method='topk' needs keep_ratios (one per layer)")
            check(all(0 <= r <= 1 for r in self.keep_ratios), "keep_ratios must lie in [0, 1]")
        if self.threshold_shape is not None:
            shape = self.threshold_shape
            check(isinstance(shape, (list, tuple)) and len(shape) > 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in shape) and any(v > 0 for v in shape),
                f"threshold_shape must be a list of numbers >= 0, one per layer, not all 0; got {shape!r}")
            self.threshold_shape = [float(v) for v in shape]
        if self.capacity is not None:
            check(isinstance(self.capacity, (list, tuple)) and all(
                isinstance(c, (int, float)) and 0 < c <= 1 for c in self.capacity),
                f"capacity must be a list of fractions in (0, 1], got {self.capacity!r}")
            self.capacity = [float(c) for c in self.capacity]
        if self.method == "length":
            check(bool(self.keep_lengths), "method='length' needs keep_lengths (one per layer)")
            check(all(int(k) >= 1 for k in self.keep_lengths), "keep_lengths must be >= 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LTPConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown LTP config keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "LTPConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class StageArgs:
    """Hyperparameters of one stage (paper A.1 defaults: lr 2e-5, batch 64 in the original)."""

    learning_rate: float = 2e-5
    threshold_lr: float | None = None  # None: the model's learning rate (METHOD §3)
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup: float = 0.0  # steps, or a fraction of all steps when < 1
    save_steps: int | None = None  # None: save (and evaluate) once per epoch
    logging_steps: int = 50
    seed: int = 42
    max_eval_examples_during_training: int | None = None

    def __post_init__(self) -> None:
        self.validate()  # like LTPConfig: nonsense fails where it is written, not after data loading

    def validate(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.threshold_lr is not None and not self.threshold_lr > 0:
            raise ConfigError(f"threshold learning rate must be > 0, got {self.threshold_lr}")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_size} (eval {self.eval_batch_size})")
        if self.save_steps is not None and self.save_steps < 1:
            raise ConfigError(f"save_steps must be >= 1 (or None: once per epoch), got {self.save_steps}")
        if self.logging_steps < 1:
            raise ConfigError(f"logging_steps must be >= 1, got {self.logging_steps}")
