"""The offline demo: all-MiniLM-L6-v2 on Rotten Tomatoes, unpruned vs LTP, one table.

fine-tune (baseline) -> soft stage -> hard stage -> dev accuracy and FLOPs of both -> throughput
of both on the dev set, measured side by side (stock ``sdpa`` model with length-sorted batches
vs the pruned model with packed batches), median of interleaved repeats.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from . import bench
from .config import LTPConfig
from .data import load_task, tokenize_task
from .evaluation import evaluate, write_metrics
from .patch import set_mode
from .resources import offline_model_dir
from .timing import time_variants
from .training import StageArgs, load_model, load_tokenizer, run_stage, set_threads, subsample

# Picked from the tuning runs recorded in docs/RESULTS.md (final threshold 0.01 removed too
# little, 0.02 too much; the hard stage needs two epochs to recover). With a FLOPs target (the
# default: 2x fewer) lambda is 0 and the target's penalty and calibration set the operating point,
# and the hard stage trains one epoch at twice the rate (TARGET_HARD: in both two-epoch runs with
# the target the best dev checkpoint was the first epoch's, and the second epoch took the demo past
# 12 minutes on 2 cores; one epoch at 2e-5 recovered 2.3 dev points less than the first epoch of
# two, whose rate decays more slowly; 4e-5 gave +1.6 of them back: docs/RESULTS.md, 3 seeds);
# ``target_flops=None`` runs the lambda recipe.
DEMO_LTP = dict(final_threshold=0.013, lambda_=0.1, temperature=1e-3)
DEMO_TARGET = 0.5
TARGET_HARD = dict(epochs=1, learning_rate=4e-5)
DEMO_STAGES = {
    "finetune": StageArgs(learning_rate=5e-5, epochs=2, batch_size=32, logging_steps=100),
    "soft": StageArgs(learning_rate=2e-5, epochs=1, batch_size=32, logging_steps=100),
    "hard": StageArgs(learning_rate=2e-5, epochs=2, batch_size=32, logging_steps=100),
}


def measure_throughput(models: dict, dataset, pad_id: int, batch_size: int, repeats: int) -> dict:
    """Sequences per second of each model over the whole split, batches length-sorted."""
    batches = bench.length_sorted_tensors(dataset, pad_id, batch_size)
    timings = time_variants({name: bench.timed_pass(m, batches) for name, m in models.items()}, repeats=repeats)
    return {name: {"seconds": t["median"], "min": t["min"], "max": t["max"],
                   "sequences_per_s": len(dataset) / t["median"]} for name, t in timings.items()}


def run_demo(output_dir="runs/demo", quick: bool = False, threads: int = 2, resume: bool = False,
             target_flops: float | None = DEMO_TARGET) -> dict:
    set_threads(threads)
    start = time.time()
    output_dir = Path(output_dir)
    model_dir = offline_model_dir()
    dsd, info = load_task("rotten_tomatoes", max_eval_examples=64 if quick else None,
                          max_train_examples=256 if quick else None)
    tokenizer = load_tokenizer(str(model_dir))
    data = tokenize_task(dsd, tokenizer, info)
    ltp = LTPConfig(**demo_ltp(target_flops))
    model = load_model(str(model_dir), info.num_labels, False, ltp, label_names=info.label_names,
                       seed=DEMO_STAGES["finetune"].seed)
    rows = {}
    calibration = None
    for stage, args in DEMO_STAGES.items():
        targeted = stage == "hard" and target_flops is not None
        if targeted:
            args = StageArgs(**{**args.__dict__, **TARGET_HARD})
            print(f"[demo] stage hard: thresholds calibrated to {target_flops:g} relative FLOPs on training texts, "
                  "and held there at each dev evaluation ...", flush=True)
        else:
            print(f"[demo] stage {stage} ...", flush=True)
        if quick:
            args = StageArgs(**{**args.__dict__, "max_steps": 4, "logging_steps": 2})
        done = run_stage(model, tokenizer, data["train"], data["validation"], info, stage, output_dir / stage, args,
                         resume)
        calibration = done.get("calibration", calibration)
        if stage == "finetune":
            set_mode(model, "off")
            rows["unpruned"] = evaluate(model, data["validation"], info, tokenizer.pad_token_id)
            write_metrics(rows["unpruned"], output_dir / stage)
    rows["ltp"] = evaluate(model, data["validation"], info, tokenizer.pad_token_id)
    write_metrics(rows["ltp"], output_dir / "hard")

    print("[demo] measuring throughput on the dev set ...", flush=True)
    stock = AutoModelForSequenceClassification.from_pretrained(
        output_dir / "finetune" / "final", attn_implementation="sdpa").eval()
    speed = {}
    # Median of 3 interleaved repeats, 100 sentences at batch 1: about 50 s of the 12-minute budget.
    for batch_size in (1, 32) if not quick else (32,):
        subset = subsample(data["validation"], 100 if batch_size == 1 else None)
        speed[batch_size] = measure_throughput({"unpruned": stock, "ltp": model.eval()}, subset,
                                               tokenizer.pad_token_id, batch_size, repeats=2 if quick else 3)
    summary = _summary(rows, speed, time.time() - start, quick, ltp, calibration)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    table = _table(summary)
    (output_dir / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\noutputs in {output_dir}/ (checkpoints, metrics.json per stage, summary.json)")
    print(target_line(summary))
    return summary


def demo_ltp(target_flops: float | None) -> dict:
    """The demo's LTP settings: with a target, lambda 0 (the budget replaces it)."""
    if target_flops is None:
        return dict(DEMO_LTP)
    return {**DEMO_LTP, "lambda_": 0.0, "target_flops": float(target_flops)}


