"""``LTPTrainer`` (thresholds in their own optimizer group) and the callbacks every stage uses:
one-line progress named after the stage, and the thresholds in the training logs."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import has_length

from .patch import THRESHOLDS, get_thresholds, is_patched


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
