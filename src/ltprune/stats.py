"""Summary statistics of repeated runs (issue 19): mean, standard deviation, a t-interval; and
the paired difference of two models scored on the same test examples.

A sweep point trained over several seeds is reported as the mean with its sample standard
deviation (ddof = 1) and a two-sided Student t confidence interval for the mean,
mean ± t_{(1 + c) / 2, n - 1} * std / sqrt(n): with 3 seeds t is 4.30, so an interval is wide,
and saying "within noise" needs it.
"""

from __future__ import annotations

import math

from scipy import stats as scipy_stats


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student t quantile t_{(1 + confidence) / 2, dof}."""
    return float(scipy_stats.t.ppf((1.0 + confidence) / 2.0, dof))


def summarize(values, confidence: float = 0.95) -> dict:
    """{n, mean, std, ci_low, ci_high, half_width} of ``values``; with one value std and the
    interval are None (one run says nothing about its noise)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "half_width": None,
                "confidence": confidence}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "half_width": half,
            "confidence": confidence}


def paired_difference(a, b, confidence: float = 0.95) -> dict:
    """{n, mean, se, ci_low, ci_high, half_width} of ``a - b`` over examples scored by both.

    ``a`` and ``b`` are per-example scores (1/0 for right/wrong) of two models on the *same*
    examples, in the same order. Pairing removes what the examples share (an easy review is easy
    for both), so the interval on a drop is narrower than the two accuracies' own intervals
    suggest. A normal interval (the test sets here have hundreds of examples or more); it holds
    test-set noise only, not the spread over training seeds.
    """
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same examples: {len(a)} vs {len(b)}")
    if len(a) < 2:
        raise ValueError("a paired difference needs at least two examples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    mean = math.fsum(d) / n
    se = math.sqrt(math.fsum((v - mean) ** 2 for v in d) / (n - 1) / n)
    half = float(scipy_stats.norm.ppf((1.0 + confidence) / 2.0)) * se
    return {"n": n, "mean": mean, "se": se, "ci_low": mean - half, "ci_high": mean + half, "half_width": half,
            "confidence": confidence}


def format_interval(s: dict, sign: str = "") -> str:
    """``mean [low, high]`` of a :func:`summarize` or :func:`paired_difference` result, two
    decimals (``sign="+"`` prints the signs of differences); the mean alone where one value has
    no interval."""
    interval = "" if s["half_width"] is None else f" [{s['ci_low']:{sign}.2f}, {s['ci_high']:{sign}.2f}]"
    return f"{s['mean']:{sign}.2f}{interval}"


__all__ = ["format_interval", "paired_difference", "summarize", "t_quantile"]
