"""Task metrics, computed the way the LTP paper (following GLUE) reports them.

Every result has a headline ``"metric"`` key so training, threshold search and benchmarks can
compare any task with one number, plus the components the paper prints (e.g. F1 and accuracy
for MRPC/QQP). Values are fractions in [0, 1] (correlations in [-1, 1]), not percentages.
The formulas come from scikit-learn / SciPy so the numbers match published evaluation code.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .errors import ConfigError, DataError

__all__ = [
    "METRICS",
    "TASK_ALIASES",
    "TASK_METRICS",
    "canonical_task_name",
    "compute_metrics",
    "metric_for_task",
]

METRICS = ("accuracy", "f1_accuracy", "pearson_spearman", "matthews")

#: Headline metric per named task (GLUE convention; the movie review tasks use accuracy).
TASK_METRICS = {
    "sst2": "accuracy",
    "mrpc": "f1_accuracy",
    "stsb": "pearson_spearman",
    "qqp": "f1_accuracy",
    "mnli": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "cola": "matthews",
    "rotten_tomatoes": "accuracy",
    "imdb": "accuracy",
}

# Spellings users type for the same task (GLUE folder names, hyphens).
TASK_ALIASES = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "mnli-m": "mnli",
    "mnli_matched": "mnli",
    "rotten-tomatoes": "rotten_tomatoes",
}


def canonical_task_name(name: str) -> str:
    """Lower-case a task name and resolve aliases such as ``SST-2`` -> ``sst2``."""
    key = name.strip().lower()
    return TASK_ALIASES.get(key, key)


def metric_for_task(task_name: str) -> str:
    """Headline metric the paper reports for a named task.

    Custom data sets have no fixed metric: use ``TaskInfo.metric`` from ``load_task`` instead.
    """
    key = canonical_task_name(task_name)
    if key not in TASK_METRICS:
        raise ConfigError(
            f"no known metric for task {task_name!r}; known tasks: {', '.join(TASK_METRICS)} "
            f"(for custom data use TaskInfo.metric)"
        )
    return TASK_METRICS[key]


def compute_metrics(metric: str, predictions, labels) -> dict[str, float]:
    """Score predictions against labels with the named metric.

    ``predictions`` may be logits ``(N, C)`` (argmax is taken), class ids ``(N,)``, or for
    ``pearson_spearman`` regression outputs ``(N,)`` / ``(N, 1)``. NumPy arrays, lists and
    CPU/GPU tensors are accepted.

    Returns ``{"accuracy", "metric"}``, ``{"f1", "accuracy", "metric"}`` (mean of both),
    ``{"pearson", "spearmanr", "metric"}`` (mean of both) or ``{"matthews_correlation",
    "metric"}``. Correlations of a constant prediction are undefined; they are reported as 0.0
    (no linear/rank association), like scikit-learn's MCC, so a collapsed model early in training
    yields a comparable number instead of NaN.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    preds = _to_numpy(predictions, "predictions")
    y = _to_numpy(labels, "labels")

    if metric == "pearson_spearman":
        p = _squeeze_column(preds, "predictions")
        t = _squeeze_column(y, "labels").astype(np.float64)
        _check_lengths(p, t)
        if len(p) < 2:
            raise DataError("pearson_spearman needs at least 2 examples")
        if not np.all(np.isfinite(t)):
            raise DataError("labels contain NaN or infinite values")
        p = p.astype(np.float64)
        if np.ptp(p) == 0 or np.ptp(t) == 0:
            pearson = spearman = 0.0
        else:
            pearson = float(stats.pearsonr(p, t)[0])
            spearman = float(stats.spearmanr(p, t)[0])
        return {"pearson": pearson, "spearmanr": spearman, "metric": (pearson + spearman) / 2}

    ids = _class_ids(preds)
    t = _class_labels(y)
    _check_lengths(ids, t)
    if len(ids) == 0:
        raise DataError(f"{metric} needs at least 1 example, got none")
    acc = float(accuracy_score(t, ids))
    if metric == "accuracy":
        return {"accuracy": acc, "metric": acc}
    if metric == "f1_accuracy":
        extra = sorted((set(np.unique(t).tolist()) | set(np.unique(ids).tolist())) - {0, 1})
        if extra:
            raise DataError(f"f1_accuracy is for binary tasks (labels 0/1), got classes {extra}")
        f1 = float(f1_score(t, ids, average="binary", pos_label=1, zero_division=0.0))
        return {"f1": f1, "accuracy": acc, "metric": (f1 + acc) / 2}
    mcc = float(matthews_corrcoef(t, ids))
    return {"matthews_correlation": mcc, "metric": mcc}


def _to_numpy(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU, possibly bf16
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} cannot be converted to an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} must be numeric, got dtype {arr.dtype}")
    return arr


def _squeeze_column(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"regression {what} must have shape (N,) or (N, 1), got {arr.shape}")
    return arr


def _class_ids(preds: np.ndarray) -> np.ndarray:
    if preds.ndim == 2:
        if preds.shape[1] < 2:
            raise DataError(
                f"classification logits must have shape (N, C) with C >= 2, got {preds.shape}"
            )
        return preds.argmax(axis=1)
    if preds.ndim == 1:
        return _class_labels(preds, "predictions")
    raise DataError(f"predictions must be logits (N, C) or class ids (N,), got shape {preds.shape}")


def _class_labels(arr: np.ndarray, what: str = "labels") -> np.ndarray:
    if arr.ndim != 1:
        raise DataError(f"{what} must be class ids of shape (N,), got {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(f"{what} must be integer class ids, got non-integer values")
    return arr.astype(np.int64)


def _check_lengths(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise DataError(f"{len(a)} predictions but {len(b)} labels")
