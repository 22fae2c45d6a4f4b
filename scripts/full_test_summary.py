"""Sum up models scored on one test set (scripts/imdb_full_test.sh): drops against a reference.

    python scripts/full_test_summary.py OUT [--reference unpruned/R] [--pair A,B ...]

OUT holds one `ltprune eval` folder per model (metrics.json and examples.jsonl), named
GROUP/seed-K for the seeds of one recipe (or any other name for a single model). Per model: test
accuracy, relative FLOPs and the drop against the reference in points with a paired 95% interval
over the test examples (test-set noise). Per group of seeds: the mean drop with a t-interval
over the seeds (the seed spread, on a test set this size mostly training noise), and the paired
interval of the seed-averaged model (each review's correctness averaged over the seeds), the
test-set noise left in the mean. `--pair A,B`: B minus A in test points, seed by seed (the seeds
both groups have) with a t-interval, and for the two seed-averaged models with a paired interval.
Writes OUT/full_test_summary.json and prints markdown.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

from ltprune.errors import DataError
from ltprune.experiments.per_example import correctness, read_examples
from ltprune.stats import format_interval as _cell
from ltprune.stats import paired_difference, summarize


def _correct(folder: Path) -> dict[int, float]:
    """Each test example's index -> 1.0 right / 0.0 wrong, from the folder's examples.jsonl."""
    try:
        rows = read_examples(folder)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    ok = correctness(rows)
    if ok is None:
        raise SystemExit(f"{folder}: a regression task has no right or wrong answers to pair")
    return {r["index"]: float(v) for r, v in zip(rows, ok)}


def _points(d: dict) -> dict:
    """A paired difference of fractions, in points."""
    return {k: (100 * v if k in ("mean", "se", "ci_low", "ci_high", "half_width") else v) for k, v in d.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--reference", default="unpruned/R", help="the model the drops are measured against (a name under OUT)")
    parser.add_argument("--pair", action="append", default=[], metavar="A,B",
                        help="two groups of seeds to compare seed by seed (B minus A); repeatable")
    a = parser.parse_args()
    out = Path(a.out)
    names = sorted(str(p.parent.relative_to(out)) for p in out.rglob("metrics.json"))
    if a.reference not in names:
        raise SystemExit(f"{out}: no reference {a.reference!r} (found: {', '.join(names) or 'nothing'})")
    ref = _correct(out / a.reference)
    order = sorted(ref)
    models, groups = {}, defaultdict(list)
    for name in names:
        metrics = json.loads((out / name / "metrics.json").read_text())
        correct = _correct(out / name)
        if correct.keys() != ref.keys():
            raise SystemExit(f"{out / name} does not score the same examples as {a.reference}")
        drop = paired_difference([ref[i] for i in order], [correct[i] for i in order])
        models[name] = {"accuracy": metrics["metric"], "relative_flops": metrics.get("relative_flops", 1.0),
                        "tokens_per_layer": metrics.get("tokens_per_layer"), "drop_points": _points(drop)}
        m = re.fullmatch(r"(.+)/seed-(\d+)", name)
        if m:
            groups[m.group(1)].append((int(m.group(2)), name, correct))
    summary = {}
    for group, members in sorted(groups.items()):
        members.sort()
        drops = [models[n]["drop_points"]["mean"] for _, n, _ in members]
        averaged = [sum(c[i] for _, _, c in members) / len(members) for i in order]
        summary[group] = {
            "seeds": [s for s, _, _ in members],
            "accuracy": summarize([models[n]["accuracy"] for _, n, _ in members]),
            "relative_flops": summarize([models[n]["relative_flops"] for _, n, _ in members]),
            "drop_points_over_seeds": summarize(drops),
            "drop_points_seed_averaged": _points(paired_difference([ref[i] for i in order], averaged)),
        }
    pairs = {}
    for spec in a.pair:
        ga, gb = spec.split(",")
        if ga not in groups or gb not in groups:
            raise SystemExit(f"--pair {spec}: no group {ga if ga not in groups else gb!r} under {out}")
        by_seed = [{s: c for s, _, c in groups[g]} for g in (ga, gb)]
        seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
        if not seeds:
            raise SystemExit(f"--pair {spec}: the two groups share no seed")
        diffs = [100 * (sum(by_seed[1][s].values()) - sum(by_seed[0][s].values())) / len(order) for s in seeds]
        mean_a = [sum(by_seed[0][s][i] for s in seeds) / len(seeds) for i in order]
        mean_b = [sum(by_seed[1][s][i] for s in seeds) / len(seeds) for i in order]
        pairs[f"{gb} - {ga}"] = {"seeds": seeds, "per_seed_points": diffs, "over_seeds": summarize(diffs),
                                 "seed_averaged": _points(paired_difference(mean_b, mean_a))}
    result = {"reference": a.reference, "num_examples": len(order), "models": models, "groups": summary,
              "pairs": pairs}
    (out / "full_test_summary.json").write_text(json.dumps(result, indent=1))

    print(f"{len(order)} test examples; reference {a.reference}: accuracy {models[a.reference]['accuracy']:.4f}")
    print("| model | test accuracy | rel. FLOPs | drop vs reference, points (paired 95% CI) |")
    print("|---|---|---|---|")
    for name, m in models.items():
        print(f"| {name} | {m['accuracy']:.4f} | {m['relative_flops']:.3f} | {_cell(m['drop_points'])} |")
    if summary:
        print("\n| recipe | seeds | test accuracy (mean ± 95% CI) | rel. FLOPs | drop over seeds (t 95% CI) "
              "| drop of the seed-averaged model (paired 95% CI) |")
        print("|---|---|---|---|---|---|")
        for group, g in summary.items():
            acc, over, avg = g["accuracy"], g["drop_points_over_seeds"], g["drop_points_seed_averaged"]
            acc_cell = f"{acc['mean']:.4f}" + ("" if acc["half_width"] is None else f" ± {acc['half_width']:.4f}")
            print(f"| {group} | {','.join(map(str, g['seeds']))} | {acc_cell} | {g['relative_flops']['mean']:.3f} | "
                  f"{_cell(over)} | {_cell(avg)} |")

    for name, d in pairs.items():
        print(f"\n{name}, test points: per seed {', '.join(f'{v:+.2f}' for v in d['per_seed_points'])}; "
              f"mean {_cell(d['over_seeds'], '+')} over seeds; seed-averaged models "
              f"{_cell(d['seed_averaged'], '+')} (paired over examples)")


if __name__ == "__main__":
    main()
