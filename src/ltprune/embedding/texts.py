"""Unlabeled text for the embedding task: a plain text file (one text a line), a CSV/TSV/JSONL
column, or the offline review sets without their labels.

Label-free training needs only texts; labels of the review sets are used by evaluation's probe
and nowhere else.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from ..data import load_task
from ..errors import DataError

OFFLINE = ("rotten_tomatoes", "imdb")
TEXT_COLUMNS = ("text", "sentence", "sentence1", "document", "content")


def load_texts(source, *, split: str = "train", column: str | None = None, limit: int | None = None,
               with_labels: bool = False):
    """Texts (and, with ``with_labels``, labels: offline sets only) from ``source``.

    ``split`` applies to the offline sets (their fixed seeded splits); a file is one pool of
    texts (see :func:`split_texts`). ``limit`` keeps the first N of a seeded order.
    """
    name = str(source).lower()
    if name in OFFLINE:

        dsd, _ = load_task(name, max_train_examples=limit if split == "train" else None,
                           max_eval_examples=limit if split != "train" else None)
        if split not in dsd:
            raise DataError(f"{name} has no {split!r} split (has {', '.join(dsd)})")
        texts, labels = list(dsd[split]["text"]), list(dsd[split]["label"])
        texts, labels = texts[:limit] if limit else texts, labels[:limit] if limit else labels
        return (texts, labels) if with_labels else texts
    if with_labels:
        raise DataError(f"{source}: labels (for the probe) come only with {' or '.join(OFFLINE)}")
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{source}: no such file (and not one of {', '.join(OFFLINE)})")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        texts = _column(_read_csv(path, "\t" if suffix == ".tsv" else ","), column, path)
    elif suffix in (".jsonl", ".json"):
        texts = _column(_read_json(path), column, path)
    else:
        if column:
            raise DataError(f"{path}: --text-column applies to CSV/TSV/JSONL files; a text file is one text a line")
        texts = _read_lines(path)
    texts = _drop_blank(texts, path)
    if not texts:
        raise DataError(f"{path}: no texts in it")
    return texts[:limit] if limit else texts


def split_texts(texts: list[str], eval_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed seeded (train, held-out) split of one pool of texts (at least one held out)."""

    if len(texts) < 2:
        raise DataError(f"need at least 2 texts to hold some out for evaluation, got {len(texts)}")
    order = np.random.default_rng(seed).permutation(len(texts))
    n_eval = max(1, int(round(len(texts) * eval_fraction)))
    held = set(order[:n_eval].tolist())
    return ([t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_lines(path: Path) -> list[str]:
    return _read_text(path).splitlines()


def _read_csv(path: Path, delimiter: str) -> list[dict]:
    rows = list(csv.DictReader(_read_text(path).splitlines(), delimiter=delimiter))
    if not rows:
        raise DataError(f"{path}: no rows under its header")
    return rows


def _read_json(path: Path) -> list[dict]:
    text = _read_text(path).strip()
    if text.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: expected one JSON object per row")
    return rows


def _column(rows: list[dict], column: str | None, path: Path) -> list[str]:
    names = list(rows[0]) if rows else []
    if column is None:
        column = next((c for c in TEXT_COLUMNS if c in names), None)
        if column is None:
            raise DataError(f"{path}: no text column ({', '.join(TEXT_COLUMNS)}); columns: {', '.join(names)}; "
                            "name it with --text-column")
    elif column not in names:
        raise DataError(f"{path}: no column {column!r}; columns: {', '.join(names)}")
    return ["" if r.get(column) is None else str(r.get(column)) for r in rows]


def _drop_blank(texts: list[str], path: Path) -> list[str]:
    kept = [t for t in texts if t.strip()]
    if len(kept) < len(texts):
        warnings.warn(f"{path}: skipped {len(texts) - len(kept)} empty texts", UserWarning, stacklevel=3)
    return kept
