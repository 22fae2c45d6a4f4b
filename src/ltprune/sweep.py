"""Accuracy–FLOPs curves (paper Fig. 4, Table 1): one trained point per knob value and method.

Knobs: LTP's lambda (soft + hard stages from the fine-tuned model), top-k's final keep ratio and
the manual baseline's final threshold (hard stage only), LAT's FLOPs target (one LengthDrop
model, one evolutionary search per target). Every point lands in ``output_dir/points.json`` as
soon as it is done, and a point already there (same task, method and knob) is never recomputed,
so an interrupted sweep is resumed by running it again; an interrupted training stage inside a
point resumes from its last complete checkpoint.

Layout::

    output_dir/points.json            {"points": [{method, knob, metric, relative_flops, ...}]}
    output_dir/unpruned/metrics.json  the fine-tuned model itself (the horizontal line)
    output_dir/<method>/<knob>/...    each point's stages and metrics.json
    output_dir/lat/lengthdrop/final   the LengthDrop model all LAT points share
    output_dir/curve.png              plot_sweep
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

from .baselines import lat
from .baselines.lat import configure_length
from .baselines.manual import configure_manual
from .baselines.topk import calibrate_topk, configure_topk
from .checks import parse_floats
from .config import LTPConfig, StageArgs
from .errors import ConfigError, LTPError
from .experiments.runner import (Experiment, PointStore, classification_data, find_point, finished,
                                 lengthdrop_model, stage_args_for)
from .names import STAGE_NAMES  # noqa: F401 (sweep.STAGE_NAMES: the stages stage_args may name)
from .names import SWEEP_KNOBS as DEFAULT_KNOBS  # (sweep.DEFAULT_KNOBS, sweep.METHODS: their names here)
from .names import SWEEP_METHODS as METHODS
from .calibration import calibration_batches
from .patch import configure, configured, get_config, get_thresholds, set_mode
from .runs import write_json_atomic
from .stats import summarize

log = logging.getLogger("ltprune")

KNOB_NAMES = {"ltp": "lambda", "topk": "final keep ratio", "manual": "final threshold", "lat": "FLOPs target"}
#: LTP's default knobs when they are FLOPs targets (``ltp_knob="target"``): LAT's targets, for equal budgets.
TARGET_KNOBS = [0.9, 0.75, 0.6, 0.5, 0.4]
POINTS = "points.json"
UNPRUNED = "unpruned"


# --------------------------------------------------------------------------------------------
# points.json
# --------------------------------------------------------------------------------------------


def load_points(output_dir) -> list[dict]:
    return PointStore(Path(output_dir) / POINTS).rows()


def _add_point(output_dir, point: dict) -> None:
    PointStore(Path(output_dir) / POINTS).add(point)


def _point(method: str, knob, result: dict, run_dir: Path, **extra) -> dict:
    return {"task": result["task"], "method": method, "knob": None if knob is None else float(knob),
            "metric_name": result["metric_name"], "metric": result["metric"],
            "relative_flops": result["relative_flops"], "gflops": result["gflops"],
            "baseline_gflops": result["baseline_gflops"], "run_dir": str(run_dir), **extra}


def knob_dirname(knob: float) -> str:
    return f"{float(knob):g}"


# --------------------------------------------------------------------------------------------
# running a sweep
# --------------------------------------------------------------------------------------------


class _Context(Experiment):
    """What every point of a sweep shares: the runner's data, tokenizer, fine-tuned checkpoint and
    settings, plus LAT's search settings."""

    name = "sweep"

    def __init__(self, model, task, output_dir, ltp, stage_args, data_kwargs, max_length,
                 eval_batch_size, search_kwargs, length_drop_prob):
        stage_args = stage_args_for(stage_args)
        kind, tokenizer, self.data = classification_data(model, task, data_kwargs, max_length)
        super().__init__(kind, tokenizer, self.data["train"], self.data["validation"], model_path=model, ltp=ltp,
                         stage_args=stage_args, eval_batch_size=eval_batch_size)
        self.output_dir = Path(output_dir)
        self.search_kwargs = dict(search_kwargs or {})
        self.length_drop_prob = length_drop_prob
        self.seed = None  # set per repetition by run_sweep(seeds=...): overrides every stage's seed
        self.ltp_knob = "lambda"  # or "target": LTP's knobs are FLOPs targets
        self.equal_flops = False  # top-k's and manual's knobs are FLOPs targets too
        self.equal_budget = False  # baselines train as many epochs as LTP's soft + hard stages

    def args(self, name: str) -> StageArgs:
        """A stage's arguments, with the seed of the repetition being run (if any). ``baseline``:
        the one stage of top-k, manual (a hard stage) and LAT (LengthDrop): with ``equal_budget``
        as long as LTP's soft and hard stages together, else the hard (LengthDrop) stage's own."""
        if name in ("baseline", "lengthdrop") and self.equal_budget:
            soft, hard = super().args("soft"), super().args("hard")
            args = dataclasses.replace(super().args("hard" if name == "baseline" else name),
                                       epochs=soft.epochs + hard.epochs,
                                       max_steps=soft.max_steps + hard.max_steps
                                       if soft.max_steps > 0 and hard.max_steps > 0 else -1)
        else:
            args = super().args("hard" if name == "baseline" else name)
        return args if self.seed is None else dataclasses.replace(args, seed=self.seed)

    def calibration_batches(self, model):
        """The training texts every calibration of a point measures on (run_stage's own)."""
        return calibration_batches(model, self.data["train"], self.pad_id, seed=self.args("hard").seed,
                                   batch_size=self.eval_batch_size)


