"""The LAT baseline (Length-Adaptive Transformer, Kim & Cho 2020; METHOD §7).

Two parts:

* **LengthDrop training** (:class:`LengthDropTrainer`, :func:`run_lengthdrop`): every step trains
  the full model on the task loss and three sub-models (the smallest, two random) on the full
  model's detached logits (the "sandwich rule" with in-place distillation), so that *one* set of
  weights works at any per-layer length. Sub-models are expressed as cumulative keep ratios of
  each example's length (``method="topk"``), which is exactly LengthDrop's per-layer retention.
* **Evolutionary search** (:func:`search_length_config`) of ONE absolute per-layer length
  configuration on dev under a FLOPs target, evaluated with ``method="length"``
  (k_l = min(alive, len_l)). One configuration for every input is precisely what the paper argues
  against, so it is the comparison that matters for length robustness.

Lengths follow LAT (the first layer already prunes); rounding follows the engine
(k = max(1, round(ratio * n))) rather than LAT's ceil with a minimum of 2.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import flops as flops_mod
from .. import training
from ..errors import ConfigError, LTPError, read_json
from ..evaluation import evaluate
from ..patch import configure, configured, get_config, get_dims, get_thresholds
from ..runs import write_json_atomic
from ..trainer import LTPTrainer

log = logging.getLogger("ltprune")

STAGE = "lengthdrop"


# --------------------------------------------------------------------------------------------
# LengthDrop
# --------------------------------------------------------------------------------------------


def _check_p(p: float) -> None:
    if not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ConfigError(f"length drop probability must be in [0, 1), got {p!r}")


def smallest_keep_ratios(num_layers: int, length_drop_prob: float = 0.2) -> list[float]:
    """The smallest sub-model: every layer keeps (1 - p) of the previous layer's tokens."""
    _check_p(length_drop_prob)
    return [(1.0 - length_drop_prob) ** (i + 1) for i in range(num_layers)]


