"""``ltprune`` command line: thin wrappers over the library.

Errors caused by the user's input print one line and exit 2; an interrupted training run says
how to resume it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import LTPError
from .experiments.common import (add_data_options, add_ltp_options, add_stage_options, data_kwargs,
                                 ltp_from_args, stage_args_from_args)

TRAIN_STAGES = ("finetune", "soft", "hard")


def cmd_train(a) -> int:
    from .training import set_threads, train

    set_threads(a.threads)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    results = train(a.model, a.task, a.output_dir, stages=stages, ltp=ltp_from_args(a),
                    stage_args=stage_args_from_args(a, [s for s in stages if s in TRAIN_STAGES]),
                    data_kwargs=data_kwargs(a), resume=a.resume, max_length=a.max_length, quantization=a)
    for stage, r in results.items():
        bops = f"  relative BOPs {r['relative_bops']:.3f}" if "relative_bops" in r else ""
        print(f"{stage:>8}: dev {r['metric_name']} {r['metric']:.4f}  relative FLOPs {r['relative_flops']:.3f}{bops}"
              f"  -> {Path(a.output_dir) / stage / 'final'}")
    return 0


def cmd_eval(a) -> int:
    from .data import load_task, tokenize_task
    from .evaluation import evaluate, write_metrics
    from .patch import from_pretrained, set_mode
    from .training import load_tokenizer, set_threads

    set_threads(a.threads)
    if a.batch_size < 1:
        raise LTPError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.int8_full_range:
        from .quantization import check_full_range

        check_full_range()  # before any loading: this CPU's int8 kernels would saturate
    model = from_pretrained(a.model)
    if a.mode:
        set_mode(model, a.mode)
    if a.layout:
        from .patch import get_config, patch
        patch(model, get_config(model).replace(layout=a.layout))
    device = "auto"
    if a.int8 or a.int8_full_range:
        from .quantization import export_int8

        model, device = export_int8(model, full_range=a.int8_full_range), "cpu"  # int8 kernels run on the CPU
    tokenizer = load_tokenizer(a.model)
    dsd, info = load_task(a.task, **data_kwargs(a))
    if a.split not in dsd:
        raise LTPError(f"task {a.task!r} has no {a.split!r} split (has {', '.join(dsd)})")
    tokenized = tokenize_task(dsd, tokenizer, info, a.max_length)
    result = evaluate(model, tokenized[a.split], info, tokenizer.pad_token_id, a.batch_size, progress=True,
                      device=device)
    from .quantization import bops_for

    result.update(bops_for(model, result))  # BOPs beside FLOPs for a quantized checkpoint
    if device == "cpu":
        from .quantization import cpu_int8_kind

        result["int8"] = {"activations": "8-bit" if a.int8_full_range else "7-bit", "cpu_kernels": cpu_int8_kind()}
    path = write_metrics(result, a.output_dir)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    print(json.dumps(public, indent=1))
    print(f"wrote {path}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(a.output_dir, quick=a.quick, threads=a.threads, resume=a.resume)
    return 0


def cmd_predict(a) -> int:
    from .inference import predict
    from .patch import from_pretrained
    from .training import load_tokenizer, set_threads

    set_threads(a.threads)
    texts = list(a.texts)
    if a.file:
        try:
            texts += [line.rstrip("\n") for line in Path(a.file).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise LTPError(f"cannot read {a.file}: {exc}") from None
    model = from_pretrained(a.model, mode="hard")
    tokenizer = load_tokenizer(a.model)
    for item in predict(model, tokenizer, texts, a.batch_size, return_tokens=a.show_tokens):
        print(json.dumps(item, ensure_ascii=False))
    return 0


def cmd_bench(a) -> int:
    from .bench import markdown, run_bench

    parts = tuple(p.strip() for p in a.parts.split(","))
    results = run_bench(a.output_dir, model_path=a.model, task=a.task,
                        configs=tuple(c.strip() for c in a.configs.split(",")),
                        batch_sizes=tuple(int(b) for b in a.batch_sizes.split(",")), target=a.target_flops,
                        repeats=a.repeats, max_examples=a.max_examples, threads=a.threads, parts=parts,
                        device=a.device, dtypes=tuple(d.strip() for d in a.dtypes.split(",")), graphs=a.graphs)
    print(markdown(results))
    print(f"wrote {Path(a.output_dir) / 'bench.json'} and bench.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltprune", description="Learned Token Pruning for transformer encoders.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune / soft / hard stages on a task",
                       description="Train an LTP model: optional fine-tuning, then the soft and hard stages.")
    p.add_argument("--model", required=True, help="model folder, ltprune checkpoint or hub name (e.g. roberta-base)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--stages", default="soft,hard", help="comma list of finetune, soft, hard (default: soft,hard)")
    add_data_options(p)
    add_ltp_options(p)
    add_stage_options(p, TRAIN_STAGES)
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    from .quantization import add_train_options

    add_train_options(p.add_argument_group("quantization and distillation (paper §4.6)"))
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="metric + FLOPs of a checkpoint -> metrics.json",
                       description="Evaluate an ltprune checkpoint: task metric, GFLOPs, tokens per layer.")
    p.add_argument("--model", required=True, help="an ltprune checkpoint folder")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--mode", choices=["off", "hard"], help="override the checkpoint's mode")
    p.add_argument("--layout", choices=["packed", "padded"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int)
    p.add_argument("--int8", action="store_true",
                   help="evaluate the int8 export (dynamic int8 Linear kernels, 7-bit activations; CPU)")
    p.add_argument("--int8-full-range", action="store_true",
                   help="the int8 export with full 8-bit activations (needs an AVX512-VNNI CPU)")
    add_data_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="the offline demo: MiniLM-L6 + Rotten Tomatoes, baseline vs LTP",
                       description="Fine-tune the offline model on Rotten Tomatoes, run soft + hard LTP, "
                                   "evaluate both and measure their throughput; prints one table.")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("predict", help="classify texts with an ltprune checkpoint",
                       description="Classify raw texts (arguments and/or a file, one per line); JSON lines out.")
    p.add_argument("--model", required=True)
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a UTF-8 file with one text per line")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--show-tokens", action="store_true", help="list the tokens kept after each layer")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="throughput, decision-cost and overhead benchmarks -> bench.json + plot",
                       description="Benchmarks measured side by side (interleaved, median of repeats).")
    p.add_argument("--output-dir", default="runs/bench")
    p.add_argument("--model", help="an ltprune checkpoint (default: the offline model, thresholds calibrated "
                                    "to --target-flops)")
    p.add_argument("--task", default="rotten_tomatoes", help="dev set to time on")
    p.add_argument("--configs", default="minilm",
                   help="without --model: minilm (offline weights), bert-base (random init, BERT-base size) "
                        "and/or vit-base (random init ViT-B/16, 128 random 224x224 images)")
    p.add_argument("--batch-sizes", default="1,8,32,64")
    p.add_argument("--target-flops", type=float, default=0.5, help="relative FLOPs to calibrate thresholds to")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-examples", type=int, help="limit the dev set (or the number of random images)")
    p.add_argument("--parts", default="throughput,decision,overhead,probs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", help="run the throughput and overhead parts here (e.g. cuda; default: the CPU)")
    p.add_argument("--dtypes", default="fp32", help="comma list of fp32, bf16, fp16 for the throughput part")
    p.add_argument("--graphs", action="store_true",
                   help="also time stock and LTP through the same CUDA-graph runner (needs --device cuda)")
    p.set_defaults(func=cmd_bench)

    from .experiments import register as register_experiments
    from .qa import register as register_qa
    from .report import register as register_report
    from .sweep import register as register_sweep

    register_sweep(sub)
    register_experiments(sub)
    register_qa(sub)
    register_report(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        import transformers

        transformers.logging.set_verbosity_error()
    try:
        return args.func(args)
    except LTPError as exc:
        print(f"ltprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ltprune: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
