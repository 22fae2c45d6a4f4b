"""The two-stage LTP recipe (METHOD §4) on ``transformers.Trainer``.

Stages, each a plain Trainer run on the patched model, each in its own folder:

* ``finetune``: ordinary fine-tuning (pruning off, thresholds frozen), when starting from a
  base checkpoint;
* ``soft``: weights and thresholds learn; ``outputs.loss`` already holds task + lambda * L_reg
  (see ``LTPConfig.add_reg_to_loss``), the thresholds sit in their own optimizer group;
* ``hard``: thresholds frozen, tokens removed for real; the best dev checkpoint is kept.

Interrupted runs resume from their last *complete* checkpoint (one whose trainer state, written
last, exists), so a kill during a save never resumes from a half-written folder. The same code
runs under ``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import data, evaluation, loading, runs
from .calibration import HoldFlopsTarget, calibrate_on, calibration_batches
from .checkpoint import TORCH_STATE_SUFFIXES, _safetensors_ok, _zip_ok
from .checks import parse_stages
# load_model, load_tokenizer, set_threads, subsample, LTPTrainer: imported here for the stages, and
# still importable from ``ltprune.training`` (their home until 0.1).
from .config import LTPConfig, StageArgs
from .data import subsample
from .device import set_threads
from .distill import prepare_quantized_training
from .errors import CheckpointError, ConfigError, LTPError, read_json
from .loading import check_model_source, load_model, load_tokenizer
from .names import DONE, KEEP_BEST, STAGE_MODES, STAGES  # noqa: F401 (DONE, STAGES: re-exported)
from .patch import get_config, get_thresholds, is_patched, set_mode, write_model_card
from .quantization import bops_for
from .tasks.classification import ClassificationTask, as_task
from .trainer import LTPTrainer, StageProgress, ThresholdLogger

log = logging.getLogger("ltprune")



def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose trainer state was written (the last file a save writes), whose
    safetensors files are whole and whose ``torch.save`` files (optimizer, scheduler, RNG state)
    are whole zip archives, oldest first. A damaged one (a disk filled up, a copy cut short) is
    skipped with a warning, so a resume never starts from broken weights or optimizer state."""
    found = []
    for path in Path(folder).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        weights = sorted(path.glob("*.safetensors"))
        if not (match and (path / "trainer_state.json").is_file() and weights):
            continue
        broken = [w.name for w in weights if not _safetensors_ok(w)]
        broken += [f.name for f in sorted(path.iterdir()) if f.suffix in TORCH_STATE_SUFFIXES and not _zip_ok(f)]
        if broken:
            log.warning("ignoring checkpoint %s: unreadable %s", path, ", ".join(broken))
            continue
        found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def run_stage(model, tokenizer, train_ds, eval_ds, info, stage: str, output_dir, args: StageArgs,
              resume: bool = False, *, trainer_cls=None, trainer_kwargs: dict | None = None) -> dict:
    """Run one stage; the stage's final model is saved in ``output_dir/final``. Returns a summary.

    ``info``: the task (``ltprune.tasks``: its Trainer and the dev metric that picks the hard
    stage's best checkpoint), or a ``TaskInfo`` (its classification task), or None when
    ``trainer_cls`` scores the dev data itself. ``trainer_cls`` / ``trainer_kwargs`` replace the
    task's Trainer (distillation, quantization-aware training, LAT's LengthDrop)."""
    if stage not in STAGE_MODES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    args.validate()
    output_dir = Path(output_dir)
    done_file = output_dir / "final" / DONE
    if resume and done_file.is_file():
        summary = read_json(done_file, hint=runs.AFRESH_HINT)  # before any work: a corrupt one is refused
        log.warning("stage %s already finished in %s: skipping it (loading its weights)", stage, output_dir)
        _load_weights(model, output_dir / "final")
        set_mode(model, STAGE_MODES[stage])
        return summary

    set_mode(model, STAGE_MODES[stage])
    get_thresholds(model).requires_grad_(stage == "soft")
    callbacks = [ThresholdLogger(model)]
    target = flops_target(model, stage)
    if target is not None:  # on target before the stage, and held there at each dev evaluation
        batches = calibration_batches(model, train_ds, tokenizer.pad_token_id, seed=args.seed,
                                      batch_size=args.eval_batch_size)
        calibration = calibrate_on(model, batches, target)
        log.warning("calibration to %.3f relative FLOPs: thresholds x %.4f -> %.4f on %d training texts",
                    target, calibration["factor"], calibration["relative_flops"], calibration["num_examples"])
        callbacks.append(HoldFlopsTarget(model, batches, target))
    on_gpu = torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    bars = sys.stderr.isatty()  # no bars in a log file: their cursor escapes litter it
    strategy = "steps" if args.save_steps else "epoch"
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=args.save_steps,
        save_steps=args.save_steps,
        save_total_limit=2,
        load_best_model_at_end=stage in KEEP_BEST,
        metric_for_best_model="metric",
        greater_is_better=True,
        logging_steps=args.logging_steps,
        report_to=[],
        seed=args.seed,
        data_seed=args.seed,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        ddp_backend="gloo" if distributed and not on_gpu else None,
        ddp_find_unused_parameters=False,
        use_cpu=not on_gpu,
        disable_tqdm=not bars,
    )

    task = as_task(info)
    trainer = (trainer_cls or (task.trainer_cls if task is not None else LTPTrainer))(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=task.trainer_metrics(eval_ds) if task is not None else None,
        threshold_lr=args.threshold_lr, callbacks=callbacks, **(trainer_kwargs or {}),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress(stage, bars, keeps_best=stage in KEEP_BEST))
    checkpoint = None
    if resume:
        complete = complete_checkpoints(output_dir)
        if complete:
            checkpoint = str(complete[-1])
            log.warning("resuming stage %s from %s", stage, checkpoint)
        else:
            log.warning("--resume: no complete checkpoint in %s; stage %s starts from the beginning",
                        output_dir, stage)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    summary = {"stage": stage, "global_step": result.global_step, "training_loss": result.training_loss,
               "args": asdict(args), "best_checkpoint": trainer.state.best_model_checkpoint,
               "thresholds": get_thresholds(model).detach().cpu().tolist()}
    if target is not None:
        summary["calibration"] = {**calibration, "during_stage": callbacks[-1].history}
    if trainer.is_world_process_zero():
        if target is not None:
            runs.write_json_atomic(output_dir / "calibration.json", summary["calibration"])
        final = output_dir / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        (final / DONE).write_text(json.dumps(summary, indent=1))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def flops_target(model, stage: str) -> float | None:
    """The relative-FLOPs target a stage calibrates to: a hard stage of learned thresholds
    whose LTP config names one (``LTPConfig.target_flops``), else None."""
    if stage != "hard" or not is_patched(model):
        return None
    config = get_config(model)
    return config.target_flops if config.method == "threshold" else None


