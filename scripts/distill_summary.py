"""Sum up scripts/distill_rt.sh: LTP with and without distillation, per seed and paired.

    python scripts/distill_summary.py OUT

Per arm: dev and test accuracy and relative FLOPs, mean ± 95% t-interval over seeds; the
per-seed paired difference (KD minus plain) of test and dev accuracy with its interval, and the
wall time of each arm's `ltprune train` (scripts/distill_rt.sh writes it). Writes
OUT/distill_summary.json, prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltprune.stats import summarize

ARMS = ("plain", "kd")


def _row(out: Path, arm: str, seed: int) -> dict | None:
    run, test = out / arm / f"seed-{seed}", out / "test" / arm / f"seed-{seed}" / "metrics.json"
    if not ((run / "hard" / "metrics.json").is_file() and test.is_file()):
        return None
    dev, t = json.loads((run / "hard" / "metrics.json").read_text()), json.loads(test.read_text())
    wall = run / "wall_seconds"
    train_s = float(wall.read_text()) if wall.is_file() else None
    return {"seed": seed, "dev_accuracy": dev["metric"], "dev_relative_flops": dev["relative_flops"],
            "test_accuracy": t["metric"], "test_relative_flops": t["relative_flops"], "wall_seconds": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    a = parser.parse_args()
    out = Path(a.out)
    seeds = sorted({int(p.name.split("-")[1]) for arm in ARMS for p in (out / arm).glob("seed-*")})
    arms = {arm: [r for s in seeds if (r := _row(out, arm, s)) is not None] for arm in ARMS}
    keys = ("dev_accuracy", "dev_relative_flops", "test_accuracy", "test_relative_flops")
    summary = {arm: {k: summarize([r[k] for r in rows]) for k in keys} for arm, rows in arms.items() if rows}
    both = {r["seed"]: r for r in arms["plain"]}
    pairs = [(both[r["seed"]], r) for r in arms["kd"] if r["seed"] in both]
    paired = {}
    if len(pairs) >= 2:
        for k in ("dev_accuracy", "test_accuracy"):
            paired[k] = summarize([100 * (kd[k] - plain[k]) for plain, kd in pairs])
    result = {"arms": arms, "summary": summary, "kd_minus_plain_points": paired}
    (out / "distill_summary.json").write_text(json.dumps(result, indent=1))
    print("| arm | n | dev accuracy | dev rel. FLOPs | test accuracy | test rel. FLOPs | train wall (s, mean) |")
    print("|---|---|---|---|---|---|---|")
    for arm, s in summary.items():
        cells = [f"{s[k]['mean']:.{3 if 'flops' in k else 4}f}"
                 + ("" if s[k]["half_width"] is None else f" ± {s[k]['half_width']:.{3 if 'flops' in k else 4}f}")
                 for k in keys]
        walls = [r["wall_seconds"] for r in arms[arm] if r["wall_seconds"] is not None]
        wall = f"{sum(walls) / len(walls):.0f}" if walls else "–"
        print(f"| {arm} | {len(arms[arm])} | " + " | ".join(cells) + f" | {wall} |")
    for k, d in paired.items():
        print(f"KD minus plain, {k}: {d['mean']:+.2f} points [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] (n={d['n']})")


if __name__ == "__main__":
    main()
