"""``ltprune qa {train,eval}`` and ``ltprune experiment qa`` (paper Fig. 5): extractive QA on SQuAD 2.0."""

from __future__ import annotations

import json
from pathlib import Path

from ..checks import parse_floats
from ..errors import ConfigError, LTPError
from ..names import STAGES as QA_STAGES
from .options import add_ltp_options, add_stage_options, ltp_from_args, stage_args_from_args


def add_qa_data_options(p) -> None:
    g = p.add_argument_group("SQuAD 2.0 data (default: rajpurkar/squad_v2 from the hub)")
    g.add_argument("--data-file", help="training questions, SQuAD v2 JSON")
    g.add_argument("--dev-file", help="dev questions, SQuAD v2 JSON")
    g.add_argument("--max-train-examples", type=int)
    g.add_argument("--max-eval-examples", type=int)
    g.add_argument("--max-length", type=int, default=384, help="tokens per feature (question + context window)")
    g.add_argument("--doc-stride", type=int, default=128, help="tokens shared by consecutive windows")


def _print_result(name: str, r: dict) -> None:
    print(f"{name:>9}: F1 {r['f1']:.4f}  EM {r['exact']:.4f}  HasAns F1 {r.get('HasAns_f1', float('nan')):.4f}  "
          f"NoAns F1 {r.get('NoAns_f1', float('nan')):.4f}  relative FLOPs {r['relative_flops']:.3f}")


def cmd_qa_train(a) -> int:
    from ..device import set_threads
    from ..qa import train_qa

    set_threads(a.threads)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    results = train_qa(a.model, a.output_dir, data_file=a.data_file, dev_file=a.dev_file, stages=stages,
                       ltp=ltp_from_args(a), stage_args=stage_args_from_args(a, QA_STAGES), max_length=a.max_length,
                       doc_stride=a.doc_stride, max_train_examples=a.max_train_examples,
                       max_eval_examples=a.max_eval_examples, resume=a.resume)
    for stage, r in results.items():
        _print_result(stage, r)
    return 0


def cmd_qa_eval(a) -> int:
    from ..device import set_threads
    from ..patch import set_mode
    from ..qa import _QAData, _summary, load_qa_model

    set_threads(a.threads)
    model = load_qa_model(a.model)
    if a.mode:
        set_mode(model, a.mode)
    data = _QAData(a.model, None, a.dev_file, a.max_length, a.doc_stride, None, a.max_eval_examples,
                   need_train=False)
    result = data.evaluate(model, a.output_dir, batch_size=a.batch_size, null_threshold=a.null_threshold)
    print(json.dumps(_summary(result), indent=1))
    print(f"wrote {Path(a.output_dir) / 'metrics.json'} and predictions.json")
    return 0


def register_qa(subparsers) -> None:
    """Add ``ltprune qa train`` and ``ltprune qa eval`` to the CLI's subparsers."""
    p = subparsers.add_parser("qa", help="question answering (SQuAD 2.0) with LTP: train / eval",
                              description="Extractive QA on SQuAD 2.0 (hub) or local SQuAD-v2 JSON files. "
                                          "No real QA data ships offline.")
    sub = p.add_subparsers(dest="qa_command", required=True)
    t = sub.add_parser("train", help="finetune / soft / hard stages on SQuAD 2.0",
                       description="Train a ...ForQuestionAnswering model with the LTP stages; each stage is "
                                   "evaluated on dev (exact, F1, HasAns, NoAns, FLOPs).")
    t.add_argument("--model", required=True, help="QA checkpoint (or a base one with --stages finetune,soft,hard)")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--stages", default="soft,hard")
    t.add_argument("--resume", action="store_true")
    add_qa_data_options(t)
    add_ltp_options(t)
    add_stage_options(t, QA_STAGES, batch_size=16)
    t.set_defaults(func=cmd_qa_train)
    e = sub.add_parser("eval", help="SQuAD v2 metrics + FLOPs of a QA checkpoint",
                       description="Writes metrics.json, predictions.json ({id: answer}) and examples.jsonl.")
    e.add_argument("--model", required=True)
    e.add_argument("--output-dir", required=True)
    e.add_argument("--mode", choices=["off", "hard"])
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--null-threshold", type=float, default=0.0, help="predict no answer when null - best > this")
    e.add_argument("--threads", type=int)
    add_qa_data_options(e)
    e.set_defaults(func=cmd_qa_eval)


def cmd_experiment_qa(a) -> int:
    from ..device import set_threads
    from ..qa import POINTS, _load_points, plot_qa, run_qa_experiment

    set_threads(a.threads)
    output_dir = Path(a.output_dir)
    if not a.plot_only:
        if not a.model:
            raise ConfigError("ltprune experiment qa needs --model (or --plot-only)")
        run_qa_experiment(a.model, output_dir, parse_floats(a.lambdas, "--lambdas"), finetune=a.finetune,
                          data_file=a.data_file, dev_file=a.dev_file, ltp=ltp_from_args(a),
                          stage_args=stage_args_from_args(a, QA_STAGES), max_length=a.max_length,
                          doc_stride=a.doc_stride, max_train_examples=a.max_train_examples,
                          max_eval_examples=a.max_eval_examples)
    points = sorted(_load_points(output_dir), key=lambda p: (p["method"] != "unpruned", -p["relative_flops"]))
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points yet; run the experiment first")
    for p in points:
        _print_result("unpruned" if p["knob"] is None else f"lam {p['knob']:g}", p)
    print(f"wrote {plot_qa(output_dir)}")
    return 0


def register_qa_experiment(subparsers) -> None:
    """Add ``qa`` (paper Fig. 5) to the subparsers of ``ltprune experiment``."""
    p = subparsers.add_parser(
        "qa", help="Fig. 5: SQuAD 2.0 F1 (overall, HasAns, NoAns) vs relative FLOPs over lambda",
        description="One LTP model per lambda (soft + hard stages) plus the unpruned model; points.json "
                    "(resumable: rerun to continue) and qa_curve.png. No real QA data ships offline: "
                    "without --data-file/--dev-file the data come from the hub (rajpurkar/squad_v2).")
    p.add_argument("--model", help="a QA checkpoint fine-tuned on SQuAD 2.0 (or a base one with --finetune)")
    p.add_argument("--finetune", action="store_true", help="fine-tune --model first (once, OUTPUT_DIR/finetune)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lambdas", default="0.01,0.05,0.1,0.2", help="comma list of lambda values")
    p.add_argument("--plot-only", action="store_true", help="only redraw qa_curve.png from points.json")
    add_qa_data_options(p)
    add_ltp_options(p, with_lambda=False)
    add_stage_options(p, QA_STAGES, batch_size=16)
    p.set_defaults(func=cmd_experiment_qa)
