"""Seeded splits and subsets by a keyed hash (BLAKE2b), the same on every machine and every
NumPy version; stratified by label where the labels are classes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from .tables import _Rows


_EVAL_FRACTION_DENOMINATOR = 10  # validation and test are each n // 10 rows: an 80/10/10 split


def _hash64(seed: int, salt: str, i: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{salt}|{i}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _stratified_order(labels: Sequence | None, n: int, seed: int, salt: str) -> list[int]:
    """A seeded order of ``range(n)`` whose every prefix has (within one row) the class mix.

    Each class is shuffled by hash, its rows get positions ``(rank + 0.5) / class_size`` and
    all rows are sorted by position: any prefix then takes the same fraction of every class.
    Rare classes land at the middle positions, so small classes always keep rows in train.
    """
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in range(n):
        groups[None if labels is None else labels[i]].append(i)
    keyed = []
    for idx in groups.values():
        idx.sort(key=lambda i: _hash64(seed, salt, i))
        size = len(idx)
        keyed.extend(((r + 0.5) / size, _hash64(seed, salt + "/tie", i), i) for r, i in enumerate(idx))
    keyed.sort()
    return [k[2] for k in keyed]


def _eval_size(rows: _Rows, cut: str, instead: str) -> int:
    """Rows per held-out split; too few rows to cut any is the caller's data problem, said plainly."""
    n_eval = len(rows) // _EVAL_FRACTION_DENOMINATOR
    if n_eval == 0:
        raise DataError(
            f"{rows.source} has only {len(rows)} usable rows: need at least {_EVAL_FRACTION_DENOMINATOR} "
            f"to cut {cut} (or provide {instead})"
        )
    return n_eval


def _split_three(rows: _Rows, seed: int, *, stratify: bool) -> dict[str, _Rows]:
    n_eval = _eval_size(rows, "train/validation/test splits", "separate split files")
    order = _stratified_order(rows.label if stratify else None, len(rows), seed, "split")
    # Splits keep the seeded order rather than the file's: source files are often sorted by
    # label (the movie-review CSV is), and the first rows of a split should be a fair sample.
    return {
        "train": rows.take(order[2 * n_eval:]),
        "validation": rows.take(order[:n_eval]),
        "test": rows.take(order[n_eval:2 * n_eval]),
    }


def _split_off(rows: _Rows, seed: int, *, stratify: bool) -> tuple[_Rows, _Rows]:
    n_eval = _eval_size(rows, "a validation split", "a validation file")
    order = _stratified_order(rows.label if stratify else None, len(rows), seed, "split")
    return rows.take(order[n_eval:]), rows.take(order[:n_eval])


def subsample(dataset, limit: int | None, seed: int = 0):
    """At most ``limit`` examples of ``dataset``, drawn with ``seed``, in their original order."""
    if limit is None or len(dataset) <= limit:
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.select(sorted(rng.choice(len(dataset), size=limit, replace=False).tolist()))
