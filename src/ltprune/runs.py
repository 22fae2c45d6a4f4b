"""Run folders that never lose work or change silently.

``ltprune train`` writes ``OUTPUT_DIR/ltprune_run.json`` (what the run was started with: task,
a fingerprint of the loaded data, model, stages, LTP config, stage arguments, quantization and
distillation options) before it trains, and ``OUTPUT_DIR/metrics.json`` (one line per finished
stage) as it goes. A rerun into the folder must say what it wants:

* without ``--resume`` or ``--overwrite``, a folder that holds results (a stage's checkpoints,
  ``final/`` or ``metrics.json``) is refused: forgetting ``--resume`` after Ctrl-C must not throw
  the progress away;
* ``--resume`` continues only the same run: any recorded setting that differs is named in a
  one-line error;
* ``--overwrite`` removes the previous run's stage folders and records (nothing else in the
  folder), then starts afresh.

``OUTPUT_DIR/.ltprune.lock`` (``fcntl.flock``, held by the main process for the whole run)
stops a second run from writing into the same folder. The kernel releases a flock when its
process dies, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from .checks import TRAIN_STAGES
from .errors import ConfigError, read_json

log = logging.getLogger("ltprune")

#: What a user can do about an unreadable file of a run folder.
AFRESH_HINT = "--overwrite to start the run afresh"

RECORD = "ltprune_run.json"
SUMMARY = "metrics.json"
LOCK = ".ltprune.lock"
RECORD_VERSION = 1
#: Recorded but not compared on --resume: they change what is printed, not what is trained.
NOT_COMPARED = ("logging_steps",)


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate job (or a plain process): the one that writes."""
    return int(os.environ.get("RANK", "0")) == 0


def write_json_atomic(path, data) -> None:
    """Write JSON through a temporary file, so a kill mid-write never truncates the results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.ltprune.lock`` for as long as the run
    lasts. The second run into the folder gets a one-line error naming the holder's pid."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.handle = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(f"{self.folder}: another ltprune run (pid {holder}) is writing into this folder; "
                              f"wait for it to finish or use another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def results_in(folder) -> list[str]:
    """What a previous run left in ``folder`` that a new one would replace (relative names)."""
    folder = Path(folder)
    found = []
    for stage in TRAIN_STAGES:
        stage_dir = folder / stage
        if not stage_dir.is_dir():
            continue
        found += [p.relative_to(folder).as_posix() for p in sorted(stage_dir.glob("checkpoint-*"))]
        found += [f"{stage}/{name}" for name in ("final", "metrics.json") if (stage_dir / name).exists()]
    if (folder / SUMMARY).is_file():
        found.append(SUMMARY)
    return found


def check_folder(folder, resume: bool, overwrite: bool) -> list[str]:
    """Refuse a folder holding results unless ``resume`` or ``overwrite`` says what to do with
    them. Reads only: every DDP rank can run it before rank 0 writes anything."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run or replace it")
    found = results_in(folder)
    if found and not (resume or overwrite):
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ConfigError(f"{folder} already holds a training run ({shown}); pass --resume to continue it or "
                          f"--overwrite to replace it")
    return found


def remove_previous_run(folder) -> None:
    """``--overwrite``: delete what an earlier run wrote (stage folders, records), nothing else."""
    folder = Path(folder)
    for stage in TRAIN_STAGES:
        if (folder / stage).is_dir():
            shutil.rmtree(folder / stage)
    for name in (SUMMARY, RECORD):
        (folder / name).unlink(missing_ok=True)
    log.warning("--overwrite: removed the previous run's stages and records in %s", folder)


def data_fingerprint(dsd) -> str:
    """SHA-256 of every loaded split's texts and labels (after splitting and subsampling), so a
    changed file, seed or ``--max-train-examples`` is a different run."""
    digest = hashlib.sha256()
    for name in sorted(dsd):
        split = dsd[name]
        digest.update(f"\x1e{name}\x1e{len(split)}".encode())
        for column in sorted(split.column_names):
            digest.update(f"\x1d{column}".encode())
            for value in split[column]:
                digest.update(f"{value!r}\x1f".encode())
    return digest.hexdigest()


