"""Summary statistics of repeated runs (issue 19): mean, standard deviation, a t-interval.

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


__all__ = ["summarize", "t_quantile"]
