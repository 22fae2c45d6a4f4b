"""``ltprune`` command line: thin wrappers over the library.

Errors caused by the user's input print one line, ``ltprune: error: <message>``, as the last
line of stderr and exit 2; an interrupted training run says how to resume it. Arguments, paths
and output folders are checked before torch and transformers are imported (``import
ltprune.cli`` loads neither), so a typo costs a fraction of a second, not a model load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import warnings
from pathlib import Path

from ..checks import (TRAIN_STAGES, check_at_least, check_model_path, check_output_dir, check_threads,
                     parse_choices, parse_int_list, parse_length_config, parse_stages)
from ..errors import ConfigError, LTPError
from .embedding import add_embed_parser, add_parsers as add_embedding_parsers
from .experiments import register as register_experiments
from .options import (add_data_options, add_ltp_options, add_quantization_options, add_stage_options,
                      add_target_options, data_kwargs, ltp_from_args, stage_args_from_args, target_from_args)
from .qa import register_qa
from .report import register as register_report
from .sweep import register as register_sweep

BENCH_PARTS = ("throughput", "decision", "overhead", "probs", "int8")
BENCH_CONFIGS = ("minilm", "bert-base", "vit-base")
BENCH_DTYPES = ("fp32", "bf16", "fp16")
#: ``predict`` echoes at most this many characters of each input (a 5 MB line is not echoed).
ECHO_CHARS = 200


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_train(a) -> int:
    stages = parse_stages(a.stages)
    ltp, stage_args = ltp_from_args(a), stage_args_from_args(a, stages)
    if a.resume and a.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run or replace it")
    from ..training import set_threads, train

    set_threads(a.threads)
    results = train(a.model, a.task, a.output_dir, stages=stages, ltp=ltp, stage_args=stage_args,
                    data_kwargs=data_kwargs(a), resume=a.resume, max_length=a.max_length, quantization=a,
                    overwrite=a.overwrite)
    for stage, r in results.items():
        bops = f"  relative BOPs {r['relative_bops']:.3f}" if "relative_bops" in r else ""
        print(f"{stage:>8}: dev {r['metric_name']} {r['metric']:.4f}  relative FLOPs {r['relative_flops']:.3f}{bops}"
              f"  -> {Path(a.output_dir) / stage / 'final'}")
    print(f"summary: {Path(a.output_dir) / 'metrics.json'}")
    return 0


def cmd_eval(a) -> int:
    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {a.batch_size}")
    length_config = parse_length_config(a.length_config) if a.length_config else None
    if length_config is not None and a.mode == "off":
        raise ConfigError("--length-config prunes tokens; it cannot be combined with --mode off")
    from ..checkpoint import from_pretrained
    from ..data import load_task, tokenize_task
    from ..evaluation import evaluate, write_metrics
    from ..patch import configure, set_mode
    from ..training import load_tokenizer, set_threads

    set_threads(a.threads)
    model = from_pretrained(a.model)
    if a.mode:
        set_mode(model, a.mode)
    if a.layout:
        configure(model, layout=a.layout)
    if length_config is not None:  # a LAT length configuration (absolute lengths) or top-k keep ratios
        method = "length" if "keep_lengths" in length_config else "topk"
        configure(model, method=method, mode="hard", keep_lengths=length_config.get("keep_lengths"),
                  keep_ratios=length_config.get("keep_ratios"))
    device = "auto"
    if a.int8 or a.int8_full_range:
        from ..int8 import export_int8

        model, device = export_int8(model, full_range=a.int8_full_range), "cpu"  # int8 kernels run on the CPU
    tokenizer = load_tokenizer(a.model)
    dsd, info = load_task(a.task, **data_kwargs(a))
    if a.split not in dsd:
        raise LTPError(f"task {a.task!r} has no {a.split!r} split (has {', '.join(dsd)})")
    # only the split that is scored is tokenized (not the whole training set)
    tokenized = tokenize_task(type(dsd)({a.split: dsd[a.split]}), tokenizer, info, a.max_length)
    result = evaluate(model, tokenized[a.split], info, tokenizer.pad_token_id, a.batch_size,
                      progress=sys.stderr.isatty(), device=device)
    from ..quantization import bops_for

    result.update(bops_for(model, result))  # BOPs beside FLOPs for a quantized checkpoint
    if device == "cpu":
        from ..int8 import cpu_int8_kind

        result["int8"] = {"activations": "8-bit" if a.int8_full_range else "7-bit", "cpu_kernels": cpu_int8_kind()}
    if length_config is not None:
        result["length_config"] = length_config
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    print(json.dumps(public, indent=1), flush=True)  # printed first: a failed write cannot lose them
    try:
        path = write_metrics(result, a.output_dir)
    except OSError as exc:
        raise LTPError(f"cannot write the metrics into {a.output_dir} ({exc.strerror or exc}); they are printed "
                       f"above") from None
    print(f"wrote {path}")
    return 0


def check_eval_machine(a) -> None:
    """What no input can fix comes first: this CPU's int8 kernels would saturate."""
    if a.int8_full_range:
        from ..int8 import check_full_range

        check_full_range()