def _finetune(ctx: _Context) -> str:
    """Fine-tune the base checkpoint once (output_dir/finetune); returns the checkpoint to sweep from."""
    run_dir = ctx.output_dir / "finetune"
    if not finished(run_dir):
        ctx.stage(ctx.load(), "finetune", run_dir)
    return str(run_dir / "final")


def _unpruned_point(ctx: _Context) -> dict:
    model = ctx.load()
    set_mode(model, "off")
    run_dir = ctx.output_dir / UNPRUNED
    return _point(UNPRUNED, None, ctx.evaluate(model, run_dir), run_dir)


def _ltp_point(ctx: _Context, knob: float, run_dir: Path) -> dict:
    target = ctx.ltp_knob == "target"
    if target:
        _check_target(knob)
    setting = {"lambda_": 0.0, "target_flops": float(knob)} if target else {"lambda_": float(knob)}
    model = ctx.load(ltp=ctx.ltp.replace(**setting, method="threshold", keep_ratios=None, keep_lengths=None))
    model = ctx.stage(model, "soft", run_dir / "soft")
    model = ctx.stage(model, "hard", run_dir / "hard")  # with a target: calibrated and held there (run_stage)
    extra = {}
    if target:
        calibration = json.loads((run_dir / "hard" / "calibration.json").read_text())
        extra = {"knob_kind": "target_flops", "calibration_factor": calibration["factor"]}
    thresholds = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
    return _point("ltp", knob, ctx.evaluate(model, run_dir), run_dir, thresholds=thresholds, **extra)


def _topk_point(ctx: _Context, knob: float, run_dir: Path) -> dict:
    model, extra = ctx.load(), {}
    if ctx.equal_flops:  # the knob is a FLOPs target: the final keep ratio that meets it on training texts
        _check_target(knob)
        calibration = calibrate_topk(model, ctx.calibration_batches(model), knob)
        write_json_atomic(run_dir / "calibration.json", calibration)
        extra = {"knob_kind": "target_flops", "final_ratio": calibration["final_ratio"]}
    ratio = extra.get("final_ratio", knob)
    model = ctx.stage(configure_topk(model, ratio), "hard", run_dir / "hard", args_name="baseline")
    return _point("topk", knob, ctx.evaluate(model, run_dir), run_dir, keep_ratios=get_config(model).keep_ratios,
                  **extra)


def _manual_point(ctx: _Context, knob: float, run_dir: Path) -> dict:
    if knob < 0:
        raise ConfigError(f"manual final threshold must be >= 0, got {knob}")
    model, extra = ctx.load(), {}
    if ctx.equal_flops:  # the knob is a FLOPs target: the ramp theta_L * l / L scaled to it, as LTP's
        _check_target(knob)  # thresholds are (run_stage calibrates before the hard stage and holds it)
        model = configure(configure_manual(model, ctx.ltp.final_threshold or 0.01, ctx.ltp.threshold_shape),
                          target_flops=float(knob))
        extra = {"knob_kind": "target_flops"}
    else:
        model = configure_manual(model, knob, ctx.ltp.threshold_shape)
    model = ctx.stage(model, "hard", run_dir / "hard", args_name="baseline")
    thresholds = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
    if extra:
        extra["final_threshold"] = thresholds[-1]
    return _point("manual", knob, ctx.evaluate(model, run_dir), run_dir, thresholds=thresholds, **extra)