def target_line(summary: dict) -> str:
    """The demo's last line: the target, where the hard model landed on dev, the accuracy drop."""
    ltp, ref = summary["rows"]["ltp"], summary["rows"]["unpruned"]
    drop = 100 * (ref["accuracy"] - ltp["accuracy"])
    landed = f"landed at {ltp['relative_flops']:.3f} on dev ({1 / ltp['relative_flops']:.2f}x fewer FLOPs)"
    target = summary.get("target_flops")
    asked = (f"target {target:.3f} relative FLOPs ({1 / target:.2f}x fewer), " if target is not None
             else f"no FLOPs target (lambda {summary['ltp_config']['lambda_']:g}), ")
    return (f"[demo] {asked}{landed}; dev accuracy {ltp['accuracy']:.4f} vs unpruned {ref['accuracy']:.4f} "
            f"(accuracy drop {drop:.2f} points)")


def _summary(rows, speed, wall, quick, ltp=None, calibration=None):
    out = {"quick": quick, "wall_seconds": round(wall, 1), "torch_threads": torch.get_num_threads(),
           "ltp_config": ltp.to_dict() if ltp is not None else DEMO_LTP, "rows": {},
           "target_flops": ltp.target_flops if ltp is not None else None,
           "calibration": calibration}
    for name, r in rows.items():
        out["rows"][name] = {k: r[k] for k in ("accuracy", "gflops", "baseline_gflops", "relative_flops",
                                                "tokens_per_layer", "num_examples")}
        out["rows"][name]["thresholds"] = r.get("thresholds")
    out["throughput"] = {
        str(bs): {**s, "speedup": s["ltp"]["sequences_per_s"] / s["unpruned"]["sequences_per_s"]}
        for bs, s in speed.items()}
    return out


def _table(summary) -> str:
    rows = summary["rows"]
    lines = ["| model | dev accuracy | GFLOPs / example | relative FLOPs | "
             + " | ".join(f"seq/s (batch {bs})" for bs in summary["throughput"]) + " |",
             "|---|---|---|---|" + "---|" * len(summary["throughput"])]
    for name in ("unpruned", "ltp"):
        r = rows[name]
        speeds = " | ".join(
            f"{t[name]['sequences_per_s']:.0f}" + ("" if name == "unpruned" else f" ({t['speedup']:.2f}x)")
            for t in summary["throughput"].values())
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['gflops']:.3f} | {r['relative_flops']:.3f} "
                     f"({1 / r['relative_flops']:.2f}x fewer) | {speeds} |")
    lines.append(f"\nwall time {summary['wall_seconds']:.0f} s, {summary['torch_threads']} threads; "
                 "throughput: stock sdpa model vs pruned (packed), length-sorted dev batches, "
                 "median of interleaved repeats")
    return "\n".join(lines)
