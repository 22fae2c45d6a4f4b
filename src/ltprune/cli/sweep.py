"""``ltprune sweep``: accuracy-FLOPs curves, LTP vs top-k, manual thresholds and LAT (Fig. 4, Table 1)."""

from __future__ import annotations

import json
from pathlib import Path

from ..checks import parse_floats, parse_int_list
from ..config import LTPConfig, StageArgs
from ..errors import ConfigError, LTPError
from ..names import STAGE_NAMES, SWEEP_KNOBS, SWEEP_METHODS


def register(subparsers) -> None:
    """Add ``ltprune sweep`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep", help="accuracy-FLOPs curves: LTP vs top-k, manual thresholds and LAT",
        description="Train and evaluate one point per knob value (LTP: lambda; topk: final keep ratio; "
                    "manual: final threshold; lat: FLOPs target), append them to OUTPUT_DIR/points.json "
                    "(points already there are reused: rerun to resume), then plot curve.png and print "
                    "Table 1 (lowest FLOPs within 1 point of the unpruned model).")
    p.add_argument("--method", choices=[*SWEEP_METHODS, "all"], default="all")
    p.add_argument("--model", help="checkpoint fine-tuned on the task (or a base one with --finetune)")
    p.add_argument("--finetune", action="store_true", help="fine-tune --model first (once, in OUTPUT_DIR/finetune)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--knobs", help="comma list (one --method only; a list that starts with a negative "
                   "value needs '=': --knobs=-1,-3); defaults: " +
                   "; ".join(f"{m} {','.join(f'{v:g}' for v in SWEEP_KNOBS[m])}" for m in SWEEP_METHODS))
    p.add_argument("--seeds", help="comma list of training seeds: every point is trained once per seed "
                   "(<method>/<knob>/seed-<S>) and reported as mean, std and 95%% t-interval "
                   "(default: one run per point, seed --train-seed)")
    p.add_argument("--ltp-knob", choices=["lambda", "target"], default="lambda",
                   help="what LTP's knobs are: lambda (L_reg's weight) or a FLOPs target (relative FLOPs: "
                        "lambda 0, the soft stage's FLOPs penalty, thresholds calibrated on training texts "
                        "before the hard stage)")
    p.add_argument("--lambda-flops", type=float, default=10.0, help="with --ltp-knob target: the penalty's weight")
    p.add_argument("--equal-flops", help="comma list of relative FLOPs (e.g. 0.6,0.5): run every method at each "
                   "instead of --knobs (LTP: FLOPs target; top-k: keep ratio and manual: final threshold "
                   "calibrated to it on training texts; LAT: search target), the comparison at equal FLOPs")
    p.add_argument("--equal-budget", action="store_true",
                   help="top-k's and manual's hard stage and LAT's LengthDrop stage train as many epochs as "
                        "LTP's soft and hard stages together (default: each stage its own --<stage>-epochs)")
    p.add_argument("--table", action="store_true",
                   help="only print Table 1 and plot from OUTPUT_DIR/points.json (no training)")
    g = p.add_argument_group("data")
    g.add_argument("--task", help="rotten_tomatoes, imdb, a GLUE task or a CSV/JSONL file or folder")
    g.add_argument("--data-dir")
    g.add_argument("--text-column")
    g.add_argument("--text-pair-column")
    g.add_argument("--label-column")
    g.add_argument("--max-train-examples", type=int)
    g.add_argument("--max-eval-examples", type=int)
    g.add_argument("--max-length", type=int)
    g.add_argument("--seed", type=int, default=0, help="seed of the data splits")
    g = p.add_argument_group("LTP (lambda is the knob)")
    g.add_argument("--final-threshold", type=float, default=0.01)
    g.add_argument("--threshold-shape", metavar="W1,W2,...",
                   help="initial thresholds' shape over the layers, one weight per layer, scaled so the largest is "
                        "--final-threshold (e.g. 1,0,0,0,0,0: one pruning step after the first layer; default: "
                        "the linear ramp 0 -> final threshold, METHOD §3)")
    g.add_argument("--temperature", type=float, default=1e-3)
    g.add_argument("--score-normalization", choices=["reference", "length"], default="reference")
    g.add_argument("--soft-mask", choices=["original", "cumulative"], default="original")
    g.add_argument("--layout", choices=["packed", "padded"], default="packed")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=float, default=1.0, help="default epochs of every stage")
    g.add_argument("--lr", type=float, default=2e-5, help="default learning rate of every stage")
    for stage in STAGE_NAMES:
        g.add_argument(f"--{stage}-epochs", type=float)
        g.add_argument(f"--{stage}-lr", type=float)
        g.add_argument(f"--{stage}-max-steps", type=int)
    g.add_argument("--threshold-lr", type=float)
    g.add_argument("--max-steps", type=int, default=-1,
                   help="stop each stage after this many steps (-1 or 0: train for --epochs)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--eval-batch-size", type=int, default=64)
    g.add_argument("--save-steps", type=int)
    g.add_argument("--logging-steps", type=int, default=50)
    g.add_argument("--train-seed", type=int, default=42)
    g.add_argument("--threads", type=int, help="torch threads per process")
    g = p.add_argument_group("LAT")
    g.add_argument("--length-drop-prob", type=float, default=0.2)
    g.add_argument("--population", type=int, default=12)
    g.add_argument("--generations", type=int, default=6)
    g.add_argument("--search-seed", type=int, default=0)
    p.set_defaults(func=cmd_sweep)


def _first(value, default):
    return default if value is None else value


def cmd_sweep(a) -> int:
    from ..device import set_threads
    from ..sweep import POINTS, format_table1, load_points, parse_knobs, plot_sweep, run_sweep, table1

    output_dir = Path(a.output_dir)
    if not a.table:
        if not a.model or not a.task:
            raise ConfigError("ltprune sweep needs --model and --task (or --table to only report)")
        knobs = parse_knobs(a.knobs)
        if knobs is not None and a.method == "all":
            raise ConfigError("--knobs applies to one --method; with --method all each uses its defaults")
        if knobs is not None and a.equal_flops:
            raise ConfigError("give --knobs or --equal-flops, not both (--equal-flops sets every method's knobs)")
        equal_flops = parse_floats(a.equal_flops, "--equal-flops") if a.equal_flops else None
        set_threads(a.threads)
        stage_args = {
            stage: StageArgs(learning_rate=getattr(a, f"{stage}_lr") or a.lr, threshold_lr=a.threshold_lr,
                             epochs=getattr(a, f"{stage}_epochs") or a.epochs,
                             max_steps=_first(getattr(a, f"{stage}_max_steps"), a.max_steps),
                             batch_size=a.batch_size, eval_batch_size=a.eval_batch_size, save_steps=a.save_steps,
                             logging_steps=a.logging_steps, seed=a.train_seed,
                             max_eval_examples_during_training=a.max_eval_examples)
            for stage in STAGE_NAMES}
        ltp = LTPConfig(final_threshold=a.final_threshold, temperature=a.temperature,
                        threshold_shape=parse_floats(a.threshold_shape, "--threshold-shape"),
                        score_normalization=a.score_normalization, soft_mask=a.soft_mask, layout=a.layout)
        data_kwargs = dict(data_dir=a.data_dir, text_column=a.text_column, text_pair_column=a.text_pair_column,
                           label_column=a.label_column, seed=a.seed, max_train_examples=a.max_train_examples,
                           max_eval_examples=a.max_eval_examples)
        seeds = parse_int_list(a.seeds, "--seeds", minimum=0) if a.seeds else None
        if a.ltp_knob == "target" or equal_flops:
            ltp = ltp.replace(lambda_flops=a.lambda_flops)
        run_sweep(a.method, a.model, a.task, output_dir, knobs, finetune=a.finetune, ltp=ltp, seeds=seeds,
                  ltp_knob=a.ltp_knob, equal_flops=equal_flops, equal_budget=a.equal_budget,
                  stage_args=stage_args, data_kwargs=data_kwargs, max_length=a.max_length,
                  eval_batch_size=a.eval_batch_size, length_drop_prob=a.length_drop_prob,
                  search_kwargs={"population": a.population, "generations": a.generations, "seed": a.search_seed})
    points = load_points(output_dir)
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points yet; run the sweep first")
    table = table1(points)
    (output_dir / "table1.json").write_text(json.dumps(table, indent=1))
    print(format_table1(table))
    print(f"wrote {plot_sweep(output_dir)}")
    return 0