def _load_weights(model, folder: Path) -> None:
    """Load a finished stage's safetensors weights (thresholds included) into ``model``."""
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    if not state:
        raise CheckpointError(f"{folder}: finished stage without weights; remove the folder and rerun")
    # A quantization-aware model keeps its float weights under a parametrization; the saved
    # stage holds them baked under the plain name.
    own = set(model.state_dict())
    for key in list(state):
        param = key[: -len("weight")] + "parametrizations.weight.original"
        if key.endswith("weight") and key not in own and param in own:
            state[param] = state.pop(key)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise CheckpointError(f"{folder}: weights do not fit this model ({', '.join(unexpected[:3])}...)")


def train(model_name_or_path: str, task: str, output_dir, *, stages=("soft", "hard"),
          ltp: LTPConfig | None = None, stage_args: dict | None = None, data_kwargs: dict | None = None,
          resume: bool = False, max_length: int | None = None, quantization=None,
          overwrite: bool = False) -> dict:
    """The whole recipe: load data and model, run ``stages`` in order, evaluate each on dev.

    Each stage writes ``output_dir/<stage>/final`` (a loadable ltprune checkpoint; for ``hard``
    the best dev checkpoint, not the last step) and ``output_dir/<stage>/metrics.json``;
    ``output_dir/metrics.json`` sums the run up and ``output_dir/ltprune_run.json`` records what
    it was started with (see ``ltprune.runs``: a folder holding results needs ``resume`` or
    ``overwrite``, and ``resume`` continues only the same run). Returns {stage: dev metrics}.
    ``quantization``: the options of ``cli.options.add_quantization_options`` (quantization-aware
    training, distillation).
    """
    if isinstance(stages, str) or not stages:
        raise ConfigError(f"stages must be a non-empty list of {', '.join(STAGES)}; got {stages!r}")
    stages = parse_stages(",".join(stages))
    stage_args = {stage: (stage_args or {}).get(stage) or StageArgs() for stage in stages}
    output_dir = Path(output_dir)
    record = runs.make_record(task=task, model=model_name_or_path, stages=stages, ltp=ltp, stage_args=stage_args,
                              data_kwargs=data_kwargs, max_length=max_length, quantization=quantization)
    main = runs.is_main_process()
    with runs.RunLock(output_dir) if main else nullcontext():
        previous = runs.check_folder(output_dir, resume, overwrite)
        if resume:
            runs.check_same_run(output_dir, record)
        check_model_source(model_name_or_path)  # a broken model folder costs no data loading
        dsd, info = data.load_task(task, **(data_kwargs or {}))
        if "validation" not in dsd:
            raise LTPError(f"task {task!r} has no validation split to evaluate on")
        record["data_fingerprint"] = runs.data_fingerprint(dsd)
        if resume:
            runs.check_same_run(output_dir, record, keys=["data_fingerprint"])
        kind = ClassificationTask(info)  # the task behind the name: model, data, metric
        tokenizer = loading.load_tokenizer(model_name_or_path)
        tokenized = kind.prepare(dsd, tokenizer, max_length)
        model = kind.load_model(model_name_or_path, ltp, reset_thresholds="soft" in stages,
                                seed=stage_args[stages[0]].seed)
        trainer_cls = trainer_kwargs = None
        if quantization is not None:
            trainer_cls, trainer_kwargs = prepare_quantized_training(model, quantization)
        if main:  # everything checked and loaded: only now is an earlier run replaced
            if overwrite and previous:
                runs.remove_previous_run(output_dir)
            runs.write_record(output_dir, record)
        results = {}
        for stage in stages:
            args = stage_args[stage]
            eval_ds = subsample(tokenized["validation"], args.max_eval_examples_during_training, args.seed)
            summary = run_stage(model, tokenizer, tokenized["train"], eval_ds, kind, stage, output_dir / stage, args,
                                resume, trainer_cls=trainer_cls, trainer_kwargs=trainer_kwargs)
            if stage == "finetune":
                set_mode(model, "off")
            result = evaluation.evaluate(model, tokenized["validation"], kind, tokenizer.pad_token_id)
            if quantization is not None:
                result.update(bops_for(model, result))
            calibration = summary.get("calibration")
            if calibration is not None:  # flat scalars: they reach metrics.json and the model card
                result.update(target_flops=calibration["target_flops"], calibration_factor=calibration["factor"],
                              calibration_relative_flops=calibration["relative_flops"])
            results[stage] = {k: v for k, v in result.items() if not k.startswith("_")}
            if main:
                kind.write(result, output_dir / stage)
                write_model_card(model, output_dir / stage / "final", result)
                runs.update_summary(output_dir, stage, results[stage], task=record["task"],
                                    model=record["model"], stages=stages)
            log.warning("stage %s: dev %s %.4f, relative FLOPs %.3f", stage, info.metric, result["metric"],
                        result["relative_flops"])
    return results

