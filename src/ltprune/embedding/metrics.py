"""How close a pruned model's embeddings stay to the unpruned model's, and what they are worth.

All functions take plain NumPy arrays (N, D) in the same row order, so they score any two
encoders. ``reference`` is the unpruned model's output on the same texts.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from ..errors import LTPError


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _check(a, b) -> None:
    if np.shape(a) != np.shape(b):
        raise LTPError(f"embeddings of shape {np.shape(a)} and {np.shape(b)} cannot be compared")


def mean_cosine(vectors, reference) -> float:
    """Mean over texts of cos(pruned_i, unpruned_i)."""
    _check(vectors, reference)
    return float((_unit(vectors) * _unit(reference)).sum(1).mean())


def neighbours(vectors, k: int) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows by cosine (itself excluded)."""
    unit = _unit(vectors)
    if k >= len(unit):
        raise LTPError(f"recall@{k} needs more than {k} documents, got {len(unit)}")
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    return top


def recall_at_k(vectors, reference, k: int = 10) -> float:
    """Neighbour agreement: the share of the unpruned model's top-k neighbours of each document
    (among all the others) that the pruned model's top-k also finds; mean over documents."""
    _check(vectors, reference)
    a, b = neighbours(vectors, k), neighbours(reference, k)
    hits = [len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist())]
    return float(np.mean(hits) / k)


def probe_accuracy(vectors, labels, folds: int = 5, seed: int = 0) -> float:
    """Linear-probe accuracy: logistic regression, stratified ``folds``-fold cross-validation on
    the given embeddings (needs no training data beyond these labelled texts)."""

    labels = np.asarray(labels)
    if len(labels) != len(vectors):
        raise LTPError(f"{len(labels)} labels for {len(vectors)} embeddings")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(max_iter=2000, C=1.0), _unit(vectors), labels, cv=cv)
    return float(scores.mean())


def knn_accuracy(vectors, labels, k: int = 10) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine, majority vote)."""
    labels = np.asarray(labels)
    top = neighbours(vectors, k)
    votes = labels[top]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == labels).mean())


def agreement(vectors, reference, k: int = 10) -> dict:
    return {"mean_cosine": mean_cosine(vectors, reference),
            "min_cosine": float((_unit(vectors) * _unit(reference)).sum(1).min()),
            f"recall_at_{k}": recall_at_k(vectors, reference, k) if len(vectors) > k else None}