def _check_target(knob: float) -> None:
    if not 0 < knob <= 1:
        raise ConfigError(f"a FLOPs target must lie in (0, 1], got {knob}")


def _lat_point(ctx: _Context, model, knob: float, run_dir: Path) -> dict:
    if not 0 < knob:
        raise ConfigError(f"LAT FLOPs target must be > 0, got {knob}")
    kwargs = {"length_drop_prob": ctx.length_drop_prob, "batch_size": ctx.eval_batch_size, **ctx.search_kwargs}
    if ctx.seed is not None:
        kwargs["seed"] = ctx.seed
    best = lat.search_length_config(model, ctx.data["validation"], ctx.info, ctx.pad_id, float(knob),
                                state_file=run_dir / "search.json", **kwargs)
    with configured(model):
        configure_length(model, best["keep_lengths"])
        result = ctx.evaluate(model, run_dir)
    return _point("lat", knob, result, run_dir, keep_lengths=best["keep_lengths"],
                  lengthdrop_model=str(_lat_dir(ctx) / "lat" / "lengthdrop" / "final"))


def _lat_dir(ctx: _Context) -> Path:
    """Where LAT's LengthDrop model lives: one per sweep, or one per seed of a repeated sweep."""
    return ctx.output_dir if ctx.seed is None else ctx.output_dir / f"seed-{ctx.seed}"


def run_sweep(method: str, model, task, output_dir, knobs=None, *, finetune: bool = False,
              ltp: LTPConfig | None = None, stage_args: dict | None = None, data_kwargs: dict | None = None,
              max_length: int | None = None, eval_batch_size: int = 64, search_kwargs: dict | None = None,
              length_drop_prob: float = 0.2, seeds=None, ltp_knob: str = "lambda", equal_flops=None,
              equal_budget: bool = False) -> list[dict]:
    """Train and evaluate one point per knob; returns the points of ``method`` (new and reused).

    ``method``: ltp, topk, manual, lat, or ``all`` (then ``knobs`` is None for the defaults or a
    dict method -> knobs). ``model``: a checkpoint fine-tuned on the task, or with
    ``finetune=True`` a base checkpoint fine-tuned first (once, in ``output_dir/finetune``).
    ``ltp``: the LTP settings shared by all points (final threshold, temperature, layout, ...).
    ``stage_args``: StageArgs per stage name (finetune, soft, hard, lengthdrop).
    ``search_kwargs``: passed to ``baselines.lat.search_length_config`` (population, generations, ...).
    The unpruned model's dev result is stored as method ``unpruned`` (knob None).
    ``seeds``: train every point once per seed (each stage's seed; LAT: its LengthDrop model, one
    per seed, and its search), in ``<method>/<knob>/seed-<S>``; points record their seed, and
    :func:`aggregate_points` sums them up (mean, std, 95% t-interval). The fine-tuned start and
    the unpruned point are shared. None: one run per point with the stages' own seed (as before).
    ``ltp_knob``: ``lambda`` (LTP's knobs are lambdas) or ``target`` (FLOPs targets: lambda 0, the
    soft stage's FLOPs penalty, the thresholds calibrated before the hard stage; calibration.py).
    ``equal_flops``: relative FLOPs targets at which every method of ``method`` is run (instead of
    ``knobs``): LTP's FLOPs target, top-k's final keep ratio and manual's final threshold
    calibrated to each on training texts (manual's held there in its hard stage, as LTP's),
    LAT's search target; the comparison of Table 1 at equal FLOPs.
    ``equal_budget``: top-k's and manual's hard stage and LAT's LengthDrop stage train as many
    epochs (steps) as LTP's soft and hard stages together, on the same data.
    """
    if ltp_knob not in ("lambda", "target"):
        raise ConfigError(f"ltp_knob must be lambda or target, got {ltp_knob!r}")
    if equal_flops is not None:
        if knobs is not None:
            raise ConfigError("give either knobs or equal_flops (FLOPs targets for every method), not both")
        equal_flops = [float(v) for v in equal_flops]
        if not equal_flops or not all(0 < v <= 1 for v in equal_flops):
            raise ConfigError(f"equal_flops must be relative FLOPs in (0, 1], got {equal_flops}")
        ltp_knob = "target"
        knobs = {m: equal_flops for m in METHODS} if method == "all" else equal_flops
    if method == "all":
        if knobs is not None and not isinstance(knobs, dict):
            raise ConfigError("with method 'all', knobs must be None (the defaults) or a dict method -> knobs")
        methods = list(METHODS)
    elif method in METHODS:
        methods = [method]
        knobs = {method: knobs}
    else:
        raise ConfigError(f"method must be one of {', '.join(METHODS)} or all; got {method!r}")
    plan = {}
    for m in methods:
        values = (knobs or {}).get(m)
        defaults = TARGET_KNOBS if (m == "ltp" and ltp_knob == "target") else DEFAULT_KNOBS[m]
        values = list(defaults) if values is None else [float(v) for v in values]
        if not values or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"knobs for {m} must be a non-empty list of finite numbers, got {values}")
        plan[m] = values

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kinds = {"ltp": "target_flops" if ltp_knob == "target" else None,
             "topk": "target_flops" if equal_flops else None, "manual": "target_flops" if equal_flops else None}
    clash = sorted({p["method"] for p in load_points(output_dir)
                    if p["method"] in plan and p["method"] in kinds and p.get("knob_kind") != kinds[p["method"]]})
    if clash:
        raise ConfigError(f"{output_dir / POINTS} holds {', '.join(clash)} points of the other knob kind "
                          "(FLOPs targets vs lambda / keep ratio / final threshold); use another output folder")
    ctx = _Context(model, task, output_dir, ltp, stage_args, data_kwargs, max_length, eval_batch_size,
                   search_kwargs, length_drop_prob)
    ctx.ltp_knob = ltp_knob
    ctx.equal_flops, ctx.equal_budget = bool(equal_flops), bool(equal_budget)
    if finetune:
        ctx.model_path = _finetune(ctx)
    task_name = ctx.info.name
    if find_point(load_points(output_dir), task_name, UNPRUNED, None) is None:
        _add_point(output_dir, _unpruned_point(ctx))

    seeds = _check_seeds(seeds)
    out = []
    for m, values in plan.items():
        for seed in seeds:
            ctx.seed = seed
            out += _run_method(ctx, m, values, task_name)
    ctx.seed = None
    return out


