"""Command-line options shared by the commands (train, sweep, the experiments, qa) and their
translation into the library's dataclasses (``LTPConfig``, ``StageArgs``), so every command spells
the LTP settings, the stage hyperparameters and the data options the same way."""

from __future__ import annotations

from ..checks import parse_floats
from ..config import LTPConfig, StageArgs
from ..errors import ConfigError
from ..names import STAGE_NAMES


def add_data_options(p, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--task", required=required,
                   help="rotten_tomatoes, imdb, a GLUE task (sst2, qnli, ...) or a CSV/JSONL file or folder")
    g.add_argument("--data-dir", help="local GLUE-format files for a GLUE task")
    g.add_argument("--text-column")
    g.add_argument("--text-pair-column")
    g.add_argument("--label-column")
    g.add_argument("--max-train-examples", type=int)
    g.add_argument("--max-eval-examples", type=int)
    g.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: the model's)")
    g.add_argument("--seed", "--data-seed", dest="seed", type=int, default=0,
                   help="seed of the data: which rows of a single file go to train / validation / test, and "
                        "the --max-*-examples subsets (the training seed is --train-seed)")


def data_kwargs(a) -> dict:
    return dict(data_dir=a.data_dir, text_column=a.text_column, text_pair_column=a.text_pair_column,
                label_column=a.label_column, seed=a.seed, max_train_examples=a.max_train_examples,
                max_eval_examples=a.max_eval_examples)


def add_ltp_options(p, with_lambda: bool = True) -> None:
    g = p.add_argument_group("LTP")
    g.add_argument("--final-threshold", type=float, default=0.01,
                   help="threshold of the last layer (initial value; earlier layers start lower)")
    g.add_argument("--threshold-shape", metavar="W1,W2,...",
                   help="initial thresholds' shape over the layers, one weight per layer, scaled so the largest is "
                        "--final-threshold (e.g. 1,0,0,0,0,0: one pruning step after the first layer; default: "
                        "the linear ramp 0 -> final threshold, METHOD §3)")
    g.add_argument("--temperature", type=float, default=1e-3,
                   help="temperature T of the soft stage's mask sigmoid((score - threshold) / T); smaller is "
                        "closer to hard pruning")
    if with_lambda:
        g.add_argument("--lambda", dest="lambda_", type=float,
                       help="weight of L_reg, the pruning term of the soft stage's loss (more: fewer tokens; "
                            "default: 0.1, or 0 with a FLOPs target)")
    g.add_argument("--score-normalization", choices=["reference", "length"], default="reference")
    g.add_argument("--soft-mask", choices=["original", "cumulative"], default="original")
    g.add_argument("--layout", choices=["packed", "padded"], default="packed")


def add_target_options(p) -> None:
    """``--target-flops`` / ``--target-speedup`` (ltprune train, demo, sweep, embedding train): a FLOPs budget for
    the soft stage and the calibration before the hard stage, instead of searching lambda."""
    g = p.add_argument_group("FLOPs target (instead of searching lambda)")
    t = g.add_mutually_exclusive_group()
    t.add_argument("--target-flops", type=float, metavar="R",
                   help="relative FLOPs to land on, in (0, 1] (0.5 = 2x fewer): the soft stage's loss gets "
                        "lambda_flops * (expected relative FLOPs - R)^2 and the thresholds are calibrated to R on "
                        "training texts before the hard stage; --lambda then defaults to 0")
    t.add_argument("--target-speedup", type=float, metavar="X",
                   help="the same as --target-flops 1/X (2 = half the FLOPs)")
    g.add_argument("--lambda-flops", type=float, default=10.0,
                   help="weight of the FLOPs-target penalty in the soft stage")


def target_from_args(a) -> float | None:
    """The relative-FLOPs target of ``--target-flops`` / ``--target-speedup`` (None: no target)."""
    speedup = getattr(a, "target_speedup", None)
    if speedup is not None:
        if not speedup >= 1:
            raise ConfigError(f"--target-speedup must be >= 1, got {speedup}")
        return 1.0 / speedup
    return getattr(a, "target_flops", None)


def ltp_from_args(a) -> LTPConfig:
    target = target_from_args(a)
    lambda_ = getattr(a, "lambda_", None)
    if lambda_ is None:  # with a FLOPs target the budget sets the pruning; lambda stays available
        lambda_ = 0.0 if target is not None else 0.1
    return LTPConfig(final_threshold=a.final_threshold, temperature=a.temperature,
                     threshold_shape=parse_floats(getattr(a, "threshold_shape", None), "--threshold-shape"),
                     lambda_=lambda_, score_normalization=a.score_normalization,
                     soft_mask=a.soft_mask, layout=a.layout, target_flops=target,
                     lambda_flops=getattr(a, "lambda_flops", 10.0))


def add_stage_options(p, stages=STAGE_NAMES, batch_size: int = 32) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=2e-5, help="default learning rate of every stage")
    g.add_argument("--threshold-lr", type=float)
    g.add_argument("--epochs", type=float, default=1.0, help="default epochs of every stage")
    for stage in stages:
        g.add_argument(f"--{stage}-lr", type=float)
        g.add_argument(f"--{stage}-epochs", type=float)
    g.add_argument("--max-steps", type=int, default=-1,
                   help="stop each stage after this many steps (-1 or 0: train for --epochs)")
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--save-steps", type=int,
                   help="save a checkpoint and evaluate on dev every N steps (default: once per epoch)")
    g.add_argument("--logging-steps", type=int, default=50, help="log loss and thresholds every N steps")
    g.add_argument("--train-seed", type=int, default=42,
                   help="seed of the training: the new head's initial weights, dropout and batch order "
                        "(the data split's seed is --seed)")
    g.add_argument("--threads", type=int, help="torch threads per process, >= 1 (default: torch's choice)")


def add_quantization_options(group) -> None:
    """The quantization / distillation options of ``ltprune train`` (an argparse group): here,
    torch-free, so that building the CLI does not import torch."""
    group.add_argument("--quantize", type=int, metavar="BITS",
                       help="quantization-aware training: fake-quantize Linear weights to BITS (paper: 8)")
    group.add_argument("--quantize-activations", type=int, metavar="BITS",
                       help="also fake-quantize the Linear inputs to BITS (EMA range; default: off)")
    group.add_argument("--quantize-granularity", choices=["per-channel", "per-tensor"], default="per-channel",
                       help="one weight scale per output channel or per matrix")
    group.add_argument("--distill-from", metavar="PATH",
                       help="teacher: the unpruned full-precision model (fine-tuned checkpoint) to distill from")
    group.add_argument("--distill-alpha", type=float, default=0.5,
                       help="loss = (1 - alpha) * task + alpha * (KD logits + embedding MSE)")
    group.add_argument("--distill-temperature", type=float, default=2.0, help="KD softmax temperature")


def stage_args_from_args(a, stages=STAGE_NAMES) -> dict:
    return {s: StageArgs(learning_rate=getattr(a, f"{s}_lr", None) or a.lr, threshold_lr=a.threshold_lr,
                         epochs=getattr(a, f"{s}_epochs", None) or a.epochs, max_steps=a.max_steps,
                         batch_size=a.batch_size, eval_batch_size=a.eval_batch_size, save_steps=a.save_steps,
                         logging_steps=a.logging_steps, seed=a.train_seed,
                         max_eval_examples_during_training=a.max_eval_examples)
            for s in stages}