def _resolved(name) -> str:
    path = Path(str(name)).expanduser()
    return str(path.resolve()) if path.exists() else str(name)


def make_record(*, task, model, stages, ltp, stage_args: dict, data_kwargs: dict | None, max_length,
                quantization=None) -> dict:
    """What a training run is started with (``ltprune_run.json``, without the data fingerprint,
    which needs the loaded data)."""
    data = {k: (_resolved(v) if k == "data_dir" and v is not None else v) for k, v in (data_kwargs or {}).items()}
    quant = {}
    for key in ("quantize", "quantize_activations", "quantize_granularity", "distill_from", "distill_alpha",
                "distill_temperature"):
        value = getattr(quantization, key, None) if quantization is not None else None
        quant[key] = _resolved(value) if key == "distill_from" and value is not None else value
    return {
        "task": _resolved(task),
        "data": data,
        "model": _resolved(model),
        "stages": list(stages),
        "ltp": ltp.to_dict() if ltp is not None else None,
        "stage_args": {stage: asdict(args) for stage, args in stage_args.items()},
        "max_length": max_length,
        "quantization": quant,
    }


def read_record(folder) -> dict | None:
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    return read_json(path, error=ConfigError, hint=AFRESH_HINT)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(old: dict, new: dict, keys=None) -> list[str]:
    """``key: old -> new`` for every compared setting that differs (dotted keys)."""
    keys = keys or [k for k in new if k not in ("version", "started", "ltprune")]
    flat_old = _flatten({k: old.get(k) for k in keys})
    flat_new = _flatten({k: new.get(k) for k in keys})
    out = []
    for key in sorted(set(flat_old) | set(flat_new)):
        if key.rsplit(".", 1)[-1] in NOT_COMPARED:
            continue
        a, b = flat_old.get(key), flat_new.get(key)
        if a != b:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


def check_same_run(folder, record: dict, keys=None) -> None:
    """``--resume``: refuse a run whose recorded settings differ from this one's."""
    old = read_record(folder)
    if old is None:
        if results_in(folder):
            log.warning("%s has no %s (an older ltprune made it): --resume cannot check that this is the same run",
                        folder, RECORD)
        return
    diffs = differences(old, record, keys)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ConfigError(f"{folder} holds a different run ({shown}); --resume continues only the same run: use "
                          f"another --output-dir, or --overwrite to replace it")


def write_record(folder, record: dict) -> Path:
    path = Path(folder) / RECORD
    full = {"version": RECORD_VERSION, "started": datetime.datetime.now().isoformat(timespec="seconds"),
            **record}
    write_json_atomic(path, full)
    return path


def update_summary(folder, stage: str, result: dict, *, task: str, model: str, stages) -> Path:
    """``OUTPUT_DIR/metrics.json``: per finished stage its dev metric, relative FLOPs and final
    model; ``final_model`` is the last finished stage's ``final/`` (for a hard stage, the best
    dev checkpoint, which ``load_best_model_at_end`` restored, not the last step)."""
    folder = Path(folder)
    path = folder / SUMMARY
    summary = read_json(path, error=ConfigError, hint=AFRESH_HINT) if path.is_file() else {}
    summary.update({"task": task, "model": model, "stages_requested": list(stages)})
    entry = {"metric_name": result.get("metric_name"), "metric": result.get("metric"),
             "relative_flops": result.get("relative_flops"), "final": str(folder / stage / "final"),
             "metrics": str(folder / stage / "metrics.json")}
    for key in ("relative_bops", "target_flops", "calibration_factor"):
        if key in result:
            entry[key] = result[key]
    if stage == "hard":
        entry["final_is"] = "the best dev checkpoint of the stage (load_best_model_at_end), not its last step"
    summary.setdefault("stages", {})[stage] = entry
    summary["final_model"] = entry["final"]
    write_json_atomic(path, summary)
    return path