def _check_seeds(seeds) -> list:
    if seeds is None:
        return [None]
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    return seeds


def _run_method(ctx: _Context, m: str, values, task_name: str) -> list[dict]:
    """Every knob of method ``m`` at the context's seed (points already there are reused)."""
    output_dir, seed, out, lat_model = ctx.output_dir, ctx.seed, [], None
    tag = "" if seed is None else f" seed {seed}"
    target = (m == "ltp" and ctx.ltp_knob == "target") or (m in ("topk", "manual") and ctx.equal_flops)
    name = "FLOPs target" if target else KNOB_NAMES[m]
    for knob in values:
        found = find_point(load_points(output_dir), task_name, m, knob, seed)
        if found is not None:
            log.warning("sweep: %s %s=%g%s already in %s, reusing it", m, name, knob, tag, POINTS)
            out.append(found)
            continue
        run_dir = output_dir / m / knob_dirname(knob)
        run_dir = run_dir if seed is None else run_dir / f"seed-{seed}"
        log.warning("sweep: %s %s=%g%s -> %s", m, name, knob, tag, run_dir)
        if m == "lat":
            lat_model = lat_model if lat_model is not None else lengthdrop_model(
                ctx.load, ctx.tokenizer, ctx.data["train"], ctx.data["validation"], ctx.info, _lat_dir(ctx),
                ctx.args("lengthdrop"), ctx.length_drop_prob)
            point = _lat_point(ctx, lat_model, knob, run_dir)
        else:
            point = {"ltp": _ltp_point, "topk": _topk_point, "manual": _manual_point}[m](ctx, knob, run_dir)
        if seed is not None:
            point["seed"] = seed
        _add_point(output_dir, point)
        out.append(point)
        log.warning("sweep: %s %s=%g%s: %s %.4f at %.3f relative FLOPs", m, name, knob, tag,
                    point["metric_name"], point["metric"], point["relative_flops"])
    return out


# --------------------------------------------------------------------------------------------
# Table 1 and the plot
# --------------------------------------------------------------------------------------------


