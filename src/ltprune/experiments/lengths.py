"""Train vs dev length distributions (paper Table 2, Fig. 1).

Why: one length configuration per data set (LAT) is tuned on the lengths it sees; where dev
lengths differ from training lengths it misfits, and the paper's evidence is the KL divergence
between the two length histograms (large for SST-2 and STS-B, where LTP wins by most; small for
QQP, where LAT is level). We compute it per task on token lengths (the model's tokenizer,
special tokens included, no truncation) over shared integer-aligned bins, both histograms
smoothed with the same pseudo-count so that an empty bin cannot make KL infinite, with
``scipy.stats.entropy`` (nats). ``kl`` is KL(dev || train): how surprising dev lengths are under
the training distribution; the reverse direction is reported too.

Outputs: ``lengths.json`` (statistics, bins, smoothed histograms, KL), ``lengths.md`` (Table 2)
and ``lengths.png`` (Fig. 1: one panel per task).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from .. import data
from ..data import GLUE_TASKS, OFFLINE_TASKS
from ..errors import ConfigError, LTPError
from ..loading import load_tokenizer
from ..metrics import canonical_task_name
from ..runs import write_json_atomic

def token_lengths(dataset, tokenizer, has_pair: bool, batch_size: int = 1000) -> np.ndarray:
    """Untruncated token lengths (special tokens included) of a ``load_task`` split."""
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start:start + batch_size]
        texts = (rows["text"], rows["text_pair"]) if has_pair else (rows["text"],)
        with warnings.catch_warnings():  # "longer than the model's maximum": we only count
            warnings.simplefilter("ignore")
            out.extend(len(ids) for ids in tokenizer(*texts, truncation=False)["input_ids"])
    return np.asarray(out, dtype=np.int64)


def shared_bins(a, b, bins: int = 40) -> np.ndarray:
    """At most ``bins`` equal, integer-aligned bins covering both samples."""
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    lo = int(min(np.min(a), np.min(b)))
    hi = int(max(np.max(a), np.max(b))) + 1
    width = max(1, math.ceil((hi - lo) / bins))
    return np.arange(lo, hi + width, width)


def smoothed_histogram(lengths, edges, smoothing: float = 0.5) -> np.ndarray:
    """Bin probabilities with ``smoothing`` pseudo-counts added to every bin."""
    if smoothing < 0:
        raise ConfigError(f"smoothing must be >= 0, got {smoothing}")
    counts = np.histogram(lengths, bins=edges)[0].astype(np.float64) + smoothing
    return counts / counts.sum()


def kl_divergence(p, q) -> float:
    """KL(p || q) in nats (``scipy.stats.entropy``; both are normalised by it)."""
    from scipy.stats import entropy

    return float(entropy(p, q))


def compare_lengths(train, dev, bins: int = 40, smoothing: float = 0.5) -> dict:
    """Statistics, shared bins, smoothed histograms and both KL directions of two length samples."""
    train, dev = np.asarray(train), np.asarray(dev)
    if train.size == 0 or dev.size == 0:
        raise LTPError("both splits need at least one example to compare lengths")
    edges = shared_bins(train, dev, bins)
    p_train, p_dev = smoothed_histogram(train, edges, smoothing), smoothed_histogram(dev, edges, smoothing)
    return {"train": _stats(train), "dev": _stats(dev), "edges": edges.tolist(),
            "train_hist": p_train.round(8).tolist(), "dev_hist": p_dev.round(8).tolist(),
            "kl": kl_divergence(p_dev, p_train), "kl_train_dev": kl_divergence(p_train, p_dev)}


def _stats(x) -> dict:
    q = np.percentile(x, [25, 50, 75, 99])
    return {"n": int(x.size), "mean": round(float(x.mean()), 3), "std": round(float(x.std()), 3),
            "min": int(x.min()), "q1": float(q[0]), "median": float(q[1]), "q3": float(q[2]),
            "p99": float(q[3]), "max": int(x.max())}


def length_distributions(tasks, tokenizer, output_dir, *, data_kwargs: dict | None = None, bins: int = 40,
                         smoothing: float = 0.5) -> dict:
    """Table 2 / Fig. 1 for each task (names or paths, as ``load_task`` takes them).

    ``tokenizer``: a tokenizer or a model folder / hub name to load one from. Returns and writes
    {"tokenizer", "bins", "smoothing", "tasks": {task name: compare_lengths(...)}}.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    if not tasks:
        raise ConfigError("no tasks given")
    name = str(tokenizer) if isinstance(tokenizer, (str, Path)) else getattr(tokenizer, "name_or_path", "")
    if Path(name).exists():  # a local folder: its last two parts say enough, the full path is noise
        name = "/".join(Path(name).resolve().parts[-2:])
    name = name or type(tokenizer).__name__
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(str(tokenizer))
    results = {}
    for task in tasks:
        kwargs = dict(data_kwargs or {})
        if canonical_task_name(str(task)) not in GLUE_TASKS + OFFLINE_TASKS:
            kwargs.pop("data_dir", None)  # a folder of GLUE data means nothing to a custom file
        dsd, info = data.load_task(task, **kwargs)
        if "train" not in dsd or "validation" not in dsd:
            raise LTPError(f"task {task!r} needs a train and a validation split")
        lengths = {s: token_lengths(dsd[s], tokenizer, info.has_pair) for s in ("train", "validation")}
        results[info.name] = compare_lengths(lengths["train"], lengths["validation"], bins, smoothing)
    summary = {"tokenizer": name, "bins": bins, "smoothing": smoothing, "kl": "KL(dev || train), nats",
               "tasks": results}
    output_dir = Path(output_dir)
    write_json_atomic(output_dir / "lengths.json", summary)
    (output_dir / "lengths.md").write_text(format_table2(summary) + "\n")
    plot_lengths(summary, output_dir / "lengths.png")
    return summary


