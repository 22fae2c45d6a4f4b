"""Token pruning on every supported non-BERT family, offline, on tiny random-init models.

    python examples/families.py [--final-threshold 0.008] [--layout packed|padded]

DistilBERT, ELECTRA, XLM-RoBERTa (text, padded batches of different lengths) and ViT (images:
[CLS] + 16 patches, no padding). The models are untrained; their weights are drawn with a wide
init (std 0.3) so attention is uneven enough for thresholds to remove some tokens, not all or
none. It shows the mechanics: one ``ltprune.patch`` call per family, the same records.
"""

from __future__ import annotations

import argparse

import torch
import transformers

import ltprune

TEXT = dict(vocab_size=120, max_position_embeddings=64, num_labels=3, initializer_range=0.3)
CONFIGS = {
    "DistilBertForSequenceClassification": transformers.DistilBertConfig(
        dim=32, n_layers=4, n_heads=4, hidden_dim=64, **TEXT),
    "ElectraForSequenceClassification": transformers.ElectraConfig(
        embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, **TEXT),
    "XLMRobertaForSequenceClassification": transformers.XLMRobertaConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        pad_token_id=1, **TEXT),
    "ViTForImageClassification": transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=64, num_labels=3, initializer_range=0.3),
}


def inputs_for(name: str, config, generator) -> dict:
    if name.startswith("ViT"):
        return {"pixel_values": torch.randn(4, 3, 32, 32, generator=generator)}
    lengths = [14, 9, 5, 11]
    pad = config.pad_token_id
    ids = torch.randint(5, config.vocab_size, (len(lengths), max(lengths)), generator=generator)
    ids[:, 0] = 2  # a CLS-like first token, kept by keep_first_token
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--final-threshold", type=float, default=0.008)
    parser.add_argument("--layout", choices=["packed", "padded"], default="packed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = getattr(transformers, name)(config).eval()
        ltprune.patch(model, ltprune.LTPConfig(final_threshold=args.final_threshold, layout=args.layout))
        batch = inputs_for(name, config, torch.Generator().manual_seed(0))
        with torch.no_grad():
            records = model(**batch).ltp
        thresholds = [round(t, 4) for t in ltprune.get_thresholds(model).tolist()]
        print(f"\n{name}  (thresholds per layer {thresholds})")
        print(f"{'tokens':>6}  kept after each layer")
        for i in range(len(records.lengths)):
            print(f"{int(records.lengths[i]):>6}  {records.tokens_kept[i].tolist()}")
        print(f"relative FLOPs: {records.relative_flops:.3f} ({1 / records.relative_flops:.2f}x fewer)")


if __name__ == "__main__":
    main()
