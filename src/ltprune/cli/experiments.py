"""``ltprune experiment {robustness,lengths,per-example,qa}``: the paper's experiments (METHOD §8).

Building these parsers imports nothing heavy; each command imports its experiment when it runs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, LTPError
from ..checks import parse_floats
from .options import add_data_options, add_ltp_options, add_stage_options, data_kwargs, ltp_from_args, stage_args_from_args
from .qa import register_qa_experiment


def register(subparsers) -> None:
    """Add ``ltprune experiment {robustness,lengths,per-example,qa}`` to the CLI's subparsers."""
    p = subparsers.add_parser("experiment", help="the paper's experiments: robustness, lengths, per-example, qa",
                              description="Reproduce the paper's experiments (METHOD.md section 8).")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    register_robustness(sub)
    register_lengths(sub)
    register_per_example(sub)
    register_qa_experiment(sub)


def register_robustness(subparsers) -> None:
    """Add ``robustness`` (Table 3) to the subparsers of ``ltprune experiment``."""
    p = subparsers.add_parser(
        "robustness", help="Table 3: train on inputs shorter than the dev median, evaluate by length bucket",
        description="Train LTP (one model per lambda) and LAT (one LengthDrop model, one search per lambda, "
                    "matched to LTP's FLOPs on the ~Q2 bucket) on the training examples no longer than the "
                    "dev median, then evaluate each on the dev buckets ~Q2, Q2~Q3 and Q3~. Writes "
                    "robustness.json, robustness.md and robustness.png; rerun to resume.")
    p.add_argument("--model", help="checkpoint fine-tuned on the task (or a base one with --finetune)")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune --model first, on the short training examples only")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lambdas", default="0.1", help="comma list; one LTP and one matched LAT model each")
    p.add_argument("--methods", default="ltp,lat", help="ltp or ltp,lat")
    p.add_argument("--table", action="store_true", help="only print the table from OUTPUT_DIR (no training)")
    add_data_options(p, required=False)
    add_ltp_options(p, with_lambda=False)
    add_stage_options(p)
    g = p.add_argument_group("LAT")
    g.add_argument("--length-drop-prob", type=float, default=0.2)
    g.add_argument("--population", type=int, default=12)
    g.add_argument("--generations", type=int, default=6)
    g.add_argument("--search-seed", type=int, default=0)
    p.set_defaults(func=cmd_robustness)


def cmd_robustness(a) -> int:
    from ..device import set_threads
    from ..experiments.robustness import RESULTS, _load, format_table3, run_robustness

    output_dir = Path(a.output_dir)
    if a.table:
        data = _load(output_dir)
        if not data:
            raise LTPError(f"{output_dir / RESULTS}: no results yet; run the experiment first")
    else:
        if not a.model or not a.task:
            raise ConfigError("ltprune experiment robustness needs --model and --task (or --table)")
        set_threads(a.threads)
        data = run_robustness(a.model, a.task, output_dir, parse_floats(a.lambdas, "--lambdas"),
                              methods=[m.strip() for m in a.methods.split(",") if m.strip()], finetune=a.finetune,
                              ltp=ltp_from_args(a), stage_args=stage_args_from_args(a), data_kwargs=data_kwargs(a),
                              max_length=a.max_length, eval_batch_size=a.eval_batch_size,
                              length_drop_prob=a.length_drop_prob,
                              search_kwargs={"population": a.population, "generations": a.generations,
                                             "seed": a.search_seed})
    print(format_table3(data))
    print(f"wrote {output_dir / RESULTS}, robustness.md and robustness.png")
    return 0


def register_lengths(subparsers) -> None:
    """Add ``lengths`` (Table 2, Fig. 1) to the subparsers of ``ltprune experiment``."""
    p = subparsers.add_parser(
        "lengths", help="Table 2 / Fig. 1: train vs dev token-length histograms and their KL divergence",
        description="Token lengths of the train and dev splits of each task, histograms on shared bins "
                    "(smoothed), KL(dev||train) with scipy's entropy; lengths.json, lengths.md, lengths.png.")
    p.add_argument("--task", required=True, action="append",
                   help="a task name or path (repeat, or a comma list): rotten_tomatoes, sst2, a CSV folder...")
    p.add_argument("--model", required=True, help="the tokenizer to count with (a model folder or hub name)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--bins", type=int, default=40)
    p.add_argument("--smoothing", type=float, default=0.5, help="pseudo-count added to every bin")
    p.add_argument("--data-dir", help="GLUE data root (holding SST-2/, QQP/, ...) for GLUE tasks")
    p.add_argument("--max-train-examples", type=int)
    p.add_argument("--max-eval-examples", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_lengths)


def cmd_lengths(a) -> int:
    from ..experiments.lengths import format_table2, length_distributions

    tasks = [t.strip() for item in a.task for t in item.split(",") if t.strip()]
    data = length_distributions(tasks, a.model, a.output_dir,
                                data_kwargs=dict(data_dir=a.data_dir, seed=a.seed,
                                                 max_train_examples=a.max_train_examples,
                                                 max_eval_examples=a.max_eval_examples),
                                bins=a.bins, smoothing=a.smoothing)
    print(format_table2(data))
    print(f"wrote {Path(a.output_dir) / 'lengths.json'}, lengths.md and lengths.png")
    return 0


def register_per_example(subparsers) -> None:
    """Add ``per-example`` (Fig. A.2, A.3) to the subparsers of ``ltprune experiment``."""
    p = subparsers.add_parser(
        "per-example", help="Fig. A.2 / A.3: tokens kept per layer vs length; length of correct vs wrong",
        description="Plots from the examples.jsonl of one or more eval folders (ltprune eval writes it): "
                    "kept_per_layer.png, length_correct.png and per_example.json.")
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR")
    p.add_argument("--output-dir", help="where to write (default: the first EVAL_DIR)")
    p.add_argument("--labels", help="comma list of panel names, one per EVAL_DIR")
    p.set_defaults(func=cmd_per_example)


def cmd_per_example(a) -> int:
    from ..experiments.per_example import per_example_report

    labels = [s.strip() for s in a.labels.split(",")] if a.labels else None
    data = per_example_report(a.eval_dirs, a.output_dir, labels)
    for name, run in data["runs"].items():
        k, b = run["kept_per_layer"], run["length_bias"]
        line = f"{name}: {k['num_examples']} examples, mean length {k['mean_length']}, mean tokens per layer " \
               f"{k['mean_tokens_per_layer']}"
        if b is not None:
            line += f"; mean length correct {b['mean_length_correct']} vs wrong {b['mean_length_wrong']} " \
                    f"(Mann-Whitney p {b['mannwhitney_p']})"
        print(line)
    out = Path(a.output_dir or a.eval_dirs[0])
    print(f"wrote {out / 'kept_per_layer.png'}, length_correct.png and per_example.json")
    return 0
