"""Sum up scripts/target_rt.sh: per seed and over seeds (mean, std, 95% t-interval), dev and test.

    python scripts/target_summary.py OUT [--target 0.5] [--reference REF_TEST_METRICS_JSON]

Writes OUT/target_summary.json and prints a markdown table (the numbers docs/RESULTS.md quotes).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltprune.stats import summarize
from ltprune.sweep import load_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--reference", help="another unpruned model's test metrics.json (e.g. scripts/unpruned_reference.sh's, "
                        "trained as long as the pruned ones): the test drops against it too")
    a = parser.parse_args()
    out = Path(a.out)
    points = load_points(out)
    ref = next(p for p in points if p["method"] == "unpruned")
    ltp = sorted((p for p in points if p["method"] == "ltp" and abs(p["knob"] - a.target) < 1e-9),
                 key=lambda p: p["seed"])
    test_ref = json.loads((out / "test" / "unpruned" / "metrics.json").read_text())
    rows = []
    for p in ltp:
        test = json.loads((out / "test" / f"seed-{p['seed']}" / "metrics.json").read_text())
        rows.append({"seed": p["seed"], "dev_accuracy": p["metric"], "dev_relative_flops": p["relative_flops"],
                     "calibration_factor": p.get("calibration_factor"), "test_accuracy": test["metric"],
                     "test_relative_flops": test["relative_flops"],
                     "dev_drop_points": 100 * (ref["metric"] - p["metric"]),
                     "test_drop_points": 100 * (test_ref["metric"] - test["metric"])})
    keys = [k for k in rows[0] if k not in ("seed", "calibration_factor")]
    summary = {k: summarize([r[k] for r in rows]) for k in keys}
    result = {"target_flops": a.target, "unpruned": {"dev_accuracy": ref["metric"], "test_accuracy": test_ref["metric"]},
              "seeds": rows, "summary": summary}
    if a.reference:
        other = json.loads(Path(a.reference).read_text())["metric"]
        drops = [100 * (other - r["test_accuracy"]) for r in rows]
        result["reference"] = {"metrics": a.reference, "test_accuracy": other, "test_drop_points": drops,
                               "summary": summarize(drops)}
    (out / "target_summary.json").write_text(json.dumps(result, indent=1))

    def cell(key, digits):
        s = summary[key]
        half = "" if s["half_width"] is None else f" ± {s['half_width']:.{digits}f}"
        return f"{s['mean']:.{digits}f}{half}"

    print(f"unpruned: dev accuracy {ref['metric']:.4f}, test accuracy {test_ref['metric']:.4f}")
    print("| seed | dev accuracy | dev rel. FLOPs | test accuracy | test rel. FLOPs | test drop (points) | calibration factor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['dev_accuracy']:.4f} | {r['dev_relative_flops']:.3f} | {r['test_accuracy']:.4f} | "
              f"{r['test_relative_flops']:.3f} | {r['test_drop_points']:.2f} | {r['calibration_factor']:.4f} |")
    print(f"| mean ± 95% CI (n={len(rows)}) | {cell('dev_accuracy', 4)} | {cell('dev_relative_flops', 3)} | "
          f"{cell('test_accuracy', 4)} | {cell('test_relative_flops', 3)} | {cell('test_drop_points', 2)} | |")
    if a.reference:
        r = result["reference"]
        s = r["summary"]
        interval = "" if s["half_width"] is None else f", 95% CI [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
        print(f"against {a.reference} (test accuracy {r['test_accuracy']:.4f}): test drops "
              f"{', '.join(f'{d:.2f}' for d in r['test_drop_points'])}; mean {s['mean']:.2f}{interval}")


if __name__ == "__main__":
    main()
