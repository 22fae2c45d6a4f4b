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

import logging
import math
import os
from pathlib import Path

from .baselines import lat
from .baselines.lat import configure_length
from .baselines.manual import configure_manual
from .baselines.topk import configure_topk
from .checks import parse_floats
from .config import LTPConfig
from .errors import ConfigError, LTPError
from .experiments.runner import (Experiment, PointStore, classification_data, find_point, finished,
                                 lengthdrop_model, stage_args_for)
from .names import STAGE_NAMES  # noqa: F401 (sweep.STAGE_NAMES: the stages stage_args may name)
from .names import SWEEP_KNOBS as DEFAULT_KNOBS  # (sweep.DEFAULT_KNOBS, sweep.METHODS: their names here)
from .names import SWEEP_METHODS as METHODS
from .patch import configured, get_config, get_thresholds, set_mode

log = logging.getLogger("ltprune")

KNOB_NAMES = {"ltp": "lambda", "topk": "final keep ratio", "manual": "final threshold", "lat": "FLOPs target"}
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
    model = ctx.load(ltp=ctx.ltp.replace(lambda_=float(knob), method="threshold", keep_ratios=None,
                                         keep_lengths=None))
    model = ctx.stage(model, "soft", run_dir / "soft")
    model = ctx.stage(model, "hard", run_dir / "hard")
    thresholds = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
    return _point("ltp", knob, ctx.evaluate(model, run_dir), run_dir, thresholds=thresholds)


def _topk_point(ctx: _Context, knob: float, run_dir: Path) -> dict:
    model = ctx.stage(configure_topk(ctx.load(), knob), "hard", run_dir / "hard")
    return _point("topk", knob, ctx.evaluate(model, run_dir), run_dir, keep_ratios=get_config(model).keep_ratios)


def _manual_point(ctx: _Context, knob: float, run_dir: Path) -> dict:
    if knob < 0:
        raise ConfigError(f"manual final threshold must be >= 0, got {knob}")
    model = ctx.stage(configure_manual(ctx.load(), knob), "hard", run_dir / "hard")
    thresholds = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
    return _point("manual", knob, ctx.evaluate(model, run_dir), run_dir, thresholds=thresholds)


def _lat_point(ctx: _Context, model, knob: float, run_dir: Path) -> dict:
    if not 0 < knob:
        raise ConfigError(f"LAT FLOPs target must be > 0, got {knob}")
    kwargs = {"length_drop_prob": ctx.length_drop_prob, "batch_size": ctx.eval_batch_size, **ctx.search_kwargs}
    best = lat.search_length_config(model, ctx.data["validation"], ctx.info, ctx.pad_id, float(knob),
                                state_file=run_dir / "search.json", **kwargs)
    with configured(model):
        configure_length(model, best["keep_lengths"])
        result = ctx.evaluate(model, run_dir)
    return _point("lat", knob, result, run_dir, keep_lengths=best["keep_lengths"],
                  lengthdrop_model=str(ctx.output_dir / "lat" / "lengthdrop" / "final"))


def run_sweep(method: str, model, task, output_dir, knobs=None, *, finetune: bool = False,
              ltp: LTPConfig | None = None, stage_args: dict | None = None, data_kwargs: dict | None = None,
              max_length: int | None = None, eval_batch_size: int = 64, search_kwargs: dict | None = None,
              length_drop_prob: float = 0.2) -> list[dict]:
    """Train and evaluate one point per knob; returns the points of ``method`` (new and reused).

    ``method``: ltp, topk, manual, lat, or ``all`` (then ``knobs`` is None for the defaults or a
    dict method -> knobs). ``model``: a checkpoint fine-tuned on the task, or with
    ``finetune=True`` a base checkpoint fine-tuned first (once, in ``output_dir/finetune``).
    ``ltp``: the LTP settings shared by all points (final threshold, temperature, layout, ...).
    ``stage_args``: StageArgs per stage name (finetune, soft, hard, lengthdrop).
    ``search_kwargs``: passed to ``baselines.lat.search_length_config`` (population, generations, ...).
    The unpruned model's dev result is stored as method ``unpruned`` (knob None).
    """
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
        values = list(DEFAULT_KNOBS[m]) if values is None else [float(v) for v in values]
        if not values or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"knobs for {m} must be a non-empty list of finite numbers, got {values}")
        plan[m] = values

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(model, task, output_dir, ltp, stage_args, data_kwargs, max_length, eval_batch_size,
                   search_kwargs, length_drop_prob)
    if finetune:
        ctx.model_path = _finetune(ctx)
    task_name = ctx.info.name
    if find_point(load_points(output_dir), task_name, UNPRUNED, None) is None:
        _add_point(output_dir, _unpruned_point(ctx))

    out = []
    for m, values in plan.items():
        lat_model = None
        for knob in values:
            found = find_point(load_points(output_dir), task_name, m, knob)
            if found is not None:
                log.warning("sweep: %s %s=%g already in %s, reusing it", m, KNOB_NAMES[m], knob, POINTS)
                out.append(found)
                continue
            run_dir = output_dir / m / knob_dirname(knob)
            log.warning("sweep: %s %s=%g -> %s", m, KNOB_NAMES[m], knob, run_dir)
            if m == "lat":
                lat_model = lat_model if lat_model is not None else lengthdrop_model(
                    ctx.load, ctx.tokenizer, ctx.data["train"], ctx.data["validation"], ctx.info, ctx.output_dir,
                    ctx.stage_args["lengthdrop"], ctx.length_drop_prob)
                point = _lat_point(ctx, lat_model, knob, run_dir)
            else:
                point = {"ltp": _ltp_point, "topk": _topk_point, "manual": _manual_point}[m](ctx, knob, run_dir)
            _add_point(output_dir, point)
            out.append(point)
            log.warning("sweep: %s %s=%g: %s %.4f at %.3f relative FLOPs", m, KNOB_NAMES[m], knob,
                        point["metric_name"], point["metric"], point["relative_flops"])
    return out


# --------------------------------------------------------------------------------------------
# Table 1 and the plot
# --------------------------------------------------------------------------------------------


def table1(points, tolerance: float = 0.01) -> dict:
    """Per task and method: the lowest relative FLOPs within ``tolerance`` (absolute metric, i.e.
    1 point) of the unpruned model (paper Table 1). ``points``: a list, or a sweep folder.

    Returns {task: {"unpruned": {...}, method: {knob, metric, drop, relative_flops,
    flops_reduction} or None when no point is within the tolerance}}.
    """
    if isinstance(points, (str, os.PathLike)):
        points = load_points(points)
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
                        "flops_reduction": 1.0 / best["relative_flops"] if best["relative_flops"] > 0 else math.inf}
        out[task] = entry
    return out


def format_table1(table: dict) -> str:
    """Table 1 as text: one row per task and method."""
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


__all__ = ["METHODS", "DEFAULT_KNOBS", "run_sweep", "load_points", "find_point", "table1", "format_table1",
           "plot_sweep", "parse_knobs"]
