"""The prepared GPU check for the fast path (issue: "Fast wherever it runs"; FASTPATH.md §5).

Run on a machine with a GPU through ``scripts/gpu_check.sh`` (about 5 minutes on an H100/H200).
It needs only torch and transformers there: the models are random-init BERT-base / ViT-B/16 and
the text inputs are random token ids with the real token lengths of the Rotten Tomatoes and IMDb
dev splits (``scripts/data/dev_lengths.json``), so no model or data package has to travel.

1. correctness on the GPU: static step + varlen + two-call scores + CUDA graphs vs the exact step
   (kept sets, logits), fp32 and bf16;
2. host syncs: a static-step forward captured into a CUDA graph (capture fails on any sync) and
   an eager static forward under ``torch.cuda.set_sync_debug_mode("warn")`` (syncs counted);
3. score kernels: explicit probabilities vs the two-call identity, per length;
4. throughput vs batch size (1, 8, 32, 64): stock sdpa vs LTP padded / packed, and stock vs LTP
   through the same CUDA-graph runner; fp32 and bf16; RT and IMDb lengths, ViT-B.

``--device cpu --quick`` runs the same plumbing on a CPU (no graphs), as a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
import warnings
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import ltprune  # noqa: E402
from ltprune import attention, bench  # noqa: E402
from ltprune.fastpath import GraphRunner  # noqa: E402


def text_rows(lengths, vocab=30000, seed=0):
    rng = random.Random(seed)
    return [{"input_ids": [101] + [rng.randrange(1000, vocab) for _ in range(n - 2)] + [102],
             "attention_mask": [1] * n} for n in lengths]


def bert_base(device, layers=12):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=768, num_hidden_layers=layers, num_attention_heads=12,
                                  intermediate_size=3072, num_labels=2, initializer_range=0.2)
    cfg._attn_implementation = "sdpa"
    return transformers.BertForSequenceClassification(cfg).eval().to(device)


def correctness(device, report):
    model = bert_base(device, layers=4)
    rows = text_rows([40, 12, 33, 7, 40, 25, 18, 3], seed=1)
    batch = bench.to_device(bench.length_sorted_tensors(rows, 0, 8), device)[0]
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        m = copy.deepcopy(model).to(dtype)
        ltprune.patch(m, ltprune.LTPConfig(step="exact", score_kernel="explicit"))
        ltprune.set_thresholds(m, torch.linspace(0, 0.03, 4))
        with torch.no_grad():
            exact = m(**batch)
            ltprune.patch(m, ltprune.get_config(m).replace(step="static", score_kernel="lse", capacity=[1.0] * 4))
            fast = m(**batch)
            graphed = GraphRunner(m)(**batch) if device == "cuda" else fast
        name = str(dtype).replace("torch.", "")
        out[name] = {
            variant: {"kept_agreement": float((o.ltp.pruned_at == exact.ltp.pruned_at).float().mean()),
                      "max_logit_diff": float((o.logits.float() - exact.logits.float()).abs().max()),
                      "relative_flops": o.ltp.relative_flops}
            for variant, o in (("static+lse", fast), ("graphs", graphed))}
    report["correctness"] = out
    print("[gpu] correctness", json.dumps(out), flush=True)


def syncs(device, report):
    if device != "cuda":
        return
    model = bert_base(device, layers=4)
    ltprune.patch(model, ltprune.LTPConfig(step="static", score_kernel="lse", capacity=[1.0] * 4))
    ltprune.set_thresholds(model, torch.linspace(0, 0.03, 4))
    batch = bench.to_device(bench.length_sorted_tensors(text_rows([30, 20, 10, 5]), 0, 4), device)[0]
    result = {}
    try:
        GraphRunner(model)(**batch)
        result["graph_capture"] = "ok (no host sync inside the forward)"
    except Exception as exc:  # noqa: BLE001 - what failed is the measurement
        result["graph_capture"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    with torch.no_grad():
        model(**batch)  # warm (thresholds read back once, kernels loaded)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model(**batch)
            finally:
                torch.cuda.set_sync_debug_mode(0)
    messages = [str(w.message)[:160] for w in caught if "synchron" in str(w.message).lower()]
    result["eager_static_forward_syncs"] = len(messages)
    result["sync_messages"] = messages[:10]
    report["syncs"] = result
    print("[gpu] syncs", json.dumps(result), flush=True)


def score_kernels(device, report, lengths=(32, 128, 512), batch=32):
    heads, d = 12, 64
    rows = []
    for n in lengths:
        q, k, v = (torch.randn(batch, heads, n, d, device=device) for _ in range(3))
        for dtype in (torch.float32, torch.bfloat16):
            qq, kk, vv = (t.to(dtype) for t in (q, k, v))
            t = bench.time_variants({
                "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(qq, kk, vv),
                "explicit": lambda: attention.explicit(qq, kk, vv),
                "two_call": lambda: attention.two_call(qq, kk, vv)}, repeats=10)
            rows.append({"n": n, "dtype": str(dtype).replace("torch.", ""),
                         **{f"{k}_ms": v["median"] * 1e3 for k, v in t.items()}})
    report["score_kernels"] = rows
    print("[gpu] score kernels", json.dumps(rows), flush=True)


def throughput(device, report, quick):
    lengths = json.loads((ROOT / "scripts" / "data" / "dev_lengths.json").read_text())
    batch_sizes = (1, 8) if quick else (1, 8, 32, 64)
    repeats = 2 if quick else 5
    graphs = device == "cuda"
    dtypes = ("fp32",) if quick else ("fp32", "bf16")
    for task, key in (("rotten_tomatoes", "truncated_512"), ("imdb", "truncated_512")):
        rows = text_rows(lengths[task][key][: 64 if quick else (853 if task == "rotten_tomatoes" else 1024)])
        stock = bert_base(device)
        pruned = ltprune.patch(copy.deepcopy(stock), ltprune.LTPConfig(mode="hard"))
        calibration = bench.to_device(bench.length_sorted_tensors(rows[:256], 0, 32), device)
        bench.calibrate_thresholds(pruned, calibration, 0.5)
        for dtype in dtypes:
            name = f"bert-base {task} {dtype}"
            start = time.time()
            report["throughput"][name] = bench.throughput_vs_batch(
                stock.to(bench.DTYPES[dtype]), pruned.to(bench.DTYPES[dtype]), rows, 0, batch_sizes,
                repeats=repeats, device=device, graphs=graphs, plan_batches=rows[:256])
            report["models"][name] = {"layers": 12, "hidden": 768, "inputs": f"{len(rows)} random-id sequences "
                                      f"with {task} dev lengths", "thresholds": ltprune.get_thresholds(pruned).tolist()}
            print(f"[gpu] {name}: {time.time() - start:.0f} s", flush=True)
    if not quick:
        torch.manual_seed(0)
        cfg = transformers.ViTConfig(**bench.IMAGE_CONFIGS["vit-base"])
        cfg._attn_implementation = "sdpa"
        stock = transformers.ViTForImageClassification(cfg).eval().to(device)
        pruned = ltprune.patch(copy.deepcopy(stock), ltprune.LTPConfig(mode="hard"))
        images = bench.random_images(128, 224)
        bench.calibrate_thresholds(pruned, bench.to_device(bench._image_batches(images[:32], 32), device), 0.5)
        for dtype in dtypes:
            name = f"vit-base {dtype}"
            report["throughput"][name] = bench.throughput_vs_batch(
                stock.to(bench.DTYPES[dtype]), pruned.to(bench.DTYPES[dtype]), images, None, batch_sizes,
                repeats=repeats, device=device)
            report["models"][name] = {"layers": 12, "hidden": 768, "inputs": "128 random 224x224 images"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--output", default="runs/gpu_check/gpu_check.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (TF32 would flip decisions)
    torch.backends.cudnn.allow_tf32 = False
    report = {"environment": bench.environment(args.device), "throughput": {}, "models": {}}
    for step in (correctness, syncs, score_kernels):
        try:
            step(args.device, report)
        except Exception as exc:  # noqa: BLE001 - record it and go on: device time is scarce
            report[step.__name__] = f"failed: {type(exc).__name__}: {str(exc)[:500]}"
            print(f"[gpu] {step.__name__} failed: {exc}", flush=True)
    throughput(args.device, report, args.quick)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    (out.with_suffix(".md")).write_text(bench.markdown(report))
    print(bench.markdown(report))


if __name__ == "__main__":
    main()