def format_table2(data: dict) -> str:
    """Table 2 as markdown: length statistics of train and dev, and their KL divergence."""
    lines = ["| task | train n | train mean | train median | dev n | dev mean | dev median "
             "| KL(dev‖train) | KL(train‖dev) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, r in data["tasks"].items():
        t, d = r["train"], r["dev"]
        lines.append(f"| {task} | {t['n']} | {t['mean']:.1f} | {t['median']:g} | {d['n']} | {d['mean']:.1f} | "
                     f"{d['median']:g} | {r['kl']:.4f} | {r['kl_train_dev']:.4f} |")
    lines.append("")
    lines.append(f"Token lengths with the {data['tokenizer']} tokenizer (special tokens included, no truncation); "
                 f"histograms over at most {data['bins']} shared bins with {data['smoothing']:g} pseudo-counts "
                 "per bin; KL in nats.")
    return "\n".join(lines)


def plot_lengths(data: dict, path) -> Path:
    """Fig. 1: train and dev length densities per task, KL in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(data["tasks"])
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    for ax, task in zip(axes.flat, tasks):
        r = data["tasks"][task]
        edges = np.asarray(r["edges"], dtype=float)
        widths = np.diff(edges)
        for key, color, label in (("train_hist", "tab:blue", "train"), ("dev_hist", "tab:orange", "dev")):
            density = np.asarray(r[key]) / widths
            ax.stairs(density, edges, color=color, linewidth=1.6, label=f"{label} (n={r[key[:-5]]['n']})",
                      fill=key == "train_hist", alpha=0.35 if key == "train_hist" else 1.0)
        ax.set_title(f"{task}: KL(dev‖train) = {r['kl']:.3f}", fontsize=10)
        ax.set_xlabel("tokens")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


__all__ = ["token_lengths", "shared_bins", "smoothed_histogram", "kl_divergence", "compare_lengths",
           "length_distributions", "format_table2", "plot_lengths"]
