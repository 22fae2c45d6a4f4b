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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import has_length

from .config import LTPConfig, StageArgs
from .errors import CheckpointError, ConfigError, LTPError
from .metrics import compute_metrics
from .patch import THRESHOLDS, from_pretrained, get_thresholds, is_patched, patch, set_mode
from .patch import reset_thresholds as reset

log = logging.getLogger("ltprune")

STAGES = ("finetune", "soft", "hard")
DONE = "ltprune_stage.json"


class LTPTrainer(Trainer):
    """Trainer whose optimizer gives the thresholds their own group: own lr, no weight decay."""

    def __init__(self, *args, threshold_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold_lr = threshold_lr
        # Our heads return a mean loss and ignore num_items_in_batch: without this, Trainer
        # takes the loss as already scaled and multiplies it by the world size under DDP.
        self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = {"decay": [], "no_decay": [], "thresholds": []}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            key = "thresholds" if name.endswith(THRESHOLDS) else ("decay" if name in decay else "no_decay")
            groups[key].append(param)
        param_groups = [
            {"params": groups["decay"], "weight_decay": self.args.weight_decay},
            {"params": groups["no_decay"], "weight_decay": 0.0},
        ]
        if groups["thresholds"]:
            param_groups.append({"params": groups["thresholds"], "weight_decay": 0.0,
                                 "lr": self.threshold_lr or self.args.learning_rate})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls([g for g in param_groups if g["params"]], **optimizer_kwargs)
        return self.optimizer


class StageProgress(ProgressCallback):
    """Progress that names its stage and logs read well in a file.

    On a terminal: Trainer's bars, labelled ``stage soft``. Elsewhere (a log file, a pipe): no
    bars at all (their cursor-up escapes would litter the file) and one plain line per stage
    event. Either way a log is one line of numbers (``stage soft: step 10/40 loss 0.6931 ...``),
    not Trainer's dict of strings. Only the main process prints."""

    def __init__(self, stage: str, bars: bool, keeps_best: bool = False):
        super().__init__()
        self.stage = stage
        self.bars = bars
        self.keeps_best = keeps_best

    def _say(self, text: str) -> None:
        line = f"stage {self.stage}: {text}"
        if self.training_bar is not None:
            self.training_bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.bars:
            self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc=f"stage {self.stage}")
        self.current_step = 0
        self._say(f"training, {state.max_steps} steps" + (f" from step {state.global_step}" if state.global_step else ""))

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.bars and state.is_world_process_zero and has_length(eval_dataloader):
            if self.prediction_bar is None:
                self.prediction_bar = tqdm(total=len(eval_dataloader), leave=False, dynamic_ncols=True,
                                           desc=f"stage {self.stage} eval")
            self.prediction_bar.update(1)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._say(f"saved checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self._say(format_logs(logs, state.global_step, state.max_steps))

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            best = f" (final/ is the best dev checkpoint, {Path(state.best_model_checkpoint).name})" \
                if self.keeps_best and state.best_model_checkpoint else ""
            self._say(f"done at step {state.global_step}{best}")
            if self.training_bar is not None:
                self.training_bar.close()
                self.training_bar = None


_SPEED_KEYS = ("runtime", "samples_per_second", "steps_per_second", "total_flos")


def format_logs(logs: dict, step: int = 0, max_steps: int = 0) -> str:
    """One line of numbers for a Trainer log (not its dict of strings): a training step
    (``step 10/40 loss 0.6931 learning_rate 2e-05 ...``), an evaluation (``eval at step 10:
    loss 0.6933 accuracy 0.5 ...``) or the end of training (``trained 40 steps: train_loss 0.69
    seconds 12.3``); timing rates are left out."""
    def number(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(number(v) for v in value) + "]"
        return str(value)

    if any(key.startswith("eval_") for key in logs):
        items = {k[len("eval_"):]: v for k, v in logs.items() if k.startswith("eval_")}
        head = f"eval at step {step}:"
    elif "train_runtime" in logs:
        items = {k: v for k, v in logs.items() if k == "train_loss"}
        items["seconds"] = logs["train_runtime"]
        head = f"trained {step} steps:"
    else:
        items = dict(logs)
        head = f"step {step}/{max_steps}"
    items = {k: v for k, v in items.items() if not k.endswith(_SPEED_KEYS)}
    return " ".join([head, *(f"{k} {number(v)}" for k, v in items.items())])


class ThresholdLogger(TrainerCallback):
    """Puts the current thresholds into the training logs (they are what the soft stage learns)."""

    def __init__(self, model):
        self.model = model

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and is_patched(self.model):
            logs["thresholds"] = [round(t, 6) for t in get_thresholds(self.model).detach().cpu().tolist()]


def load_model(name_or_path: str, num_labels: int, is_regression: bool, ltp: LTPConfig | None,
               reset_thresholds: bool = False, label_names=None, seed: int = 42):
    """A patched sequence-classification model from an ltprune checkpoint, a fine-tuned or a base
    transformers checkpoint (local path or hub name; a base gets a fresh classification head).

    An ltprune checkpoint brings the thresholds it was saved with; ``reset_thresholds`` puts
    them back to the initial schedule of ``ltp.final_threshold`` (what a new soft stage wants).
    ``label_names`` (the task's, ``TaskInfo.label_names``; numbered ``"0"``, ``"1"``... when None)
    become the config's ``id2label`` / ``label2id``, so every checkpoint saved from the model, and
    ``predict``, ``report`` and the pipeline, name the classes as the data did.
    ``seed`` seeds a new classification head's initial weights (in a forked RNG, so the caller's
    global RNG is untouched). Without it the head came from whatever state the global RNG was in,
    and two same-seed runs from a base checkpoint (``ltprune demo``) gave different models.
    """
    path = Path(name_or_path)
    config_file = path / "config.json"
    check_model_source(name_or_path)
    if config_file.is_file() and "ltp_config" in json.loads(config_file.read_text()):
        overrides = ltp.to_dict() if ltp is not None else {}
        overrides.pop("mode", None)
        model = from_pretrained(path, **overrides)
        saved = getattr(model.config, "num_labels", num_labels)
        if saved != num_labels:
            raise ConfigError(f"{path} has a {saved}-label head; the task has {num_labels} labels")
        if reset_thresholds:
            reset(model)
    else:
        if path.exists() and not config_file.is_file():
            raise CheckpointError(f"{path}: not a model folder (no config.json)")
        try:
            hf_config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError, KeyError) as exc:  # ValueError/KeyError: an unknown model_type
            raise CheckpointError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
        kwargs = dict(num_labels=num_labels)
        if is_regression:
            kwargs["problem_type"] = "regression"
        if getattr(hf_config, "num_labels", None) != num_labels:
            kwargs["ignore_mismatched_sizes"] = True
        try:
            with torch.random.fork_rng(devices=[]):  # the new head's init: seeded, global RNG untouched
                torch.manual_seed(seed)
                model = AutoModelForSequenceClassification.from_pretrained(name_or_path, use_safetensors=True,
                                                                           **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:  # no safetensors, a damaged or mismatched file
            raise CheckpointError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
        patch(model, ltp or LTPConfig())
    if not is_regression:
        name_labels(model, label_names or [str(i) for i in range(num_labels)])
    return model


def name_labels(model, names) -> None:
    """Write the class names into the model's config (saved with every checkpoint)."""
    names = [str(n) for n in names]
    if len(names) != model.config.num_labels:
        raise ConfigError(f"{len(names)} label names for a {model.config.num_labels}-label head")
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def check_model_source(name_or_path) -> None:
    """A local model folder that cannot be loaded, found before the data are read and with one
    line (transformers would raise a traceback from deep inside): no or unreadable
    ``config.json``, a ``model_type`` this transformers does not know, pickle-only weights
    (refused: ltprune loads safetensors only), a truncated or corrupt safetensors file."""
    from transformers import CONFIG_MAPPING

    path = Path(name_or_path)
    if not path.is_dir():
        return  # a hub name, or a missing path that load_tokenizer reports
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file}: unreadable JSON ({exc})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{config_file}: unknown model_type {model_type!r} (this transformers knows e.g. "
                              f"bert, roberta, distilbert, electra, xlm-roberta, vit)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f"; found only {', '.join(pickles)}" if pickles else ""
        raise CheckpointError(f"{path}: no .safetensors weights (ltprune loads safetensors only, never pickles"
                              f"{found})")
    broken = [w.name for w in weights if not _safetensors_ok(w)]
    if broken:
        raise CheckpointError(f"{path}: cannot load the weights: {', '.join(broken)} is truncated or corrupt")


def load_tokenizer(name_or_path: str):
    """The model's tokenizer, its ``model_max_length`` capped to the model's position embeddings
    (so longer texts are truncated, with a warning, instead of crashing the embeddings)."""
    from .inference import model_max_tokens

    name = str(name_or_path)
    if (Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") >= 2) \
            and not Path(name).exists():  # a path, not a hub name: say so, not "Repo id must be..."
        raise CheckpointError(f"{name}: no such model folder")
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise CheckpointError(f"{name}: not a model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:  # ValueError: tokenizer files missing or unusable
        raise CheckpointError(f"cannot load a tokenizer for {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    try:
        positions = model_max_tokens(AutoConfig.from_pretrained(name_or_path))
    except Exception:  # noqa: BLE001 - no readable model config: keep the tokenizer's own limit
        positions = None
    if positions is not None and (tokenizer.model_max_length or 0) > positions:
        tokenizer.model_max_length = positions
    return tokenizer


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


#: Files Trainer writes with ``torch.save`` (optimizer.pt, scheduler.pt, rng_state.pth,
#: training_args.bin...): zip archives, checked without unpickling them.
TORCH_STATE_SUFFIXES = (".pt", ".pth", ".bin")


def _zip_ok(file: Path) -> bool:
    """Whether a ``torch.save`` file is a whole zip archive whose every member matches its CRC:
    a truncated or overwritten optimizer state fails here, not inside ``Trainer`` on resume."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def _safetensors_ok(file: Path) -> bool:
    """Whether ``safe_open`` accepts the file: it checks the header and that the tensors it
    lists cover the file exactly, so a truncated file fails (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt"):
            return True
    except Exception:  # noqa: BLE001 - any failure to parse means the file cannot be resumed from
        return False


#: The mode each stage trains in, and whether it keeps its best dev checkpoint. ``lengthdrop``
#: is LAT's training (baselines/lat.py), which brings its own Trainer subclass.
STAGE_MODES = {"finetune": "off", "soft": "soft", "hard": "hard", "lengthdrop": "off"}
KEEP_BEST = ("hard", "lengthdrop")


def run_stage(model, tokenizer, train_ds, eval_ds, info, stage: str, output_dir, args: StageArgs,
              resume: bool = False, *, trainer_cls=None, trainer_kwargs: dict | None = None) -> dict:
    """Run one stage; the stage's final model is saved in ``output_dir/final``. Returns a summary."""
    if stage not in STAGE_MODES:
        raise ConfigError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")
    args.validate()
    output_dir = Path(output_dir)
    done_file = output_dir / "final" / DONE
    if resume and done_file.is_file():
        log.warning("stage %s already finished in %s: skipping it (loading its weights)", stage, output_dir)
        _load_weights(model, output_dir / "final")
        set_mode(model, STAGE_MODES[stage])
        return json.loads(done_file.read_text())

    set_mode(model, STAGE_MODES[stage])
    get_thresholds(model).requires_grad_(stage == "soft")
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

    def metrics_fn(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return compute_metrics(info.metric, logits, prediction.label_ids)

    trainer = (trainer_cls or LTPTrainer)(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=metrics_fn,
        threshold_lr=args.threshold_lr, callbacks=[ThresholdLogger(model)], **(trainer_kwargs or {}),
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
    if trainer.is_world_process_zero():
        final = output_dir / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        (final / DONE).write_text(json.dumps(summary, indent=1))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return summary


def _load_weights(model, folder: Path) -> None:
    """Load a finished stage's safetensors weights (thresholds included) into ``model``."""
    from safetensors.torch import load_file

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


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (two processes on two cores must not each take two).
    ``None``: torch's default (under torchrun, the cores shared out among the local ranks)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1 (or None: torch's default), got {threads!r}")
    if threads:
        torch.set_num_threads(threads)
    elif "LOCAL_WORLD_SIZE" in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))


def subsample(dataset, limit: int | None, seed: int = 0):
    if limit is None or len(dataset) <= limit:
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.select(sorted(rng.choice(len(dataset), size=limit, replace=False).tolist()))


__all__ = ["STAGES", "StageArgs", "LTPTrainer", "load_model", "load_tokenizer", "run_stage",
           "complete_checkpoints", "set_threads", "subsample", "LTPError"]


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
    ``quantization``: the options of ``quantization.add_train_options`` (quantization-aware
    training, distillation).
    """
    from contextlib import nullcontext

    from . import runs
    from .checks import parse_stages
    from .data import load_task, tokenize_task
    from .evaluation import evaluate, write_metrics
    from .patch import write_model_card

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
        dsd, info = load_task(task, **(data_kwargs or {}))
        if "validation" not in dsd:
            raise LTPError(f"task {task!r} has no validation split to evaluate on")
        record["data_fingerprint"] = runs.data_fingerprint(dsd)
        if resume:
            runs.check_same_run(output_dir, record, keys=["data_fingerprint"])
        tokenizer = load_tokenizer(model_name_or_path)
        tokenized = tokenize_task(dsd, tokenizer, info, max_length)
        model = load_model(model_name_or_path, info.num_labels, info.is_regression, ltp,
                           reset_thresholds="soft" in stages, label_names=info.label_names,
                           seed=stage_args[stages[0]].seed)
        trainer_cls = trainer_kwargs = None
        if quantization is not None:
            from .quantization import prepare_quantized_training

            trainer_cls, trainer_kwargs = prepare_quantized_training(model, quantization)
        if main:  # everything checked and loaded: only now is an earlier run replaced
            if overwrite and previous:
                runs.remove_previous_run(output_dir)
            runs.write_record(output_dir, record)
        results = {}
        for stage in stages:
            args = stage_args[stage]
            eval_ds = subsample(tokenized["validation"], args.max_eval_examples_during_training, args.seed)
            run_stage(model, tokenizer, tokenized["train"], eval_ds, info, stage, output_dir / stage, args, resume,
                      trainer_cls=trainer_cls, trainer_kwargs=trainer_kwargs)
            if stage == "finetune":
                set_mode(model, "off")
            result = evaluate(model, tokenized["validation"], info, tokenizer.pad_token_id)
            if quantization is not None:
                from .quantization import bops_for

                result.update(bops_for(model, result))
            results[stage] = {k: v for k, v in result.items() if not k.startswith("_")}
            if main:
                write_metrics(result, output_dir / stage)
                write_model_card(model, output_dir / stage / "final", result)
                runs.update_summary(output_dir, stage, results[stage], task=record["task"],
                                    model=record["model"], stages=stages)
            log.warning("stage %s: dev %s %.4f, relative FLOPs %.3f", stage, info.metric, result["metric"],
                        result["relative_flops"])
    return results
