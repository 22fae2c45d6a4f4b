"""Batches of tokenized examples: grouped by length and right-padded, so that neither a pruned
model nor its unpruned baseline is timed or scored on padding it need not have."""

from __future__ import annotations

import torch


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def length_sorted_batches(lengths, batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding is minimal."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(features: list[dict], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (with ``pad_id``) and the other model inputs (with 0)."""
    width = max(len(f["input_ids"]) for f in features)
    batch = {}
    for key in MODEL_INPUTS:
        if key not in features[0]:
            continue
        fill = pad_id if key == "input_ids" else 0
        rows = [list(f[key]) + [fill] * (width - len(f[key])) for f in features]
        batch[key] = torch.tensor(rows, dtype=torch.long, device=device)
    return batch


def as_rows(dataset) -> list[dict]:
    """A tokenized ``datasets.Dataset`` or a list of dicts as a list of dicts of model inputs."""
    if isinstance(dataset, list):
        return dataset
    keys = [k for k in MODEL_INPUTS if k in dataset.column_names]
    return [dict(zip(keys, values)) for values in zip(*(dataset[k] for k in keys))]


def length_sorted_tensors(dataset, pad_id, batch_size):
    """The split as padded tensor batches of similar length (the baseline wastes no padding)."""
    rows = as_rows(dataset)
    index = length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size)
    return [collate([rows[i] for i in idx], pad_id) for idx in index]
