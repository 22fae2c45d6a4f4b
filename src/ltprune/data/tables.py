"""What every reader fills and every caller gets: ``TaskInfo``, the known task names, and the
in-memory table, rows and notes (warnings gathered per file) that the readers pass along."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence


OFFLINE_TASKS = ("rotten_tomatoes", "imdb")


GLUE_TASKS = ("sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "cola")


#: Maximum sequence length of the BERT-family encoders LTP targets (position embeddings).
MODEL_MAX_POSITIONS = 512


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