def cmd_demo(a) -> int:
    from ..demo import run_demo

    target = None if a.no_target else target_from_args(a)
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"--target-flops must lie in (0, 1], got {target}")
    run_demo(a.output_dir, quick=a.quick, threads=a.threads, resume=a.resume, target_flops=target)
    return 0


def read_texts_file(file) -> list[str]:
    """One text per line; blank lines are skipped with one warning naming them (1-based)."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LTPError(f"cannot read {file}: {exc}") from None
    blank = [n for n, line in enumerate(lines, start=1) if not line.strip()]
    if blank:
        shown = ", ".join(map(str, blank[:10])) + (f" and {len(blank) - 10} more" if len(blank) > 10 else "")
        warnings.warn(f"{file}: skipped {len(blank)} blank line(s) (line {shown})", UserWarning, stacklevel=2)
    return [line for line in lines if line.strip()]


def _echo(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def cmd_predict(a) -> int:
    if a.batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {a.batch_size}")
    check_at_least(a.max_length, "--max-length", 2)
    check_at_least(a.echo_chars, "--echo-chars", 0)
    texts = list(a.texts)
    if a.file:
        texts += read_texts_file(a.file)
    if not texts:
        raise LTPError("no texts to predict")
    from ..inference import _check_texts, predict
    from ..checkpoint import from_pretrained
    from ..training import load_tokenizer, set_threads

    _check_texts(texts)  # an empty argument is refused before the model loads
    set_threads(a.threads)
    model = from_pretrained(a.model, mode="hard")
    tokenizer = load_tokenizer(a.model)
    for item in predict(model, tokenizer, texts, a.batch_size, return_tokens=a.show_tokens, max_length=a.max_length):
        if a.echo_chars == 0:
            item.pop("text")
        else:
            item["text"] = _echo(item["text"], a.echo_chars)
        print(json.dumps(item, ensure_ascii=False))
    return 0


def cmd_bench(a) -> int:
    parts = parse_choices(a.parts, "--parts", BENCH_PARTS)
    configs = parse_choices(a.configs, "--configs", BENCH_CONFIGS)
    dtypes = parse_choices(a.dtypes, "--dtypes", BENCH_DTYPES)
    batch_sizes = parse_int_list(a.batch_sizes, "--batch-sizes")
    check_at_least(a.repeats, "--repeats")
    check_at_least(a.max_examples, "--max-examples")
    if not 0 < a.target_flops <= 1:
        raise ConfigError(f"--target-flops must lie in (0, 1], got {a.target_flops}")
    from ..bench import markdown, run_bench

    results = run_bench(a.output_dir, model_path=a.model, task=a.task, configs=configs, batch_sizes=batch_sizes,
                        target=a.target_flops, repeats=a.repeats, max_examples=a.max_examples, threads=a.threads,
                        parts=parts, device=a.device, dtypes=dtypes, graphs=a.graphs)
    print(markdown(results))
    print(f"wrote {Path(a.output_dir) / 'bench.json'} and bench.png")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help``, except the uninformative None / False ones and
    where the help text already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in text or "default:" in text:
            return text
        if not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The CLI's parser class; sub-commands inherit it (and so the help formatter)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


#: Help for options that several commands share, filled in where a command gave none.
OPTION_HELP = {
    "output_dir": "folder for this command's outputs (checked before any work starts)",
    "model": "model folder, ltprune checkpoint or hub name",
    "batch_size": "examples per batch",
    "eval_batch_size": "examples per evaluation batch",
    "threads": "torch threads per process, >= 1 (default: torch's choice)",
    "data_dir": "local GLUE-format files for a GLUE task",
    "text_column": "column holding the text (default: text, else sentence, else sentence1)",
    "text_pair_column": "column holding a pair's second text (default: text_pair or sentence2 when present)",
    "label_column": "column holding the label (default: label)",
    "max_train_examples": "use at most this many training examples (a seeded, stratified subset)",
    "max_eval_examples": "use at most this many validation / test examples",
    "max_length": "truncate inputs to this many tokens (default: the model's limit)",
    "seed": "seed of the data: the train/validation/test split of a single file and the subsets "
            "(not the training seed: see --train-seed)",
    "train_seed": "seed of the training: new head's initial weights, dropout and batch order",
    "final_threshold": "threshold of the last layer (initial value; earlier layers get smaller ones)",
    "temperature": "temperature T of the soft stage's mask sigmoid((score - threshold) / T); smaller is harder",
    "score_normalization": "divide attention scores by H * 128 (reference: the original code's scale) "
                           "or by H * n (length: the paper's Eq. 7)",
    "soft_mask": "soft-stage mask of a layer: its own sigmoid (original) or the product over layers so far "
                 "(cumulative)",
    "layout": "hard-mode layout: packed (all alive tokens in one matrix) or padded (re-padded per layer)",
    "threshold_lr": "learning rate of the thresholds (default: the stage's learning rate)",
    "save_steps": "save a checkpoint and evaluate on dev every N steps (default: once per epoch)",
    "logging_steps": "log loss and thresholds every N steps",
    "resume": "continue an interrupted run from its last complete checkpoint",
    "mode": "override the checkpoint's mode",
    "method": "which method(s) to run",
    "length_drop_prob": "LAT: LengthDrop probability while training",
    "population": "LAT: population of the evolutionary search",
    "generations": "LAT: generations of the evolutionary search",
    "search_seed": "LAT: seed of the evolutionary search",
    "num_examples": "dev texts to show with their pruned tokens",
    "title": "page title (default: the run folder's name)",
    "bins": "histogram bins",
    "run_dir": "a run folder (train, sweep, experiment or bench output)",
    "eval_dirs": "folders written by ltprune eval (with examples.jsonl)",
    "texts": "texts to classify",
    "stages": "comma list of stages, in this order",
    "table": "only print the table and plot from OUTPUT_DIR (no training)",
    "verbose": "show library logs",
    "command": "what to do (ltprune COMMAND -h lists its options)",
    "experiment": "which experiment (ltprune experiment NAME -h lists its options)",
    "qa_command": "train or eval (ltprune qa train -h lists its options)",
}


def _stage_help(dest: str) -> str | None:
    for suffix, what in (("_lr", "learning rate"), ("_epochs", "epochs"), ("_max_steps", "max steps")):
        if dest.endswith(suffix) and dest[: -len(suffix)] in ("finetune", "soft", "hard", "lengthdrop"):
            flag = {"_lr": "--lr", "_epochs": "--epochs", "_max_steps": "--max-steps"}[suffix]
            return f"{what} of the {dest[: -len(suffix)]} stage (default: {flag})"
    return None


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def all_parsers(parser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command's parser, depth first."""
    out = [parser]
    for sub in dict.fromkeys(_subparsers(parser)):
        out += all_parsers(sub)
    return out


