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