def aggregate_points(points: list[dict], confidence: float = 0.95) -> list[dict]:
    """One point per (task, method, knob): over its seeds the mean metric and relative FLOPs
    (as ``metric`` and ``relative_flops``), with ``n``, ``seeds`` and ``stats``: mean, std and a
    ``confidence`` t-interval of each (stats.summarize). A point run once stays as it is
    (``n`` 1, no interval)."""
    groups: dict = {}
    for p in points:
        key = (p.get("task"), p["method"], None if p.get("knob") is None else round(float(p["knob"]), 12))
        groups.setdefault(key, []).append(p)
    out = []
    for rows in groups.values():
        first = dict(rows[0])
        if len(rows) == 1:
            out.append({**first, "n": 1})
            continue
        summary = {name: summarize([r[name] for r in rows], confidence)
                   for name in ("metric", "relative_flops", "gflops") if all(name in r for r in rows)}
        first.update(metric=summary["metric"]["mean"], relative_flops=summary["relative_flops"]["mean"],
                     n=len(rows), seeds=[r.get("seed") for r in rows], stats=summary)
        if "gflops" in summary:
            first["gflops"] = summary["gflops"]["mean"]
        for key in ("seed", "run_dir", "thresholds", "keep_lengths", "keep_ratios"):
            first.pop(key, None)
        out.append(first)
    return out


def table1(points, tolerance: float = 0.01) -> dict:
    """Per task and method: the lowest relative FLOPs within ``tolerance`` (absolute metric, i.e.
    1 point) of the unpruned model (paper Table 1). ``points``: a list, or a sweep folder.

    Returns {task: {"unpruned": {...}, method: {knob, metric, drop, relative_flops,
    flops_reduction} or None when no point is within the tolerance}}.
    """
    if isinstance(points, (str, os.PathLike)):
        points = load_points(points)
    points = aggregate_points(points)  # repeated points: their means select, their intervals are shown
    out: dict = {}
    for task in dict.fromkeys(p.get("task") for p in points):
        rows = [p for p in points if p.get("task") == task]
        ref = next((p for p in rows if p["method"] == UNPRUNED), None)
        if ref is None:
            log.warning("table1: no unpruned point for task %s; skipping it", task)
            continue
        entry = {UNPRUNED: {"metric": ref["metric"], "relative_flops": 1.0, "metric_name": ref.get("metric_name")}}
        methods = [m for m in METHODS if any(p["method"] == m for p in rows)]
        methods += sorted({p["method"] for p in rows} - set(methods) - {UNPRUNED})
        for m in methods:
            within = [p for p in rows if p["method"] == m and p["metric"] >= ref["metric"] - tolerance - 1e-12]
            if not within:
                entry[m] = None
                continue
            best = min(within, key=lambda p: (p["relative_flops"], -p["metric"]))
            entry[m] = {"knob": best["knob"], "metric": best["metric"], "drop": ref["metric"] - best["metric"],
                        "relative_flops": best["relative_flops"],
                        "flops_reduction": 1.0 / best["relative_flops"] if best["relative_flops"] > 0 else math.inf,
                        "n": best.get("n", 1)}
            if "stats" in best:
                entry[m]["stats"] = best["stats"]
        out[task] = entry
    return out


def _interval(row: dict, name: str, digits: int) -> str:
    s = row.get("stats", {}).get(name)
    if not s or s.get("half_width") is None:
        return ""
    return f" ±{s['half_width']:.{digits}f}"


def format_table1(table: dict) -> str:
    """Table 1 as text: one row per task and method; a repeated point shows its mean and the
    half-width of its 95% t-interval (``±``) and its number of seeds."""
    repeated = any(isinstance(r, dict) and r.get("n", 1) > 1 for e in table.values() for r in e.values())
    if repeated:
        return _format_table1_repeated(table)
    lines = [f"{'task':<18} {'method':<10} {'knob':>8} {'metric':>8} {'drop':>7} {'rel FLOPs':>9} {'reduction':>9}"]
    for task, entry in table.items():
        ref = entry[UNPRUNED]
        lines.append(f"{str(task):<18} {UNPRUNED:<10} {'':>8} {ref['metric']:>8.4f} {'':>7} {1.0:>9.3f} {1.0:>8.2f}x")
        for m, row in entry.items():
            if m == UNPRUNED:
                continue
            if row is None:
                lines.append(f"{str(task):<18} {m:<10} {'-':>8} {'(no point within tolerance)':>35}")
            else:
                lines.append(f"{str(task):<18} {m:<10} {row['knob']:>8g} {row['metric']:>8.4f} {row['drop']:>7.4f}"
                             f" {row['relative_flops']:>9.3f} {row['flops_reduction']:>8.2f}x")
    return "\n".join(lines)