def _finish(parser) -> None:
    """Help for every option, and ``-v`` accepted after any sub-command too."""
    for index, p in enumerate(all_parsers(parser)):
        if index and not any("-v" in a.option_strings for a in p._actions):
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=OPTION_HELP["verbose"])
        for action in p._actions:
            if action.help is None:
                text = OPTION_HELP.get(action.dest) or _stage_help(action.dest)
                if text and action.default not in (None, False, argparse.SUPPRESS):
                    text = re.sub(r"\s*\(default: [^)]*\)", "", text)  # this command has its own default
                action.help = text


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ltprune", description="Learned Token Pruning for transformer encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune / soft / hard stages on a task",
                       description="Train an LTP model: optional fine-tuning, then the soft and hard stages. "
                                   "OUTPUT_DIR/<stage>/final is each stage's model; hard/final is the hard "
                                   "stage's best dev checkpoint (load_best_model_at_end), not its last step. "
                                   "OUTPUT_DIR/metrics.json sums the run up; OUTPUT_DIR/ltprune_run.json records "
                                   "what it was started with.")
    p.add_argument("--model", required=True, help="model folder, ltprune checkpoint or hub name (e.g. roberta-base)")
    p.add_argument("--output-dir", required=True, help="run folder: <stage>/final, <stage>/metrics.json, "
                                                       "metrics.json, ltprune_run.json")
    p.add_argument("--stages", default="soft,hard",
                   help="comma list of finetune, soft, hard, in this order; hard/final keeps the best dev "
                        "checkpoint, not the last step")
    add_data_options(p)
    add_ltp_options(p)
    add_target_options(p)
    add_stage_options(p, TRAIN_STAGES)
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last complete checkpoint (refused if the "
                        "folder's run was started with other settings)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT_DIR (its stage folders and records)")
    add_quantization_options(p.add_argument_group("quantization and distillation (paper §4.6)"))
    p.set_defaults(func=cmd_train, model_kind="model folder")

    p = sub.add_parser("eval", help="metric + FLOPs of a checkpoint -> metrics.json",
                       description="Evaluate an ltprune checkpoint: task metric, GFLOPs, tokens per layer.")
    p.add_argument("--model", required=True, help="an ltprune checkpoint folder")
    p.add_argument("--output-dir", required=True, help="where metrics.json and examples.jsonl go")
    p.add_argument("--split", default="validation", help="the split to evaluate: train, validation or test")
    p.add_argument("--mode", choices=["off", "hard"], help="override the checkpoint's mode")
    p.add_argument("--layout", choices=["packed", "padded"], help="override the checkpoint's hard-mode layout")
    p.add_argument("--length-config", metavar="CONFIG",
                   help="evaluate with a LAT length configuration instead of the thresholds: JSON "
                        "({\"keep_lengths\": [...]} or {\"keep_ratios\": [...]}), a JSON file (a LAT search.json: "
                        "its best), or a comma list (integers: tokens kept per layer; fractions: keep ratios)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int)
    p.add_argument("--int8", action="store_true",
                   help="evaluate the int8 export (dynamic int8 Linear kernels, 7-bit activations; CPU)")
    p.add_argument("--int8-full-range", action="store_true",
                   help="the int8 export with full 8-bit activations (needs an AVX512-VNNI CPU)")
    add_data_options(p)
    p.set_defaults(func=cmd_eval, model_kind="checkpoint folder", machine_check=check_eval_machine)

    p = sub.add_parser("demo", help="the offline demo: MiniLM-L6 + Rotten Tomatoes, baseline vs LTP",
                       description="Fine-tune the offline model on Rotten Tomatoes, run soft + hard LTP, "
                                   "evaluate both and measure their throughput; prints one table.")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="skip the stages that already finished")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--target-flops", type=float, default=0.5, metavar="R",
                   help="relative FLOPs the pruned model is to land on (0.5 = 2x fewer)")
    t.add_argument("--target-speedup", type=float, metavar="X", help="the same as --target-flops 1/X")
    t.add_argument("--no-target", action="store_true", help="the lambda recipe (lambda 0.1), no FLOPs target")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("predict", help="classify texts with an ltprune checkpoint",
                       description="Classify raw texts (arguments and/or a file, one per line); JSON lines out.")
    p.add_argument("--model", required=True, help="an ltprune checkpoint folder")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a UTF-8 file with one text per line (blank lines are skipped)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, help="truncate inputs to this many tokens (default: the model's limit)")
    p.add_argument("--echo-chars", type=int, default=ECHO_CHARS,
                   help="echo at most this many characters of each text in the output's \"text\" field "
                        "(0: leave the field out)")
    p.add_argument("--show-tokens", action="store_true", help="list the tokens kept after each layer")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_predict, model_kind="checkpoint folder")

    # the embedding task's commands (cli/embedding.py)
    add_embedding_parsers(sub)
    add_embed_parser(sub)

    p = sub.add_parser("bench", help="throughput, decision-cost and overhead benchmarks -> bench.json + plot",
                       description="Benchmarks measured side by side (interleaved, median of repeats).")
    p.add_argument("--output-dir", default="runs/bench")
    p.add_argument("--model", help="an ltprune checkpoint (default: the offline model, thresholds calibrated "
                                    "to --target-flops)")
    p.add_argument("--task", default="rotten_tomatoes", help="dev set to time on")
    p.add_argument("--configs", default="minilm",
                   help="without --model: minilm (offline weights), bert-base (random init, BERT-base size) "
                        "and/or vit-base (random init ViT-B/16, 128 random 224x224 images)")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="comma list of batch sizes, each >= 1")
    p.add_argument("--target-flops", type=float, default=0.5, help="relative FLOPs to calibrate thresholds to")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement, >= 1")
    p.add_argument("--max-examples", type=int, help="limit the dev set (or the number of random images)")
    p.add_argument("--parts", default="throughput,decision,overhead,probs",
                   help="comma list of " + ", ".join(BENCH_PARTS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", help="run the throughput and overhead parts here (e.g. cuda; default: the CPU)")
    p.add_argument("--dtypes", default="fp32", help="comma list of " + ", ".join(BENCH_DTYPES) + " for the throughput part")
    p.add_argument("--graphs", action="store_true",
                   help="also time stock and LTP through the same CUDA-graph runner (needs --device cuda)")
    p.set_defaults(func=cmd_bench, model_kind="checkpoint folder")

    register_sweep(sub)
    register_experiments(sub)
    register_qa(sub)
    register_report(sub)
    _finish(parser)
    return parser


# --------------------------------------------------------------------------------------------
# Checks before any work, and the output streams
# --------------------------------------------------------------------------------------------


def preflight(a) -> None:
    """What every command shares, checked before it imports anything heavy: output paths,
    thread counts, sizes and the model path (after a command's ``machine_check``, if any)."""
    if getattr(a, "machine_check", None):
        a.machine_check(a)
    for option, attr in (("--output-dir", "output_dir"),):
        if getattr(a, attr, None):
            check_output_dir(getattr(a, attr), option)
    if getattr(a, "output", None):  # report: an HTML file
        target = Path(a.output).expanduser()
        if target.is_dir():
            raise ConfigError(f"--output {target}: is a folder; give the HTML file's name")
        check_output_dir(target.parent, "--output")
    if hasattr(a, "threads"):
        check_threads(a.threads)
    for option, attr, minimum in (("--max-train-examples", "max_train_examples", 1),
                                  ("--max-eval-examples", "max_eval_examples", 1),
                                  ("--max-length", "max_length", 2)):
        check_at_least(getattr(a, attr, None), option, minimum)
    if getattr(a, "model", None):
        check_model_path(a.model, getattr(a, "model_kind", "model folder"))


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}\n"  # one line: no source file, no source line


def _quiet_libraries(verbose: bool) -> None:
    """Library logs only with -v; no progress bars when stderr is not a terminal. Set through
    the environment when the library is not imported yet (importing it would cost seconds)."""
    interactive = sys.stderr.isatty()
    if not verbose:
        if "transformers" in sys.modules:
            sys.modules["transformers"].logging.set_verbosity_error()
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if not interactive:  # transformers' "Loading weights" bar follows the hub's setting
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
        if "huggingface_hub" in sys.modules:
            sys.modules["huggingface_hub"].utils.disable_progress_bars()


def _flush_before_error() -> None:
    """Close live progress bars and flush both streams, so the error line is the last one."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            try:
                bar.close()
            except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
                pass
    sys.stdout.flush()
    sys.stderr.flush()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    _quiet_libraries(args.verbose)
    formatwarning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        preflight(args)
        return args.func(args)
    except LTPError as exc:
        _flush_before_error()
        message = str(exc).replace("\r", " ").replace("\n", " ")  # one line, whatever a library said
        print(f"ltprune: error: {message}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        _flush_before_error()
        print("ltprune: interrupted; rerun the same command with --resume to continue", file=sys.stderr, flush=True)
        return 130
    finally:
        warnings.formatwarning = formatwarning

