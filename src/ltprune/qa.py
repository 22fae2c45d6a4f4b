"""Extractive question answering with LTP on SQuAD 2.0 (paper Fig. 5, Table 1): the stage runs
(``train_qa``) and the Fig. 5 experiment (F1 vs relative FLOPs over lambda), composed from the
SQuAD task in ``ltprune.tasks.squad`` (metrics, features, decoding, scoring, the QA model) and
``training.run_stage``: in the soft stage ``outputs.loss`` is the QA loss + lambda * L_reg, so the
LTP stages run unchanged. The task's names stay importable from here.

Metrics are fractions in [0, 1] (the official script prints percentages), like every other
metric in ltprune.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from . import training
from .config import LTPConfig, StageArgs
from .data import subsample
from .errors import ConfigError, DataError, LTPError
from .experiments.runner import Experiment, PointStore, finished
from .loading import load_tokenizer
from .names import STAGES
from .patch import set_mode
from .tasks.squad import (  # noqa: F401 (the task's names stay importable from here)
                          TASK_NAME, SquadTask, compute_exact, compute_f1, evaluate_qa, load_qa_model, load_squad,
                          normalize_answer, postprocess, predict_features, prepare_features, qa_info, read_squad_json,
                          squad_v2_metrics, tokenize_squad, write_qa_metrics)

log = logging.getLogger("ltprune")

QA_STAGES = STAGES
POINTS = "points.json"

__all__ = ["qa_info", "normalize_answer", "compute_exact", "compute_f1", "squad_v2_metrics", "read_squad_json",
           "load_squad", "prepare_features", "postprocess", "predict_features", "evaluate_qa",
           "write_qa_metrics", "load_qa_model", "run_qa_stage", "train_qa", "run_qa_experiment", "plot_qa"]


def run_qa_stage(model, tokenizer, train_features, eval_examples, eval_features, stage: str, output_dir,
                 args, resume: bool = False) -> dict:
    """One LTP stage (finetune, soft, hard) on QA features through ``training.run_stage``."""
    if "start_positions" not in train_features.column_names:
        raise DataError("QA training features need start_positions / end_positions (prepare_features)")
    return training.run_stage(model, tokenizer, train_features, eval_features, SquadTask(eval_examples), stage,
                              output_dir, args, resume)


class _QAData(Experiment):
    """The runner of a QA job: questions (examples) and their features, the tokenizer; a stage
    evaluates on a subsample of dev questions (and their features) while it trains."""

    name = "qa"

    def __init__(self, model, data_file, dev_file, max_length, doc_stride, max_train_examples,
                 max_eval_examples, need_train: bool = True, *, ltp: LTPConfig | None = None,
                 stage_args: dict | None = None):
        tokenizer = load_tokenizer(str(model))
        self.examples = load_squad(data_file, dev_file, max_train_examples=max_train_examples,
                                   max_eval_examples=max_eval_examples)
        if "validation" not in self.examples:
            raise DataError("question answering needs dev questions (--dev-file)")
        if need_train and "train" not in self.examples:
            raise DataError("training needs training questions (--data-file)")
        task = SquadTask(self.examples["validation"])
        self.features = task.prepare(self.examples, tokenizer, max_length, doc_stride)
        super().__init__(task, tokenizer, self.features.get("train"), self.features["validation"], model_path=model,
                         ltp=ltp, stage_args={s: StageArgs() for s in STAGES} | dict(stage_args or {}))

    def during_training(self, args):
        if "start_positions" not in self.train.column_names:
            raise DataError("QA training features need start_positions / end_positions (prepare_features)")
        eval_idx = subsample(self.examples["validation"], args.max_eval_examples_during_training, args.seed)
        eval_features = self.dev
        if len(eval_idx) < len(self.examples["validation"]):
            ids = set(eval_idx["id"])
            eval_features = eval_features.filter(lambda r: r["example_id"] in ids)
        return SquadTask(eval_idx), eval_features

    def evaluate(self, model, output_dir=None, *, batch_size: int = 64, **decode) -> dict:
        task = SquadTask(self.examples["validation"], **decode)
        return super().evaluate(model, output_dir, task=task, batch_size=batch_size)


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def train_qa(model_name_or_path, output_dir, *, data_file=None, dev_file=None, stages=("soft", "hard"),
             ltp: LTPConfig | None = None, stage_args: dict | None = None, max_length: int = 384,
             doc_stride: int = 128, max_train_examples: int | None = None, max_eval_examples: int | None = None,
             resume: bool = False) -> dict:
    """The LTP recipe on SQuAD 2.0: ``stages`` in order, each evaluated on dev (SQuAD v2 metrics
    and FLOPs in ``output_dir/<stage>/metrics.json``). Returns {stage: dev metrics}."""
    if not stages or any(s not in STAGES for s in stages):
        raise ConfigError(f"stages must be a non-empty list of {', '.join(STAGES)}; got {list(stages)}")
    output_dir = Path(output_dir)
    data = _QAData(model_name_or_path, data_file, dev_file, max_length, doc_stride, max_train_examples,
                   max_eval_examples, stage_args=stage_args)
    # a new soft stage starts from the initial schedule, not saved thresholds
    model = data.task.load_model(model_name_or_path, ltp, reset_thresholds="soft" in stages)
    results = {}
    for stage in stages:
        model = data.stage(model, stage, output_dir / stage, resume=resume)
        if stage == "finetune":
            set_mode(model, "off")
        results[stage] = _summary(data.evaluate(model, output_dir / stage))
        log.warning("qa %s: dev F1 %.4f (HasAns %s, NoAns %s), relative FLOPs %.3f", stage, results[stage]["f1"],
                    results[stage].get("HasAns_f1"), results[stage].get("NoAns_f1"), results[stage]["relative_flops"])
    return results


def _load_points(output_dir) -> list[dict]:
    return PointStore(Path(output_dir) / POINTS).rows()


def _point(method: str, knob, result: dict, run_dir: Path) -> dict:
    keys = ("metric_name", "metric", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
            "HasAns_total", "NoAns_total", "relative_flops", "gflops", "baseline_gflops")
    return {"task": TASK_NAME, "method": method, "knob": None if knob is None else float(knob),
            **{k: result[k] for k in keys if k in result}, "run_dir": str(run_dir)}


def run_qa_experiment(model, output_dir, lambdas=(0.01, 0.05, 0.1, 0.2), *, finetune: bool = False,
                      data_file=None, dev_file=None, ltp: LTPConfig | None = None, stage_args: dict | None = None,
                      max_length: int = 384, doc_stride: int = 128, max_train_examples: int | None = None,
                      max_eval_examples: int | None = None) -> list[dict]:
    """Paper Fig. 5: one LTP model per lambda (soft + hard from the QA-fine-tuned ``model``, or
    from ``output_dir/finetune`` with ``finetune=True``), plus the unpruned model. Points go to
    ``output_dir/points.json`` as they finish (the sweep's format: ``ltprune sweep --table``
    reads it) and are reused on a rerun; ``qa_curve.png`` is drawn at the end."""
    lambdas = [float(v) for v in lambdas]
    if not lambdas or not all(math.isfinite(v) and v >= 0 for v in lambdas):
        raise ConfigError(f"lambdas must be a non-empty list of numbers >= 0, got {lambdas}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ltp = ltp or LTPConfig()
    data = _QAData(model, data_file, dev_file, max_length, doc_stride, max_train_examples, max_eval_examples,
                   ltp=ltp, stage_args=stage_args)
    if finetune:
        run_dir = output_dir / "finetune"
        if not finished(run_dir):
            data.stage(data.task.load_model(str(model), ltp), "finetune", run_dir)
        data.model_path = str(run_dir / "final")
    points = PointStore(output_dir / POINTS)
    if points.find("unpruned", None, TASK_NAME) is None:
        m = set_mode(data.load(), "off")
        points.add(_point("unpruned", None, data.evaluate(m, output_dir / "unpruned"), output_dir / "unpruned"))
    for lam in lambdas:
        if points.find("ltp", lam, TASK_NAME) is not None:
            log.warning("qa experiment: lambda %g already in %s, reusing it", lam, POINTS)
            continue
        run_dir = output_dir / "ltp" / f"{lam:g}"
        m = data.load(ltp=ltp.replace(lambda_=lam))
        m = data.stage(m, "soft", run_dir / "soft")
        m = data.stage(m, "hard", run_dir / "hard")
        point = _point("ltp", lam, data.evaluate(m, run_dir), run_dir)
        points.add(point)
        log.warning("qa experiment: lambda %g: F1 %.4f at %.3f relative FLOPs", lam, point["f1"],
                    point["relative_flops"])
    plot_qa(output_dir)
    return [p for p in _load_points(output_dir) if p["method"] == "unpruned" or p.get("knob") in lambdas]


def plot_qa(output_dir, path=None) -> Path:
    """``qa_curve.png``: F1 vs relative FLOPs (left), HasAns (black) / NoAns (red) F1 (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    points = _load_points(output_dir)
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points to plot")
    ltp = sorted((p for p in points if p["method"] == "ltp"), key=lambda p: p["relative_flops"])
    ref = next((p for p in points if p["method"] == "unpruned"), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [p["relative_flops"] for p in ltp]
    left.plot(x, [p["f1"] for p in ltp], "o-", color="tab:blue", label="LTP")
    for ax, keys in ((left, (("f1", "gray", "unpruned"),)),
                     (right, (("HasAns_f1", "black", "HasAns"), ("NoAns_f1", "red", "NoAns")))):
        for key, color, label in keys:
            if ax is right:
                ax.plot(x, [p.get(key, math.nan) for p in ltp], "o-", color=color, label=f"LTP {label}")
            if ref is not None and ref.get(key) is not None:
                ax.axhline(ref[key], color=color, linestyle="--", linewidth=0.9, label=f"unpruned {label}")
        ax.set_xlabel("relative FLOPs (encoder layers)")
        ax.set_ylabel("dev F1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("SQuAD 2.0: F1 vs FLOPs")
    right.set_title("answerable (HasAns) vs unanswerable (NoAns)")
    fig.tight_layout()
    path = Path(path) if path is not None else output_dir / "qa_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
