"""Side-by-side timing: variants interleaved, repeated, median and spread reported.

Interleaving (A B C, B C A, ...) exposes every variant to the same machine noise, so the ratios
between them are trustworthy even when absolute times drift.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_variants(variants: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict:
    """Seconds per call of each variant: {"name": {"median", "min", "max", "runs"}}."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    runs = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            runs[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "runs": t}
            for name, t in runs.items()}


def time_variants_per_item(variants: dict[str, Callable[[object], object]], items, repeats: int = 5,
                           warmup: int = 1, warmup_items: int | None = None) -> dict:
    """Like :func:`time_variants`, interleaved at the level of one item (a batch): every item is
    run by each variant in turn (rotating the order), so a slow spell of the machine lasting a
    few milliseconds hits all variants alike. A repeat's time is the sum over items; the median,
    min and max are over repeats. ``warmup_items``: warm up on the first few items only (None:
    all), for models so slow on long inputs that a whole warm-up pass would cost a repeat."""
    names = list(variants)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for item in items[:warmup_items]:
            for name in names:
                variants[name](item)
    runs = {name: [] for name in names}
    for r in range(repeats):
        total = dict.fromkeys(names, 0.0)
        for i, item in enumerate(items):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                start = time.perf_counter()
                variants[name](item)
                sync()
                total[name] += time.perf_counter() - start
        for name in names:
            runs[name].append(total[name])
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "runs": t}
            for name, t in runs.items()}
