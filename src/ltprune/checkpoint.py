"""Checkpoints on disk: loading an ltprune checkpoint, and telling a whole file from a broken one.

``from_pretrained`` is the inverse of a patched model's ``save_pretrained``: the class recorded
in ``config.json``, weights through safetensors only, the saved LTP config, the thresholds and
(for a quantization-aware checkpoint) its activation quantizers. The file checks let a resume
skip a checkpoint that a full disk or a cut copy left half-written.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import transformers
from safetensors import safe_open
from torch import nn

from .config import LTPConfig
from .errors import CheckpointError, ConfigError, UnsupportedModelError, read_json
from .models import supported_classes
from .names import CONFIG_KEY, THRESHOLDS
from .patch import _validate_thresholds, get_thresholds, patch, set_thresholds
from .quantization import restore_quantization


def from_pretrained(path, *, mode: str | None = None, **overrides) -> nn.Module:
    """Load a checkpoint written by ``model.save_pretrained`` of a patched model.

    The model class recorded in the checkpoint is loaded (weights through safetensors only,
    never remote code), patched with the saved LTP config (``mode`` and other keyword arguments
    override it), and its thresholds restored and validated.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no config.json)")
    raw = read_json(config_file)
    if CONFIG_KEY not in raw:
        raise CheckpointError(
            f"{path}: no LTP config in config.json; for a plain transformers checkpoint use "
            "ltprune.patch(AutoModelFor...from_pretrained(path), LTPConfig())")
    if not isinstance(raw[CONFIG_KEY], dict):
        raise CheckpointError(f"{config_file}: ltp_config must be an object, got {type(raw[CONFIG_KEY]).__name__}")
    try:
        ltp = LTPConfig.from_dict(raw[CONFIG_KEY])
    except (ConfigError, TypeError) as exc:  # a checkpoint from another ltprune version, or edited by hand
        raise CheckpointError(f"{config_file}: ltp_config: {exc}") from None
    changes = dict(overrides)
    if mode is not None:
        changes["mode"] = mode
    ltp = ltp.replace(**changes)
    archs = raw.get("architectures") or []
    if not archs or archs[0] not in supported_classes():
        raise UnsupportedModelError(
            f"{path}: architecture {archs[:1]} is not supported; supported: {', '.join(supported_classes())}")
    cls = getattr(transformers, archs[0])
    weights = _weight_files(path)
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the thresholds are an "unexpected" key for the stock class
    try:
        model = cls.from_pretrained(path, use_safetensors=True)
    except Exception as exc:  # corrupt or truncated files surface here from several libraries
        raise CheckpointError(f"{path}: cannot load the weights ({type(exc).__name__}: {exc})") from None
    finally:
        logger.setLevel(level)
    patch(model, ltp)
    set_thresholds_from_files(model, weights)
    if (raw.get("ltp_quantization") or {}).get("activation_bits"):
        restore_quantization(model)  # the activation quantizers it was trained with, saved ranges
    return model


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no .safetensors weights (ltprune loads safetensors only)")
    return files


def set_thresholds_from_files(model: nn.Module, files: list[Path]) -> None:
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    if key.endswith(THRESHOLDS):
                        values = handle.get_tensor(key)
                        _validate_thresholds(values, get_thresholds(model).numel(), str(file))
                        set_thresholds(model, values)
                        return
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
    raise CheckpointError(f"{files[0].parent}: the checkpoint has no {THRESHOLDS} tensor")


#: Files Trainer writes with ``torch.save`` (optimizer.pt, scheduler.pt, rng_state.pth,
#: training_args.bin...): zip archives, checked without unpickling them.
TORCH_STATE_SUFFIXES = (".pt", ".pth", ".bin")


def _zip_ok(file: Path) -> bool:
    """Whether a ``torch.save`` file is a whole zip archive whose every member matches its CRC:
    a truncated or overwritten optimizer state fails here, not inside ``Trainer`` on resume."""
    try:
        with zipfile.ZipFile(file) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, RuntimeError):
        return False


def _safetensors_ok(file: Path) -> bool:
    """Whether ``safe_open`` accepts the file: it checks the header and that the tensors it
    lists cover the file exactly, so a truncated file fails (no tensor data is read)."""
    try:
        with safe_open(str(file), framework="pt"):
            return True
    except Exception:  # noqa: BLE001 - any failure to parse means the file cannot be resumed from
        return False
