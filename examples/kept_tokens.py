"""Kept tokens per layer and relative FLOPs for real sentences through the offline model.

    python examples/kept_tokens.py [--thresholds 0.002 0.01] [--json out.json]

Uses the packaged all-MiniLM-L6-v2 (BERT, 6 layers) with untrained, linearly rising thresholds:
it shows the mechanics (what a threshold removes, what it saves), not a trained model.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModel, AutoTokenizer

import ltprune
from ltprune.resources import offline_model_dir, rotten_tomatoes_sentences


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.002, 0.01])
    parser.add_argument("--sentences", type=int, default=10)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    path = offline_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    ltprune.patch(model, ltprune.LTPConfig())
    sentences = rotten_tomatoes_sentences(args.sentences)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    results = []
    for final in args.thresholds:
        ltprune.patch(model, ltprune.LTPConfig(final_threshold=final))
        with torch.no_grad():
            records = model(**batch).ltp
        thresholds = [round(t, 5) for t in ltprune.get_thresholds(model).tolist()]
        print(f"\nfinal threshold {final}  (per-layer thresholds {thresholds})")
        print(f"{'tokens':>6}  kept after each layer      GFLOPs  relative")
        for i in range(len(sentences)):
            kept = records.tokens_kept[i].tolist()
            print(f"{int(records.lengths[i]):>6}  {str(kept):<26} {records.gflops[i]:.4f}  "
                  f"{float(records.macs()[i] / records.baseline_macs()[i]):.3f}")
        print(f"relative FLOPs over the {len(sentences)} sentences: {records.relative_flops:.3f} "
              f"({1 / records.relative_flops:.2f}x fewer)")
        results.append({"final_threshold": final, "thresholds": thresholds,
                        "lengths": records.lengths.tolist(), "tokens_kept": records.tokens_kept.tolist(),
                        "relative_flops": records.relative_flops})
    first = sentences[0]
    ids = tokenizer(first, return_tensors="pt")
    with torch.no_grad():
        pruned_at = model(**ids).ltp.pruned_at[0].tolist()
    tokens = tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    print("\nfirst sentence, layer at which each token was removed (6 = kept to the end):")
    print(" ".join(f"{t}:{p}" for t, p in zip(tokens, pruned_at)))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sentences": sentences, "runs": results}, handle, indent=1)


if __name__ == "__main__":
    main()
