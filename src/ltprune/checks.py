"""Checks of command-line input that run before any heavy work (no torch, no transformers).

A typo in a path or a flag should cost a fraction of a second, not the ten seconds it takes to
import torch and transformers, and never a training run: an output folder that cannot be
written is found before data and model are loaded, not when the results are saved.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .errors import CheckpointError, ConfigError
from .names import STAGES as TRAIN_STAGES

#: The training stages, in the only order they can run.


def check_output_dir(path, option: str = "--output-dir") -> Path:
    """Refuse an output folder that is a file, lies under a file, or cannot be written (a
    read-only folder or file system, /proc). Writes nothing that stays: the check creates and
    removes a probe file in the folder, or in its nearest existing parent."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: exists and is not a folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".ltprune-probe-"):
            pass
    except OSError as exc:
        where = "" if existing == folder else f" (cannot create files in {existing})"
        raise ConfigError(f"{option} {folder}: cannot write there{where}: {exc.strerror or exc}") from None
    return folder


def looks_like_path(name: str) -> bool:
    """Whether ``--model`` names a local path rather than a hub id (``org/name``)."""
    return (Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") >= 2
            or Path(name).suffix.lower() in (".json", ".safetensors", ".bin", ".pt", ".pth", ".txt"))


def check_model_path(name, kind: str = "model folder") -> None:
    """One line for a ``--model`` that cannot be a model: a missing path, a file (often
    ``config.json`` itself), a folder without ``config.json``. Hub names pass through."""
    name = str(name)
    if not looks_like_path(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise CheckpointError(f"{name}: no such {kind}")
    if not path.is_dir():
        raise CheckpointError(f"{name}: is a file; --model takes the folder that holds config.json and the "
                              f"weights (here perhaps {path.parent})")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{name}: not a {kind} (no config.json)")


def check_at_least(value, option: str, minimum: int = 1, hint: str = "") -> None:
    """``value`` (an int or None: not given) must be >= ``minimum``."""
    if value is not None and value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}{hint}")


def check_threads(value, option: str = "--threads") -> None:
    """0 would let torch take every core (two runs on two cores would oversubscribe), a
    negative number crashes torch: both are refused."""
    check_at_least(value, option, 1, hint=" (leave it out to use torch's default)" if value == 0 else "")


def parse_int_list(text, option: str, minimum: int = 1) -> tuple[int, ...]:
    """A comma list of integers >= ``minimum`` (``--batch-sizes 1,8,32``)."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < minimum for v in values):
        raise ConfigError(f"{option} must be a comma list of integers >= {minimum}, got {text!r}")
    return values


def parse_choices(text, option: str, choices) -> tuple[str, ...]:
    """A comma list of names, each one of ``choices``."""
    values = tuple(v.strip() for v in str(text).split(",") if v.strip())
    unknown = [v for v in values if v not in choices]
    if unknown or not values:
        raise ConfigError(f"{option}: unknown value {(unknown or [text])[0]!r}; choose from {', '.join(choices)}")
    return values


def parse_stages(text, allowed=TRAIN_STAGES) -> list[str]:
    """``--stages``: known names, each once, in the order they run (a hard stage before its soft
    stage would train thresholds after freezing them)."""
    stages = list(parse_choices(text, "--stages", allowed))
    order = [s for s in allowed if s in stages]
    if stages != order:
        raise ConfigError(f"--stages must list {', '.join(allowed)} in that order, each at most once; "
                          f"got {','.join(stages)} (did you mean {','.join(order)}?)")
    return stages


def check_readable_file(path, option: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{option} {file}: no such file")
    if not os.access(file, os.R_OK):
        raise ConfigError(f"{option} {file}: not readable")
    return file


def parse_floats(text: str | None, option: str) -> list[float] | None:
    if text is None or not str(text).strip():
        return None
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} must be a comma list of numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{option} must be a comma list of finite numbers, got {text!r}")
    return values


def parse_length_config(text: str, option: str = "--length-config") -> dict:
    """A LAT length configuration for ``ltprune eval``: ``{"keep_lengths": [...]}`` (absolute
    tokens per layer) or ``{"keep_ratios": [...]}`` (fractions of each input), as JSON text, a
    JSON file (also a LAT ``search.json``, whose ``best`` is used, or a sweep point), or a comma
    list (integers: lengths; fractions: ratios). Returns {"keep_lengths": [...]} or
    {"keep_ratios": [...]}."""
    raw = str(text).strip()
    source = raw
    if raw and raw[0] not in "[{" and looks_like_path(raw) and Path(raw).expanduser().is_file():
        source = check_readable_file(raw, option).read_text(encoding="utf-8")
    value = None
    if source.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{option}: not valid JSON ({exc})") from None
    else:
        value = parse_floats(source, option)
        if value is None:
            raise ConfigError(f"{option}: empty length configuration")
    if isinstance(value, dict) and isinstance(value.get("best"), dict):
        value = value["best"]  # a LAT search state file
    if isinstance(value, dict):
        keys = [k for k in ("keep_lengths", "keep_ratios") if value.get(k) is not None]
        if len(keys) != 1:
            raise ConfigError(f"{option}: give exactly one of keep_lengths or keep_ratios, got {sorted(value)}")
        kind, values = keys[0], value[keys[0]]
    else:
        values = value
        kind = "keep_lengths" if all(float(v) == int(v) and float(v) >= 1 for v in values) else "keep_ratios"
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ConfigError(f"{option}: {kind} must be a non-empty list of numbers, got {values!r}")
    if kind == "keep_lengths":
        if not all(float(v) == int(v) and v >= 1 for v in values):
            raise ConfigError(f"{option}: keep_lengths must be integers >= 1, got {values}")
        return {"keep_lengths": [int(v) for v in values]}
    if not all(0 <= v <= 1 for v in values):
        raise ConfigError(f"{option}: keep_ratios must lie in [0, 1], got {values}")
    return {"keep_ratios": [float(v) for v in values]}
