"""What the experiments share: one runner over a task, stages that run once and are reused, the
points store, and LAT's one LengthDrop model.

An :class:`Experiment` holds what every run of a sweep, the robustness study or the QA curve
shares (the task, tokenizer, tokenized splits, the checkpoint to start from, the LTP settings and
the StageArgs of each stage) and does the three things each of them did with its own copy: load
a fresh model, run a stage (cached), evaluate and write. The experiments differ only in their
data (robustness trains on the short examples and scores per length bucket; QA evaluates a
stage on a subsample of questions) and override just that.

A stage's folder holds ``final/`` and its ``DONE`` file once it has finished; until then its
last complete checkpoint, from which a rerun resumes. Every stage runs through
:func:`cached_stage`, so an interrupted experiment is resumed by running it again. Results land
in a :class:`PointStore` as each one finishes, written atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .. import checkpoint, data, runs, training
from ..baselines import lat
from ..config import LTPConfig, StageArgs
from ..data import subsample
from ..errors import ConfigError, LTPError, read_json
from ..loading import load_tokenizer
from ..names import DONE, STAGE_NAMES
from ..patch import set_mode
from ..tasks.classification import ClassificationTask
from ..training import complete_checkpoints

log = logging.getLogger("ltprune")


def finished(run_dir) -> bool:
    """Whether the stage in ``run_dir`` has finished (its ``final/`` is complete)."""
    return (Path(run_dir) / "final" / DONE).is_file()


def has_checkpoint(run_dir) -> bool:
    """Whether an unfinished stage left a complete checkpoint to resume from."""
    run_dir = Path(run_dir)
    return bool(complete_checkpoints(run_dir)) if run_dir.is_dir() else False


def cached_stage(experiment: str, stage: str, run_dir, run, resume: bool = False):
    """The model of a finished stage, loaded from ``run_dir/final``; otherwise ``run(resume)``,
    which trains it and returns the model (``resume``: asked for, or an earlier attempt left a
    checkpoint)."""
    run_dir = Path(run_dir)
    if finished(run_dir):
        log.warning("%s: %s already done in %s, loading it", experiment, stage, run_dir)
        return checkpoint.from_pretrained(run_dir / "final")
    return run(resume or has_checkpoint(run_dir))


def lengthdrop_model(load, tokenizer, train_ds, dev_ds, info, output_dir, args, length_drop_prob: float):
    """LAT's one LengthDrop model of an experiment, in ``output_dir/lat/lengthdrop``: loaded once it
    has finished, else trained from ``load()`` (dev examples subsampled as in every stage).
    Returned in ``off`` mode: each LAT point sets its own lengths."""
    run_dir = Path(output_dir) / "lat" / "lengthdrop"
    if finished(run_dir):
        model = checkpoint.from_pretrained(run_dir / "final")
    else:
        model = load()
        eval_ds = subsample(dev_ds, args.max_eval_examples_during_training, args.seed)
        lat.run_lengthdrop(model, tokenizer, train_ds, eval_ds, info, run_dir, args,
                           length_drop_prob=length_drop_prob, resume=has_checkpoint(run_dir))
    return set_mode(model, "off")


def stage_args_for(stage_args: dict | None) -> dict:
    """StageArgs for every stage name (finetune, soft, hard, lengthdrop), defaults where not given;
    an unknown name is refused."""
    unknown = set(stage_args or {}) - set(STAGE_NAMES)
    if unknown:
        raise ConfigError(f"unknown stages in stage_args: {sorted(unknown)} (known: {', '.join(STAGE_NAMES)})")
    return {name: StageArgs() for name in STAGE_NAMES} | dict(stage_args or {})


class Experiment:
    """The task, data and settings every run of an experiment shares, and its three steps.

    ``train`` / ``dev``: the tokenized splits the stages train on and evaluate on during training
    (subsampled per stage); ``model_path``: the checkpoint every fresh model starts from (an
    experiment that fine-tunes first points it at its ``finetune/final``)."""

    name = "experiment"

    def __init__(self, task, tokenizer, train, dev, *, model_path, ltp: LTPConfig | None = None,
                 stage_args: dict | None = None, eval_batch_size: int = 64):
        self.task = task
        self.info = task.info
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.train, self.dev = train, dev
        self.model_path = str(model_path)
        self.ltp = ltp or LTPConfig()
        self.stage_args = dict(stage_args or {})
        self.eval_batch_size = eval_batch_size

    def load(self, path=None, ltp: LTPConfig | None = None):
        """A fresh patched copy of the checkpoint, thresholds at their initial schedule (an
        ltprune checkpoint brings the thresholds it was saved with: every run starts alike)."""
        return self.task.load_model(str(path or self.model_path), ltp or self.ltp, reset_thresholds=True)

    def during_training(self, args: StageArgs):
        """(task, dev data) a stage evaluates on while it trains: ``dev``, subsampled."""
        return self.task, subsample(self.dev, args.max_eval_examples_during_training, args.seed)

    def args(self, name: str) -> StageArgs:
        """A stage's arguments (defaults where not given)."""
        return self.stage_args.get(name) or StageArgs()

    def stage(self, model, stage: str, run_dir, args_name: str | None = None, resume: bool = False):
        """Run one stage unless it already finished (then load its result); returns the model."""
        args = self.args(args_name or stage)

        def run(resume):
            task, eval_ds = self.during_training(args)
            training.run_stage(model, self.tokenizer, self.train, eval_ds, task, stage, run_dir, args, resume)
            return model

        return cached_stage(self.name, stage, run_dir, run, resume)

    def evaluate(self, model, run_dir=None, *, dataset=None, task=None, batch_size: int | None = None) -> dict:
        """The task's metrics and FLOPs on ``dataset`` (the dev split), written to ``run_dir``
        (by the main process) when given."""
        task = task or self.task
        dataset = self.dev if dataset is None else dataset
        result = task.evaluate(model, dataset, self.pad_id, batch_size or self.eval_batch_size)
        if run_dir is not None and runs.is_main_process():
            task.write(result, run_dir)
        return result


