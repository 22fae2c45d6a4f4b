"""Reading one file into a table: CSV / TSV (GLUE's quirks included), JSON Lines, JSON, with a
one-line error naming the file, line and column for anything unreadable.

Hand-written rather than ``pandas.read_csv`` / ``datasets``: those coerce types per column
(``"1.0"`` becomes a float, ``"NA"`` a NaN) before the label rule can see how a value was
written, and report a bad line as a parser traceback rather than the line number."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .tables import _Notes, _Table


_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")


_TRAIN_STEMS = ("train",)


_VALIDATION_STEMS = ("validation", "valid", "val", "dev")


_TEST_STEMS = ("test",)


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