def random_keep_ratios(num_layers: int, length_drop_prob: float = 0.2, rng: random.Random | None = None) -> list[float]:
    """A random sub-model: layer l keeps uniform(1 - p, 1) of layer l-1's tokens (cumulative)."""
    _check_p(length_drop_prob)
    rng = rng or random.Random()
    ratios, r = [], 1.0
    for _ in range(num_layers):
        r *= rng.uniform(1.0 - length_drop_prob, 1.0)
        ratios.append(min(1.0, max(0.0, r)))
    return ratios


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy to the teacher's distribution (LAT's in-place distillation); MSE for
    regression heads (one output)."""
    teacher = teacher.detach()
    if student.shape[-1] == 1:
        return F.mse_loss(student.float(), teacher.float())
    return -(teacher.float().softmax(-1) * student.float().log_softmax(-1)).sum(-1).mean()


def lengthdrop_loss(model, inputs: dict, *, length_drop_prob: float = 0.2, num_random: int = 2,
                    rng: random.Random | None = None, target=None):
    """One LengthDrop step's loss: full model on the task loss + each sub-model distilled from it.

    ``model`` is what is called (possibly a DDP wrapper), ``target`` the patched model whose
    config is switched (defaults to ``model``). Its config is restored afterwards, even on error.
    Returns ``(loss, full_model_outputs)``; one backward of the sum gives the same gradients as
    LAT's one backward per sub-model.
    """
    target = model if target is None else target
    if inputs.get("labels") is None:
        raise LTPError("LengthDrop training needs labels in the batch")
    base = get_config(target)
    num_layers = get_thresholds(target).numel()
    rng = rng or random.Random()
    student_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    subs = [smallest_keep_ratios(num_layers, length_drop_prob)]
    subs += [random_keep_ratios(num_layers, length_drop_prob, rng) for _ in range(num_random)]
    with configured(target, mode="off"):
        outputs = model(**inputs)
        loss = outputs.loss
        teacher = outputs.logits.detach()
        for ratios in subs:
            configure(target, base, method="topk", keep_ratios=ratios, keep_lengths=None, mode="hard")
            loss = loss + distillation_loss(model(**student_inputs).logits, teacher)
    return loss, outputs


class LengthDropTrainer(LTPTrainer):
    """Trainer whose training loss is :func:`lengthdrop_loss`; evaluation runs the full model."""

    loss_is_scaled_for_ga = False  # a per-batch mean: let Trainer divide by accumulation steps

    def __init__(self, *args, length_drop_prob: float = 0.2, num_random: int = 2, **kwargs):
        super().__init__(*args, **kwargs)
        _check_p(length_drop_prob)
        self.length_drop_prob = length_drop_prob
        self.num_random = num_random
        self._rng = random.Random(self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = lengthdrop_loss(
            model, inputs, length_drop_prob=self.length_drop_prob, num_random=self.num_random,
            rng=self._rng, target=self.accelerator.unwrap_model(model))
        return (loss, outputs) if return_outputs else loss


def run_lengthdrop(model, tokenizer, train_ds, eval_ds, info, output_dir, args, *,
                   length_drop_prob: float = 0.2, num_random: int = 2, resume: bool = False) -> dict:
    """LengthDrop-train a patched model from its fine-tuned weights; ``output_dir/final`` holds it.

    A ``training.run_stage`` stage with LAT's Trainer: thresholds frozen, the model left (and
    saved) in ``off`` mode, since the search sets its lengths later; best dev checkpoint kept.
    """
    _check_p(length_drop_prob)
    summary = training.run_stage(model, tokenizer, train_ds, eval_ds, info, STAGE, output_dir, args, resume,
                        trainer_cls=LengthDropTrainer,
                        trainer_kwargs=dict(length_drop_prob=length_drop_prob, num_random=num_random))
    summary.update(length_drop_prob=length_drop_prob, num_random=num_random)
    return summary


# --------------------------------------------------------------------------------------------
# Length configurations and their FLOPs
# --------------------------------------------------------------------------------------------


def configure_length(model, keep_lengths):
    """Apply one absolute per-layer length configuration (hard removal); returns the model."""
    return configure(model, method="length", keep_lengths=[int(k) for k in keep_lengths], keep_ratios=None,
                     mode="hard")


def is_valid_length_config(keep_lengths, num_layers: int | None = None, max_length: int | None = None) -> bool:
    """Non-increasing integers >= 1 (a pruned token never returns), one per layer."""
    ks = list(keep_lengths)
    if num_layers is not None and len(ks) != num_layers:
        return False
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        return False
    if max_length is not None and ks[0] > max_length:
        return False
    return all(b <= a for a, b in zip(ks, ks[1:]))


def length_config_tokens(keep_lengths, lengths) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) tokens entering / kept per layer that the engine's ``length`` rule gives each input."""
    current = torch.as_tensor(lengths, dtype=torch.long)
    tokens_in, tokens_kept = [], []
    for k in keep_lengths:
        tokens_in.append(current)
        current = torch.clamp(current, max=max(1, int(k)))
        tokens_kept.append(current)
    return torch.stack(tokens_in, 1), torch.stack(tokens_kept, 1)


def length_config_flops(keep_lengths, lengths, hidden: int, intermediate: int, windows=None,
                        position_keys: int = 0) -> float:
    """Relative FLOPs of a length configuration on inputs of the given lengths (METHOD §5).

    Exact for the engine (k_l = min(alive, len_l)), so the search can reject over-budget
    candidates without running the model. ``windows`` / ``position_keys``: the family's terms
    (``Dims``; flops.py), so that the count matches ``outputs.ltp`` for ModernBERT and DeBERTa.
    """
    tokens_in, tokens_kept = length_config_tokens(keep_lengths, lengths)
    macs = flops_mod.example_macs(tokens_in, tokens_kept, hidden, intermediate, windows, position_keys)
    base = flops_mod.baseline_macs(torch.as_tensor(lengths), len(keep_lengths), hidden, intermediate,
                                   windows, position_keys)
    return float(macs.sum() / base.sum())


def random_length_config(num_layers: int, max_length: int, length_drop_prob: float, rng: random.Random) -> list[int]:
    """LAT's initial-population sampler: layer l keeps an integer in [ceil(len (1 - p)), len]."""
    length, out = max_length, []
    for _ in range(num_layers):
        length = max(1, rng.randint(max(1, math.ceil(length * (1 - length_drop_prob))), length))
        out.append(length)
    return out


def mutate_length_config(parent, max_length: int, mutation_prob: float, rng: random.Random) -> list[int]:
    """LAT's mutation: each layer, with ``mutation_prob``, redrawn between its neighbours' bounds."""
    child: list[int] = []
    last = len(parent) - 1
    for i, k in enumerate(parent):
        if rng.random() < mutation_prob:
            high = max_length if i == 0 else child[i - 1]
            low = 1 if i == last else min(parent[i + 1], high)
            child.append(rng.randint(low, high))
        else:
            child.append(min(k, max_length if i == 0 else child[i - 1]))
    return child


