"""Errors a user can act on.

Every failure that comes from the user's input (a model, a data file, a checkpoint, a
hyperparameter) is raised as an ``LTPError`` subclass with a one-line message, so the CLI can
print it without a traceback and library users can catch one type. ``read_json`` is here
because a corrupt JSON file (a config, a run record, a results file) is the most common such
input, and each reader must turn it into one of these errors the same way.
"""

import json
from pathlib import Path


class LTPError(Exception):
    """Base class for errors caused by the user's input."""


class ConfigError(LTPError, ValueError):
    """A hyperparameter or LTP config value is invalid."""


class UnsupportedModelError(LTPError, TypeError):
    """The model's architecture has no ltprune adapter."""


class CheckpointError(LTPError, OSError):
    """A checkpoint is missing, corrupt or inconsistent."""


class DataError(LTPError, ValueError):
    """A data set or file cannot be used as asked (missing column, empty file, bad labels...)."""


def read_json(path, *, error: type[LTPError] | None = None, expect: type | None = dict, hint: str = ""):
    """The JSON value in ``path``, or ``error`` (default ``CheckpointError``) with one line when the
    file cannot be read, is not JSON or is not an ``expect`` (an object by default; None: any).
    Checking the top-level type here is what keeps ``raw.get(...)`` in the callers from failing
    with an AttributeError on a file that holds, say, a list."""
    error = error or CheckpointError
    tail = f"; {hint}" if hint else ""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable JSON ({exc}){tail}") from None
    if expect is not None and not isinstance(value, expect):
        wanted = {dict: "an object", list: "an array"}.get(expect, expect.__name__)
        raise error(f"{path}: expected {wanted} in this JSON file, found {type(value).__name__}{tail}")
    return value