def classification_data(model, task: str, data_kwargs: dict | None = None, max_length: int | None = None):
    """(ClassificationTask, tokenizer, tokenized splits) of a classification experiment: the data
    read and tokenized once (``data.load_task``; a task without a validation split is refused)."""
    dsd, info = data.load_task(task, **(data_kwargs or {}))
    if "validation" not in dsd:
        raise LTPError(f"task {task!r} has no validation split to evaluate on")
    tokenizer = load_tokenizer(str(model))
    kind = ClassificationTask(info)
    return kind, tokenizer, kind.prepare(dsd, tokenizer, max_length)


# --------------------------------------------------------------------------------------------
# the points store
# --------------------------------------------------------------------------------------------


def same_knob(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def find_point(points: list[dict], task: str | None, method: str, knob, seed: int | None = None) -> dict | None:
    """The point of ``task`` (None: rows without a task), ``method``, ``knob`` and training ``seed``
    (None: a row of a run without repeated seeds, which records none), or None."""
    for p in points:
        if (p.get("task") == task and p["method"] == method and same_knob(p.get("knob"), knob)
                and p.get("seed") == seed):
            return p
    return None


class PointStore:
    """A JSON file of result rows (``{rows_key: [...]}``, plus a header), one row per (task,
    method, knob). A row is added as soon as it is done and the file rewritten atomically, so a
    killed experiment never truncates it and a rerun skips what is there."""

    def __init__(self, path, rows_key: str = "points"):
        self.path = Path(path)
        self.rows_key = rows_key

    def read(self) -> dict:
        if not self.path.is_file():
            return {}
        return read_json(self.path, error=LTPError)

    def rows(self) -> list[dict]:
        return list(self.read().get(self.rows_key, []))

    def find(self, method: str, knob, task: str | None = None) -> dict | None:
        return find_point(self.rows(), task, method, knob)

    def add(self, row: dict, header: dict | None = None) -> None:
        """Add ``row``, replacing the one with the same task, method, knob and seed."""
        kept = [p for p in self.rows()
                if find_point([p], row.get("task"), row["method"], row.get("knob"), row.get("seed")) is None]
        runs.write_json_atomic(self.path, {**(header or {}), self.rows_key: kept + [row]})


def load_points(output_dir, name: str = "points.json") -> list[dict]:
    return PointStore(Path(output_dir) / name).rows()


def add_point(output_dir, point: dict, name: str = "points.json") -> None:
    PointStore(Path(output_dir) / name).add(point)
