"""Per-example plots from an evaluation's ``examples.jsonl`` (paper Fig. A.2, A.3).

Why: averages hide the two properties the paper claims for LTP. Fig. A.2 shows that the number
of tokens kept at each layer follows each input's length and content (LAT's one configuration
is a flat line per layer once inputs are longer than it); Fig. A.3 shows that errors are not
concentrated on short or long inputs (no length bias). Both only need the records every
``ltprune eval`` / ``write_metrics`` already writes: per example ``length``, ``tokens_in`` (alive
entering each layer) and ``label``/``prediction`` (or ``correct``, as QA writes it).

Outputs in the output folder: ``kept_per_layer.png`` (A.2), ``length_correct.png`` (A.3),
``per_example.json`` (the numbers behind them). Several eval folders (e.g. LTP and LAT) are
drawn side by side.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DataError, LTPError
from ..runs import write_json_atomic


EXAMPLES = "examples.jsonl"


def read_examples(eval_dir) -> list[dict]:
    """The rows of ``eval_dir/examples.jsonl`` (or of the file itself)."""
    path = Path(eval_dir)
    path = path / EXAMPLES if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"{path}: no such file (run ltprune eval first; it writes examples.jsonl)")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not JSON ({exc})") from None
        if "length" not in row or "tokens_in" not in row:
            raise DataError(f"{path}:{n}: a row needs 'length' and 'tokens_in'")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def correctness(rows) -> np.ndarray | None:
    """Per example True/False, or None for a regression task (no notion of a wrong answer)."""
    if all("correct" in r for r in rows):
        return np.array([bool(r["correct"]) for r in rows])
    if not all("label" in r and "prediction" in r for r in rows):
        return None
    labels = [r["label"] for r in rows]
    if any(isinstance(v, float) and not float(v).is_integer() for v in labels):
        return None
    return np.array([r["label"] == r["prediction"] for r in rows])


def kept_matrix(rows) -> np.ndarray:
    """(N, K) tokens alive after layers 1..K: ``tokens_kept`` when the rows have it (all L
    layers), else ``tokens_in`` shifted by one (entering layer l+1 = kept after l; L-1 layers)."""
    if all("tokens_kept" in r for r in rows):
        return np.array([r["tokens_kept"] for r in rows], dtype=float)
    return np.array([r["tokens_in"] for r in rows], dtype=float)[:, 1:]


def kept_per_layer_stats(rows) -> dict:
    """Tokens kept after each layer, against the input length."""
    from scipy.stats import spearmanr

    lengths = np.array([r["length"] for r in rows], dtype=float)
    tokens = np.array([r["tokens_in"] for r in rows], dtype=float)  # (N, L): entering layer l
    kept_all = kept_matrix(rows)
    layers = []
    for layer in range(1, kept_all.shape[1] + 1):
        kept = kept_all[:, layer - 1]
        rho = spearmanr(lengths, kept).statistic if np.ptp(lengths) > 0 and np.ptp(kept) > 0 else math.nan
        layers.append({"after_layer": layer, "mean_kept": round(float(kept.mean()), 3),
                       "mean_kept_fraction": round(float((kept / lengths).mean()), 4),
                       "spearman_with_length": None if math.isnan(rho) else round(float(rho), 4)})
    return {"num_examples": len(rows), "num_layers": int(tokens.shape[1]),
            "mean_length": round(float(lengths.mean()), 3),
            "mean_tokens_per_layer": round(float(tokens.mean()), 3), "layers": layers}


def length_bias_stats(rows) -> dict | None:
    """Lengths of correct vs wrong predictions: means, Mann-Whitney U p-value, point-biserial
    correlation, accuracy per length quartile. None for regression."""
    from scipy.stats import mannwhitneyu, pointbiserialr

    ok = correctness(rows)
    if ok is None:
        return None
    lengths = np.array([r["length"] for r in rows], dtype=float)
    out = {"num_correct": int(ok.sum()), "num_wrong": int((~ok).sum()), "accuracy": round(float(ok.mean()), 4),
           "mean_length_correct": round(float(lengths[ok].mean()), 3) if ok.any() else None,
           "mean_length_wrong": round(float(lengths[~ok].mean()), 3) if (~ok).any() else None,
           "mannwhitney_p": None, "pointbiserial_r": None}
    if ok.any() and (~ok).any():
        out["mannwhitney_p"] = round(float(mannwhitneyu(lengths[ok], lengths[~ok]).pvalue), 6)
        if np.ptp(lengths) > 0:
            out["pointbiserial_r"] = round(float(pointbiserialr(ok.astype(float), lengths).statistic), 6)
    edges = np.percentile(lengths, [25, 50, 75])
    bucket = np.searchsorted(edges, lengths, side="left")
    out["accuracy_by_length_quartile"] = [
        {"quartile": q + 1, "n": int((bucket == q).sum()),
         "accuracy": round(float(ok[bucket == q].mean()), 4) if (bucket == q).any() else None} for q in range(4)]
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_kept_per_layer(runs: dict, path) -> Path:
    """Fig. A.2: one panel per run; tokens kept after each layer vs input length (points and
    the mean per length), the input length itself as the dashed diagonal."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], runs.items()):
        lengths = np.array([r["length"] for r in rows])
        kept_all = kept_matrix(rows)
        n_kept = kept_all.shape[1]
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, n_kept)))
        for layer in range(1, n_kept + 1):
            kept = kept_all[:, layer - 1]
            ax.scatter(lengths, kept, s=6, alpha=0.25, color=colors[layer - 1])
            xs = np.unique(lengths)
            ax.plot(xs, [kept[lengths == x].mean() for x in xs], color=colors[layer - 1], linewidth=1.4,
                    label=f"after layer {layer}")
        top = lengths.max()
        ax.plot([0, top], [0, top], color="gray", linestyle="--", linewidth=0.8, label="input length")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel("tokens kept")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Tokens kept per layer vs input length (Fig. A.2)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_length_correct(runs: dict, path) -> Path:
    """Fig. A.3: one panel per run; length densities of correct and wrong predictions."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], runs.items()):
        ok = correctness(rows)
        lengths = np.array([r["length"] for r in rows])
        if ok is None:
            ax.text(0.5, 0.5, "regression task:\nno correct / wrong", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(name, fontsize=10)
            continue
        edges = np.histogram_bin_edges(lengths, bins=min(30, max(5, len(np.unique(lengths)))))
        for sel, color, label in ((ok, "tab:green", "correct"), (~ok, "tab:red", "wrong")):
            if sel.any():
                ax.hist(lengths[sel], bins=edges, density=True, histtype="stepfilled" if label == "correct" else "step",
                        alpha=0.35 if label == "correct" else 1.0, color=color, linewidth=1.5,
                        label=f"{label} (n={int(sel.sum())}, mean {lengths[sel].mean():.1f})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Input length of correct vs wrong predictions (Fig. A.3)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _names(eval_dirs, labels) -> list[str]:
    if labels:
        if len(labels) != len(eval_dirs):
            raise LTPError(f"{len(labels)} labels for {len(eval_dirs)} eval folders")
        return list(labels)
    paths = [Path(d).resolve() for d in eval_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):  # e.g. .../ltp/0.1/to_q2 and .../lat/0.1/to_q2
        names = ["/".join(p.parts[-3:]) for p in paths]
    return names


def per_example_report(eval_dirs, output_dir=None, labels=None) -> dict:
    """Fig. A.2 + A.3 and their numbers for one or more eval folders; written to ``output_dir``
    (default: the first eval folder). Returns the content of ``per_example.json``."""
    if isinstance(eval_dirs, (str, Path)):
        eval_dirs = [eval_dirs]
    if not eval_dirs:
        raise LTPError("no eval folders given")
    runs = {name: read_examples(d) for name, d in zip(_names(eval_dirs, labels), eval_dirs)}
    output_dir = Path(output_dir) if output_dir is not None else Path(eval_dirs[0])
    output_dir.mkdir(parents=True, exist_ok=True)
    data = {"runs": {name: {"source": str(d), "kept_per_layer": kept_per_layer_stats(rows),
                            "length_bias": length_bias_stats(rows)}
                     for (name, rows), d in zip(runs.items(), eval_dirs)}}
    plot_kept_per_layer(runs, output_dir / "kept_per_layer.png")
    plot_length_correct(runs, output_dir / "length_correct.png")
    write_json_atomic(output_dir / "per_example.json", data)
    return data


__all__ = ["read_examples", "correctness", "kept_per_layer_stats", "length_bias_stats", "plot_kept_per_layer",
           "plot_length_correct", "per_example_report"]
