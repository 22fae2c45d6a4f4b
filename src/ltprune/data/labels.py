"""The label rule (see ``ltprune.data``): each label read by how it is written (missing,
integer, text, decimal), one kind per column, classes from the training rows."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from .tables import _Notes, _Rows, _Table


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
