"""Two runs of scripts/target_rt.sh (two recipes, same seeds, same machine) compared seed by seed.

    python scripts/paired_target_summary.py A B [--names a,b] [--method manual --target 0.33]

Reads A/target_summary.json and B/target_summary.json (scripts/target_summary.py writes them), or
a baseline's seeds from DIR/equal_flops_summary.json (scripts/equal_flops_summary.py; `--method`
and `--target` say which) where a folder has no target_summary.json, pairs the seeds both have
(same seed = same start, data and order) and prints, per seed and as mean ± 95% t-interval, B
minus A in dev and test accuracy points, plus each arm's test drop. The interval is over training
seeds, so it holds the seed spread that one run cannot show.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltprune.stats import format_interval, summarize


def _cell(s: dict, sign: str = "+") -> str:
    return format_interval(s, sign)


def _seeds(folder: Path, method: str, target: str) -> dict[int, dict]:
    """Per seed: dev and test accuracy and test drop, from whichever summary the folder has."""
    if (folder / "target_summary.json").is_file():
        rows = json.loads((folder / "target_summary.json").read_text())["seeds"]
    else:
        table = json.loads((folder / "equal_flops_summary.json").read_text())["targets"]
        if target not in table or method not in table[target]:
            raise SystemExit(f"{folder}: no {method} at target {target} in equal_flops_summary.json")
        rows = table[target][method]["seeds"]
    return {r["seed"]: r for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", default="A,B", help="labels of the two runs, comma-separated")
    parser.add_argument("--method", default="manual", help="the method to read from an equal_flops_summary.json")
    parser.add_argument("--target", default="0.5", help="its FLOPs target, as written there (e.g. 0.33)")
    args = parser.parse_args()
    name_a, name_b = args.names.split(",")
    runs = [_seeds(Path(d), args.method, args.target) for d in (args.a, args.b)]
    seeds = sorted(set(runs[0]) & set(runs[1]))
    if not seeds:
        raise SystemExit("the two runs share no seed")
    print(f"| seed | {name_a} test drop | {name_b} test drop | {name_b} − {name_a} dev (points) | "
          f"{name_b} − {name_a} test (points) |")
    print("|---|---|---|---|---|")
    diffs = {"dev": [], "test": []}
    for s in seeds:
        a, b = runs[0][s], runs[1][s]
        for k in diffs:
            diffs[k].append(100 * (b[f"{k}_accuracy"] - a[f"{k}_accuracy"]))
        print(f"| {s} | {a['test_drop_points']:.2f} | {b['test_drop_points']:.2f} | {diffs['dev'][-1]:+.2f} | "
              f"{diffs['test'][-1]:+.2f} |")
    stats = {k: summarize(v) for k, v in diffs.items()}
    drops = [summarize([r[s]["test_drop_points"] for s in seeds]) for r in runs]
    print(f"| mean (95% CI), n={len(seeds)} | {_cell(drops[0], '-')} | {_cell(drops[1], '-')} | {_cell(stats['dev'])} | "
          f"{_cell(stats['test'])} |")


if __name__ == "__main__":
    main()
