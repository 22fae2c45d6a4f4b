"""What the experiments share: a stage that runs once and is reused, and LAT's one LengthDrop model.

A stage's folder holds ``final/`` and its ``DONE`` file once it has finished; until then its
last complete checkpoint, from which a rerun resumes. Every experiment (sweep, robustness, qa)
runs its stages through :func:`cached_stage`, so an interrupted experiment is resumed by
running it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import checkpoint
from ..baselines import lat
from ..data import subsample
from ..names import DONE
from ..patch import set_mode
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
