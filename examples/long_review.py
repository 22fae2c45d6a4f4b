"""A long IMDb review (> 512 tokens, beyond BERT's limit) through a pruned ModernBERT.

    python examples/long_review.py [--final-threshold 0.03] [--layers 22]

ModernBERT reads up to 8,192 tokens; its local layers attend within 64 positions either side, its
global layers (every third) to everything. The model here is random-init ModernBERT (base width,
``--layers`` deep; nothing can be downloaded offline), tokenized with the packaged MiniLM
tokenizer, with untrained, linearly rising thresholds: it shows the mechanics on a real long
input (how many tokens each layer keeps, what that saves, and that the pruned model matches the
stock one when nothing is removed), not a trained model's choices.
"""

from __future__ import annotations

import argparse

import torch
import transformers

import ltprune
from ltprune.data import load_task
from ltprune.resources import offline_model_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--final-threshold", type=float, default=0.03)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--min-tokens", type=int, default=700)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    tokenizer = transformers.AutoTokenizer.from_pretrained(offline_model_dir())
    data, _ = load_task("imdb")
    text = next(t for t in data["validation"]["text"] if len(tokenizer(t)["input_ids"]) >= args.min_tokens)
    batch = tokenizer(text, truncation=True, max_length=8192, return_tensors="pt")
    n = batch["input_ids"].shape[1]
    print(f"review of {n} tokens: {text[:160]!r}...")

    torch.manual_seed(0)
    config = transformers.ModernBertConfig(vocab_size=tokenizer.vocab_size, num_hidden_layers=args.layers,
                                           pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                           cls_token_id=101, sep_token_id=102, num_labels=2)
    model = transformers.ModernBertForSequenceClassification(config).eval()
    with torch.no_grad():
        stock = model(**batch).logits
    ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.0))
    with torch.no_grad():
        same = model(**batch).logits
    print(f"thresholds 0 (nothing removed): max |logits - stock| = {float((same - stock).abs().max()):.2e}")

    ltprune.patch(model, ltprune.LTPConfig(final_threshold=args.final_threshold))
    with torch.no_grad():
        out = model(**batch)
    records = out.ltp
    print(f"\nfinal threshold {args.final_threshold}: kept tokens per layer")
    print(f"{'layer':>5}  {'attention':<9}  {'threshold':>9}  {'in':>5}  {'kept':>5}")
    for layer, kind in enumerate(config.layer_types):
        print(f"{layer:>5}  {'global' if kind == 'full_attention' else 'local':<9}  "
              f"{ltprune.get_thresholds(model)[layer].item():>9.5f}  {int(records.tokens_in[0, layer]):>5}  "
              f"{int(records.tokens_kept[0, layer]):>5}")
    print(f"relative FLOPs {records.relative_flops:.3f} ({1 / records.relative_flops:.2f}x fewer; local layers "
          f"counted at min(n, {config.local_attention + 1}) keys per query)")
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    survivors = [t for t, kept in zip(tokens, records.kept_mask[0].tolist()) if kept]
    print(f"tokens kept to the end ({len(survivors)}): {' '.join(survivors[:40])}{' ...' if len(survivors) > 40 else ''}")


if __name__ == "__main__":
    main()
