"""Models and tokenizers from a folder or a hub name, checked before anything heavy is read.

A local folder that cannot load (no config, an unknown ``model_type``, pickle-only or truncated
weights) is refused with one line before the data are read; a base checkpoint gets a fresh
classification head, an ltprune checkpoint keeps its thresholds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from . import checkpoint
from .checkpoint import _safetensors_ok
from .config import LTPConfig
from .errors import CheckpointError, ConfigError, read_json
from .names import CONFIG_KEY
from .patch import patch
from .patch import reset_thresholds as reset


def model_max_tokens(config) -> int | None:
    """How many tokens the model's position embeddings can take (None: no such limit).

    RoBERTa-style models number positions from ``pad_token_id + 1``, so two of their 514
    positions are unusable; a tokenizer's ``model_max_length`` may exceed either (a tiny or
    re-configured model saved with a stock tokenizer), and the embeddings would then fail.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def load_model(name_or_path: str, num_labels: int, is_regression: bool, ltp: LTPConfig | None,
               reset_thresholds: bool = False, label_names=None, seed: int = 42):
    """A patched sequence-classification model from an ltprune checkpoint, a fine-tuned or a base
    transformers checkpoint (local path or hub name; a base gets a fresh classification head).

    An ltprune checkpoint brings the thresholds it was saved with; ``reset_thresholds`` puts
    them back to the initial schedule of ``ltp.final_threshold`` (what a new soft stage wants).
    ``label_names`` (the task's, ``TaskInfo.label_names``; numbered ``"0"``, ``"1"``... when None)
    become the config's ``id2label`` / ``label2id``, so every checkpoint saved from the model, and
    ``predict``, ``report`` and the pipeline, name the classes as the data did.
    ``seed`` seeds a new classification head's initial weights (in a forked RNG, so the caller's
    global RNG is untouched). Without it the head came from whatever state the global RNG was in,
    and two same-seed runs from a base checkpoint (``ltprune demo``) gave different models.
    """
    path = Path(name_or_path)
    check_model_source(name_or_path)
    model = load_saved(name_or_path, ltp)
    if model is not None:
        saved = getattr(model.config, "num_labels", num_labels)
        if saved != num_labels:
            raise ConfigError(f"{path} has a {saved}-label head; the task has {num_labels} labels")
        if reset_thresholds:
            reset(model)
    else:
        try:
            hf_config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError, KeyError) as exc:  # ValueError/KeyError: an unknown model_type
            raise CheckpointError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
        kwargs = dict(num_labels=num_labels)
        if is_regression:
            kwargs["problem_type"] = "regression"
        if getattr(hf_config, "num_labels", None) != num_labels:
            kwargs["ignore_mismatched_sizes"] = True
        try:
            with torch.random.fork_rng(devices=[]):  # the new head's init: seeded, global RNG untouched
                torch.manual_seed(seed)
                model = AutoModelForSequenceClassification.from_pretrained(name_or_path, use_safetensors=True,
                                                                           **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:  # no safetensors, a damaged or mismatched file
            raise CheckpointError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
        patch(model, ltp or LTPConfig())
    if not is_regression:
        name_labels(model, label_names or [str(i) for i in range(num_labels)])
    return model


def load_saved(name_or_path, ltp: LTPConfig | None = None):
    """An ltprune checkpoint, ``ltp``'s settings over its own (not its mode: a checkpoint keeps the
    mode it was saved in), or None when ``name_or_path`` is not one (a hub name or a plain
    transformers folder, which the task loads with its own head). A folder without
    ``config.json`` is refused. Every task's ``load_model`` starts here."""
    path = Path(str(name_or_path))
    config_file = path / "config.json"
    if config_file.is_file() and CONFIG_KEY in read_json(config_file):
        overrides = ltp.to_dict() if ltp is not None else {}
        overrides.pop("mode", None)
        return checkpoint.from_pretrained(path, **overrides)
    if path.exists() and not config_file.is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    return None


def name_labels(model, names) -> None:
    """Write the class names into the model's config (saved with every checkpoint)."""
    names = [str(n) for n in names]
    if len(names) != model.config.num_labels:
        raise ConfigError(f"{len(names)} label names for a {model.config.num_labels}-label head")
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:400]


def check_model_source(name_or_path) -> None:
    """A local model folder that cannot be loaded, found before the data are read and with one
    line (transformers would raise a traceback from deep inside): no or unreadable
    ``config.json``, a ``model_type`` this transformers does not know, pickle-only weights
    (refused: ltprune loads safetensors only), a truncated or corrupt safetensors file."""
    path = Path(name_or_path)
    if not path.is_dir():
        return  # a hub name, or a missing path that load_tokenizer reports
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    model_type = read_json(config_file).get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{config_file}: unknown model_type {model_type!r} (this transformers knows e.g. "
                              f"bert, roberta, distilbert, electra, xlm-roberta, vit)")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f"; found only {', '.join(pickles)}" if pickles else ""
        raise CheckpointError(f"{path}: no .safetensors weights (ltprune loads safetensors only, never pickles"
                              f"{found})")
    broken = [w.name for w in weights if not _safetensors_ok(w)]
    if broken:
        raise CheckpointError(f"{path}: cannot load the weights: {', '.join(broken)} is truncated or corrupt")


def load_tokenizer(name_or_path: str):
    """The model's tokenizer, its ``model_max_length`` capped to the model's position embeddings
    (so longer texts are truncated, with a warning, instead of crashing the embeddings)."""
    name = str(name_or_path)
    if (Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") >= 2) \
            and not Path(name).exists():  # a path, not a hub name: say so, not "Repo id must be..."
        raise CheckpointError(f"{name}: no such model folder")
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise CheckpointError(f"{name}: not a model folder (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:  # ValueError: tokenizer files missing or unusable
        raise CheckpointError(f"cannot load a tokenizer for {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    try:
        positions = model_max_tokens(AutoConfig.from_pretrained(name_or_path))
    except Exception:  # noqa: BLE001 - no readable model config: keep the tokenizer's own limit
        positions = None
    if positions is not None and (tokenizer.model_max_length or 0) > positions:
        tokenizer.model_max_length = positions
    return tokenizer
