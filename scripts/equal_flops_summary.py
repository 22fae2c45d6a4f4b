"""Sum up scripts/equal_flops_rt.sh: every method at each FLOPs target, per seed and over seeds.

    python scripts/equal_flops_summary.py OUT

For each (target, method): dev and test accuracy and relative FLOPs as mean, std and 95%
t-interval over seeds; for LTP against each baseline, the per-seed paired difference of test
accuracy (same seed = same fine-tuned start, data and order) with its 95% t-interval, and a
verdict: "LTP better" / "LTP worse" when the interval excludes 0, else "within noise", qualified
when the two did not land at equal FLOPs (mean test relative FLOPs more than FLOPS_TOLERANCE
apart: top-k's cascade cannot go below its floor, so its "0.5" point is not at 0.5). Writes
OUT/equal_flops_summary.json and prints the markdown tables docs/RESULTS.md quotes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltprune.stats import summarize
from ltprune.sweep import load_points

METHODS = ("ltp", "topk", "manual", "lat")
FLOPS_TOLERANCE = 0.02  # the tolerance for "on target"


def _cell(s: dict, digits: int, scale: float = 1.0) -> str:
    if s is None:
        return "–"
    half = "" if s["half_width"] is None else f" ± {scale * s['half_width']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}{half}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    a = parser.parse_args()
    out = Path(a.out)
    points = load_points(out)
    ref = next(p for p in points if p["method"] == "unpruned")
    test_ref = json.loads((out / "test" / "unpruned" / "metrics.json").read_text())["metric"]
    # every method's targets, so that a folder with baselines only (METHODS=manual) is summed up too
    targets = sorted({p["knob"] for p in points if p["method"] in METHODS}, reverse=True)
    rows, table = [], {}
    for t in targets:
        table[t] = {}
        for m in METHODS:
            per_seed = {}
            for p in points:
                if p["method"] != m or abs(p["knob"] - t) > 1e-9:
                    continue
                test_file = out / "test" / m / f"{t:g}" / f"seed-{p['seed']}" / "metrics.json"
                if not test_file.is_file():
                    continue
                test = json.loads(test_file.read_text())
                per_seed[p["seed"]] = {"seed": p["seed"], "dev_accuracy": p["metric"],
                                       "dev_relative_flops": p["relative_flops"], "test_accuracy": test["metric"],
                                       "test_relative_flops": test["relative_flops"],
                                       "test_drop_points": 100 * (test_ref - test["metric"])}
                for key in ("final_ratio", "final_threshold", "keep_lengths", "calibration_factor"):
                    if key in p:
                        per_seed[p["seed"]][key] = p[key]
            if not per_seed:
                continue
            seeds = sorted(per_seed)
            stats = {k: summarize([per_seed[s][k] for s in seeds])
                     for k in ("dev_accuracy", "dev_relative_flops", "test_accuracy", "test_relative_flops",
                               "test_drop_points")}
            table[t][m] = {"seeds": [per_seed[s] for s in seeds], "summary": stats}
        ltp = {r["seed"]: r for r in table[t].get("ltp", {}).get("seeds", [])}
        for m in METHODS[1:]:
            other = {r["seed"]: r for r in table[t].get(m, {}).get("seeds", [])}
            common = sorted(set(ltp) & set(other))
            if len(common) < 2:
                continue
            diff = summarize([100 * (ltp[s]["test_accuracy"] - other[s]["test_accuracy"]) for s in common])
            verdict = ("LTP better" if diff["ci_low"] > 0 else "LTP worse" if diff["ci_high"] < 0
                       else "within noise")
            flops = {k: sum(r[s]["test_relative_flops"] for s in common) / len(common)
                     for k, r in (("ltp", ltp), (m, other))}
            equal = abs(flops["ltp"] - flops[m]) <= FLOPS_TOLERANCE
            if not equal:
                verdict += f", but not at equal FLOPs ({m} {flops[m]:.3f}, LTP {flops['ltp']:.3f})"
            rows.append({"target": t, "baseline": m, "seeds": common, "ltp_minus_baseline_test_points": diff,
                         "test_relative_flops": flops, "equal_flops": equal, "verdict": verdict})
    result = {"unpruned": {"dev_accuracy": ref["metric"], "test_accuracy": test_ref}, "targets": table,
              "paired": rows}
    (out / "equal_flops_summary.json").write_text(json.dumps(result, indent=1))

    print(f"unpruned: dev accuracy {ref['metric']:.4f}, test accuracy {test_ref:.4f}\n")
    print("| target | method | n | dev accuracy | dev rel. FLOPs | test accuracy | test rel. FLOPs | test drop (points) |")
    print("|---|---|---|---|---|---|---|---|")
    for t, methods in table.items():
        for m, entry in methods.items():
            s = entry["summary"]
            print(f"| {t:g} | {m} | {len(entry['seeds'])} | {_cell(s['dev_accuracy'], 4)} | "
                  f"{_cell(s['dev_relative_flops'], 3)} | {_cell(s['test_accuracy'], 4)} | "
                  f"{_cell(s['test_relative_flops'], 3)} | {_cell(s['test_drop_points'], 2)} |")
    if rows:
        print("\n| target | LTP minus | seeds | test accuracy difference (points, paired, 95% CI) | verdict |")
        print("|---|---|---|---|---|")
        for r in rows:
            d = r["ltp_minus_baseline_test_points"]
            print(f"| {r['target']:g} | {r['baseline']} | {len(r['seeds'])} | {d['mean']:+.2f} "
                  f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] | {r['verdict']} |")


if __name__ == "__main__":
    main()