def crossover_length_configs(a, b) -> list[int]:
    """LAT's crossover: the rounded-up mean, which keeps the lengths non-increasing."""
    return [(x + y + 1) // 2 for x, y in zip(a, b)]


# --------------------------------------------------------------------------------------------
# Evolutionary search
# --------------------------------------------------------------------------------------------


def make_length_evaluator(model, dataset, info, pad_id: int, batch_size: int = 64):
    """A function keep_lengths -> dev result (metric, relative_flops, gflops, ...), measured by
    ``ltprune.evaluation.evaluate``; the model's config is restored after each call."""
    def run(keep_lengths) -> dict:
        with configured(model):
            configure_length(model, keep_lengths)
            result = evaluate(model, dataset, info, pad_id, batch_size)
        return {k: v for k, v in result.items() if not k.startswith("_")}

    return run


def _key(config) -> str:
    return ",".join(str(int(k)) for k in config)


def search_length_config(model, eval_ds, info, pad_id: int, flops_target: float, *,
                         population: int = 12, generations: int = 6, children: int | None = None,
                         mutation_prob: float = 0.5, length_drop_prob: float = 0.2, seed: int = 0,
                         state_file=None, evaluate_fn=None, batch_size: int = 64) -> dict:
    """Evolutionary search (LAT) of one per-layer length configuration on ``eval_ds``.

    Fitness is the dev metric; only candidates with relative FLOPs <= ``flops_target`` enter the
    population (over-budget ones are shrunk to fit first, so every evaluation counts). Each
    generation breeds ``children`` (default: ``population``; half mutations, half crossovers of the
    better half) and keeps the best ``population`` of parents and children. After every generation
    the state goes to ``state_file`` (JSON); calling again with the same file resumes from it, and
    the random draws depend only on (seed, generation), so a resumed search equals an uninterrupted
    one. Returns the best candidate: keep_lengths, metric, relative_flops, gflops and search info.
    """
    if not (isinstance(flops_target, (int, float)) and flops_target > 0):
        raise ConfigError(f"FLOPs target must be > 0, got {flops_target!r}")
    if population < 1 or generations < 1:
        raise ConfigError("population and generations must be >= 1")
    if not 0 <= mutation_prob <= 1:
        raise ConfigError(f"mutation probability must be in [0, 1], got {mutation_prob}")
    _check_p(length_drop_prob)
    dims = get_dims(model)
    num_layers = dims.num_layers
    lengths = [len(ids) for ids in eval_ds["input_ids"]]
    max_length = max(lengths)
    children = population if children is None else children
    evaluate_fn = evaluate_fn or make_length_evaluator(model, eval_ds, info, pad_id, batch_size)

    def flops(config) -> float:
        return length_config_flops(config, lengths, dims.hidden, dims.intermediate, dims.windows, dims.position_keys)

    least = flops([1] * num_layers)
    if least > flops_target + 1e-12:
        raise ConfigError(f"FLOPs target {flops_target} is below what any length configuration reaches "
                          f"on this dev set ({least:.4f}: one token per layer)")

    def normalise(config) -> list[int]:
        out = []
        for k in config:
            out.append(max(1, min(int(k), out[-1] if out else max_length)))
        return out

    def repair(config) -> list[int]:
        """Shrink every layer by a common factor, as little as needed to meet the target."""
        config = normalise(config)
        if flops(config) <= flops_target:
            return config
        low, high = 0.0, 1.0  # scale factors: low fits, high does not
        for _ in range(40):
            mid = (low + high) / 2
            if flops([max(1, math.floor(k * mid)) for k in config]) <= flops_target:
                low = mid
            else:
                high = mid
        return [max(1, math.floor(k * low)) for k in config]

    settings = {"flops_target": float(flops_target), "num_layers": num_layers, "max_length": max_length,
                "num_examples": len(lengths)}
    state_path = Path(state_file) if state_file is not None else None
    evaluated: dict[str, dict] = {}
    members: list[str] = []
    history: list[dict] = []
    generation = 0
    resumed_from = None
    if state_path is not None and state_path.is_file():
        saved = read_json(state_path, error=ConfigError, hint="delete it to search afresh")
        mismatch = {k: (saved.get("settings", {}).get(k), v) for k, v in settings.items()
                    if saved.get("settings", {}).get(k) != v}
        if mismatch:
            raise ConfigError(f"{state_path}: saved search is for a different setting {mismatch} "
                              "(saved, now); delete the file or use another one")
        evaluated = {_key(e["keep_lengths"]): e for e in saved["evaluated"]}
        members = [_key(c) for c in saved["population"]]
        history = saved.get("history", [])
        generation = resumed_from = int(saved["generation"])
        log.warning("LAT search: resuming from generation %d in %s", generation, state_path)
    new_evaluations = 0

    def score(config) -> dict:
        nonlocal new_evaluations
        key = _key(config)
        if key not in evaluated:
            result = evaluate_fn(list(config))
            new_evaluations += 1
            evaluated[key] = {"keep_lengths": list(config), "metric": float(result["metric"]),
                              "relative_flops": float(result["relative_flops"]),
                              "gflops": float(result["gflops"]) if "gflops" in result else None}
        return evaluated[key]

    def feasible(entry) -> bool:
        if entry["relative_flops"] > flops_target + 1e-9:
            log.warning("LAT search: %s measured %.4f relative FLOPs, above the target %.4f",
                        entry["keep_lengths"], entry["relative_flops"], flops_target)
            return False
        return True

    def rank(keys) -> list[str]:
        unique = [k for k in dict.fromkeys(keys) if feasible(evaluated[k])]
        return sorted(unique, key=lambda k: (-evaluated[k]["metric"], evaluated[k]["relative_flops"], k))

    def save() -> None:
        if state_path is None:
            return
        write_json_atomic(state_path, {
            "settings": settings, "generation": generation,
            "population": [evaluated[k]["keep_lengths"] for k in members],
            "best": evaluated[members[0]] if members else None, "history": history,
            "evaluated": list(evaluated.values()),
            "search": {"population": population, "children": children, "mutation_prob": mutation_prob,
                       "length_drop_prob": length_drop_prob, "seed": seed},
        })

    def record() -> None:
        best = evaluated[members[0]]
        history.append({"generation": generation, "best_metric": best["metric"],
                        "best_relative_flops": best["relative_flops"], "evaluated": len(evaluated)})
        log.warning("LAT search (target %.3f) generation %d: best %s -> %.4f at %.3f FLOPs",
                    flops_target, generation, best["keep_lengths"], best["metric"], best["relative_flops"])

    if generation == 0:
        rng = random.Random(seed * 1_000_003)
        candidates = [repair([max_length] * num_layers)]
        tries = 0
        while len({_key(c) for c in candidates}) < population and tries < 50 * population:
            candidates.append(repair(random_length_config(num_layers, max_length, length_drop_prob, rng)))
            tries += 1
        keys = list(dict.fromkeys(_key(c) for c in candidates))[:population]
        for key, config in zip(keys, ([int(x) for x in k.split(",")] for k in keys)):
            score(config)
        members = rank(keys)[:population]
        generation = 1
        record()
        save()

    while generation < generations:
        rng = random.Random(seed * 1_000_003 + generation)
        parents = [evaluated[k]["keep_lengths"] for k in members[:max(2, len(members) // 2)]]
        new: list[list[int]] = []
        tries = 0
        while len(new) < children and tries < 50 * max(children, 1):
            tries += 1
            if len(new) % 2 == 1 and len(parents) >= 2:
                a, b = rng.sample(parents, 2)
                child = crossover_length_configs(a, b)
            else:
                child = mutate_length_config(rng.choice(parents), max_length, mutation_prob, rng)
            child = repair(child)
            if _key(child) in evaluated or any(_key(child) == _key(c) for c in new):
                continue
            new.append(child)
        for child in new:
            score(child)
        members = rank(members + [_key(c) for c in new])[:population]
        generation += 1
        record()
        save()

    if not members:
        raise LTPError(f"LAT search found no configuration within {flops_target} relative FLOPs")
    best = dict(evaluated[members[0]])
    best.update(generation=generation, resumed_from=resumed_from, new_evaluations=new_evaluations,
                total_evaluations=len(evaluated), flops_target=float(flops_target),
                population=[evaluated[k]["keep_lengths"] for k in members])
    return best


__all__ = [
    "smallest_keep_ratios", "random_keep_ratios", "distillation_loss", "lengthdrop_loss", "LengthDropTrainer",
    "run_lengthdrop", "configure_length", "is_valid_length_config", "length_config_tokens",
    "length_config_flops", "random_length_config", "mutate_length_config", "crossover_length_configs",
    "make_length_evaluator", "search_length_config",
]