def _format_table1_repeated(table: dict) -> str:
    lines = [f"{'task':<18} {'method':<10} {'knob':>8} {'n':>3} {'metric (95% CI)':>17} {'drop':>7} "
             f"{'rel FLOPs (95% CI)':>18} {'reduction':>9}"]
    for task, entry in table.items():
        ref = entry[UNPRUNED]
        lines.append(f"{str(task):<18} {UNPRUNED:<10} {'':>8} {'':>3} {ref['metric']:>17.4f} {'':>7} {1.0:>18.3f}"
                     f" {1.0:>8.2f}x")
        for m, row in entry.items():
            if m == UNPRUNED:
                continue
            if row is None:
                lines.append(f"{str(task):<18} {m:<10} {'-':>8} {'(no point within tolerance)':>35}")
                continue
            metric = f"{row['metric']:.4f}{_interval(row, 'metric', 4)}"
            rel = f"{row['relative_flops']:.3f}{_interval(row, 'relative_flops', 3)}"
            lines.append(f"{str(task):<18} {m:<10} {row['knob']:>8g} {row.get('n', 1):>3} {metric:>17} "
                         f"{row['drop']:>7.4f} {rel:>18} {row['flops_reduction']:>8.2f}x")
    lines.append("(metric and relative FLOPs: mean over the seeds ± the half-width of the 95% t-interval)")
    return "\n".join(lines)


def plot_sweep(output_dir, path=None) -> Path:
    """``curve.png``: metric vs relative FLOPs, one line per method, the unpruned model as a
    horizontal line; one panel per task found in points.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    points = load_points(output_dir)
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points to plot")
    points = aggregate_points(points)  # a repeated point: its mean, with its 95% t-interval as error bars
    tasks = list(dict.fromkeys(p.get("task") for p in points))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    styles = {"ltp": ("tab:blue", "o"), "topk": ("tab:red", "s"), "lat": ("tab:orange", "^"),
              "manual": ("black", "D")}
    for ax, task in zip(axes[0], tasks):
        rows = [p for p in points if p.get("task") == task]
        methods = [m for m in METHODS if any(p["method"] == m for p in rows)]
        methods += sorted({p["method"] for p in rows} - set(methods) - {UNPRUNED})
        for m in methods:
            pts = sorted((p for p in rows if p["method"] == m), key=lambda p: p["relative_flops"])
            color, marker = styles.get(m, (None, "x"))
            ax.plot([p["relative_flops"] for p in pts], [p["metric"] for p in pts], marker=marker,
                    color=color, label=m)
            if any(p.get("n", 1) > 1 for p in pts):
                def half(p, name):
                    s = p.get("stats", {}).get(name)
                    return 0.0 if not s or s.get("half_width") is None else s["half_width"]
                ax.errorbar([p["relative_flops"] for p in pts], [p["metric"] for p in pts],
                            xerr=[half(p, "relative_flops") for p in pts], yerr=[half(p, "metric") for p in pts],
                            fmt="none", ecolor=color, capsize=3, linewidth=0.8)
        ref = next((p for p in rows if p["method"] == UNPRUNED), None)
        if ref is not None:
            ax.axhline(ref["metric"], color="gray", linestyle="--", label=f"unpruned ({ref['metric']:.3f})")
            ax.axhline(ref["metric"] - 0.01, color="gray", linestyle=":", linewidth=0.8, label="unpruned - 1 pt")
        metric_name = next((p.get("metric_name") for p in rows if p.get("metric_name")), "metric")
        ax.set_xlabel("relative FLOPs (encoder layers; embeddings and head excluded)")
        ax.set_ylabel(f"dev {metric_name}")
        ax.set_title(str(task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path) if path is not None else output_dir / "curve.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path



def parse_knobs(text: str | None) -> list[float] | None:
    """``--knobs`` as floats (None when absent)."""
    return parse_floats(text, "--knobs")


__all__ = ["METHODS", "DEFAULT_KNOBS", "run_sweep", "load_points", "find_point", "aggregate_points", "table1",
           "format_table1", "plot_sweep", "parse_knobs"]
