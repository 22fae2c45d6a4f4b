"""Exact McNemar test between two models scored on the same examples (one seed, one test set).

    python scripts/mcnemar.py A/examples.jsonl B/examples.jsonl [...pairs]

Per pair: accuracy of each, the examples only A / only B gets right, and the two-sided exact
p-value (binomial on the discordant examples). It measures test-set noise only, not the spread
over training seeds: with one seed, a small p says the two models differ on this test set, not
that the methods do.
"""

from __future__ import annotations

import json
import sys

from scipy.stats import binomtest


def correct(path: str) -> dict[int, bool]:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return {r["index"]: r["label"] == r["prediction"] for r in rows}


def main(paths: list[str]) -> None:
    if len(paths) < 2 or len(paths) % 2:
        sys.exit("usage: mcnemar.py A/examples.jsonl B/examples.jsonl [more pairs]")
    for a_path, b_path in zip(paths[::2], paths[1::2]):
        a, b = correct(a_path), correct(b_path)
        if a.keys() != b.keys():
            sys.exit(f"{a_path} and {b_path} do not score the same examples")
        only_a = sum(a[i] and not b[i] for i in a)
        only_b = sum(b[i] and not a[i] for i in a)
        p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
        print(f"{a_path} vs {b_path}: accuracy {sum(a.values()) / len(a):.4f} vs {sum(b.values()) / len(b):.4f}, "
              f"only A right {only_a}, only B right {only_b}, exact McNemar p = {p:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
