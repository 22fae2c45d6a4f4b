"""sentence-transformers integration: a pruned encoder inside a ``SentenceTransformer``.

Why hooks and not a custom module class: since sentence-transformers 6, a ``modules.json`` type
outside ``sentence_transformers.*`` loads only when remote code is trusted (``trust_remote_code``). So a pruned
model stays a *stock* sentence-transformers folder (``Transformer`` + ``Pooling`` [+
``Normalize``]): the HF model inside it is patched with :func:`ltprune.patch`, its
``config.json`` carries ``ltp_config`` and its safetensors the ``ltp_thresholds`` (exactly as
for a classifier checkpoint). :func:`load` reads such a folder with ``SentenceTransformer`` and
re-applies the LTP config and thresholds; a plain ``SentenceTransformer(path)`` gives the
unpruned model (the thresholds are an unused tensor to it), as a plain ``from_pretrained`` does
for an ltprune classifier.

Two hooks on the ``Transformer`` module connect the pass to the pipeline without touching
sentence-transformers' code. That module calls ``model.forward`` directly (not ``model(...)``),
so the HF model's own hooks do not run: a pre-hook hands the engine the batch's padding mask
(``ltprune.patch.begin_pass``), a post-hook takes the pass's ``LTPRecords`` and puts them into
``features["ltp_records"]`` and, for ``survivors`` pooling, narrows the ``attention_mask`` that
the stock ``Pooling`` reads to the tokens that survived. ``encode()`` is the stock one: it sorts
texts by length and the engine packs the alive tokens (LTPConfig.layout, ``packed`` default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..checkpoint import _weight_files, set_thresholds_from_files
from ..config import LTPConfig
from ..errors import CheckpointError, ConfigError, LTPError, read_json
from ..names import CONFIG_KEY
from ..patch import begin_pass, get_config, is_patched, take_records, write_model_card
from ..patch import patch as patch_model
from .pooling import POOLINGS, PoolingSpec

#: LTPConfig.extra key holding the pooled-token choice (saved with the config)
POOLING_KEY = "embedding_pooling"
DEFAULT_POOLING = "survivors"
RECORDS_KEY = "ltp_records"

def is_sentence_transformer(obj) -> bool:
    """True for a ``SentenceTransformer`` (checked by class, without importing the package)."""
    return any(c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
               for c in type(obj).__mro__)


def require_sentence_transformers():
    try:
        import sentence_transformers
    except ImportError:
        raise LTPError("the embedding task needs sentence-transformers: pip install 'ltprune[embedding]'") from None
    return sentence_transformers


def parts(st) -> tuple[nn.Module, nn.Module, nn.Module, bool]:
    """(Transformer module, its HF model, the Pooling module, whether a Normalize follows)."""
    modules = list(st)
    transformer = next((m for m in modules if isinstance(getattr(m, "auto_model", None), nn.Module)), None)
    if transformer is None:
        raise LTPError("this SentenceTransformer has no Transformer module with a transformers model to prune")
    pooling = next((m for m in modules if type(m).__name__ == "Pooling"), None)
    if pooling is None:
        raise LTPError("this SentenceTransformer has no Pooling module (no 1_Pooling/config.json): ltprune needs "
                       "to know how token states become the embedding")
    normalize = any(type(m).__name__ == "Normalize" for m in modules)
    return transformer, transformer.auto_model, pooling, normalize


def pooling_spec(st, tokens: str | None = None) -> PoolingSpec:
    """The model's own pooling (from its Pooling and Normalize modules) as a :class:`PoolingSpec`."""
    _, hf, pooling, normalize = parts(st)
    mode = getattr(pooling, "pooling_mode", "mean")
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    names = {"mean": "mean", "mean_tokens": "mean", "cls": "cls", "cls_token": "cls", "max": "max", "max_tokens": "max"}
    if len(modes) != 1 or modes[0] not in names:
        raise LTPError(f"pooling mode {mode!r} is not supported for pruned embeddings (mean, cls or max)")
    if tokens is None:

        tokens = get_config(hf).extra.get(POOLING_KEY, DEFAULT_POOLING) if is_patched(hf) else DEFAULT_POOLING
    return PoolingSpec(names[modes[0]], tokens, normalize)


def patch_sentence_transformer(st, config: LTPConfig | None = None, *, pooling: str | None = None):
    """Patch the encoder of a loaded ``SentenceTransformer`` in place; returns ``st``.

    ``pooling``: ``survivors`` (default) or ``restored`` (see ``embedding.pooling``); kept in
    ``config.extra`` so that it is saved with the model. The returned object answers
    ``ltprune.get_config / set_mode / get_thresholds`` like a patched transformers model.
    """

    transformer, hf, _, _ = parts(st)
    config = LTPConfig() if config is None else config
    if not isinstance(config, LTPConfig):
        raise ConfigError(f"config must be an ltprune.LTPConfig, got {type(config).__name__}")
    if pooling is None:
        old = get_config(hf).extra if is_patched(hf) else {}
        pooling = config.extra.get(POOLING_KEY) or old.get(POOLING_KEY) or DEFAULT_POOLING
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    config = config.replace(extra={**config.extra, POOLING_KEY: pooling})
    first = not getattr(transformer, "_ltp_hooked", False)
    patch_model(hf, config)
    if first:
        transformer.register_forward_pre_hook(_begin)
        transformer.register_forward_hook(_deliver_records)
        object.__setattr__(transformer, "_ltp_hooked", True)
    object.__setattr__(st, "_ltp", hf._ltp)  # get_config / set_mode / thresholds work on st too
    return st


def _begin(module, args):

    features = args[0] if args else None
    if isinstance(features, Mapping) and features.get("modality", "text") == "text":
        begin_pass(module.auto_model, features.get("attention_mask"))


def _deliver_records(module, args, features):

    records = take_records(module.auto_model)
    if records is None or not isinstance(features, Mapping):
        return features
    features[RECORDS_KEY] = records
    state = module.auto_model._ltp
    if (state.config.extra.get(POOLING_KEY) == "survivors" and state.config.mode != "off"
            and "attention_mask" in features):
        mask = features["attention_mask"]
        features["attention_mask"] = mask * records.kept_mask.to(mask.device, mask.dtype)
    return features


def transformer_folder(path: Path) -> Path:
    """The folder of the Transformer module inside a sentence-transformers folder."""
    modules = path / "modules.json"
    if not modules.is_file():
        raise CheckpointError(f"{path}: not a sentence-transformers folder (no modules.json)")
    for entry in read_json(modules, expect=list):
        if isinstance(entry, dict) and str(entry.get("type", "")).endswith(".Transformer"):
            return path / entry.get("path", "")
    raise CheckpointError(f"{modules}: no Transformer module listed")


def load(path, *, mode: str | None = None, pooling: str | None = None, device: str | None = None, **overrides):
    """A saved pruned model as a patched ``SentenceTransformer``, its LTP config and thresholds
    restored (``mode`` and other LTPConfig fields override them). A stock sentence-transformers
    folder loads patched with the default config in ``off`` mode (pass ``mode="hard"`` to prune
    with the initial thresholds). Never runs remote code."""

    st_pkg = require_sentence_transformers()
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such model folder")
    folder = transformer_folder(path)
    raw = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    saved = raw.get(CONFIG_KEY)
    try:  # a stock folder: pruning off unless asked for (mode= or other overrides)
        config = LTPConfig.from_dict(saved) if isinstance(saved, dict) else LTPConfig(mode="off")
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: ltp_config: {exc}") from None
    changes = dict(overrides)
    if mode is not None:
        changes["mode"] = mode
    config = config.replace(**changes)
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the thresholds are an "unexpected" key for the stock class
    try:
        st = st_pkg.SentenceTransformer(str(path), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - several libraries raise here; one line for the user
        raise CheckpointError(f"{path}: cannot load as a SentenceTransformer ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        logger.setLevel(level)
    patch_sentence_transformer(st, config, pooling=pooling)
    if isinstance(saved, dict):
        set_thresholds_from_files(parts(st)[1], _weight_files(folder))
    return st


def save(st, path) -> Path:
    """``st.save(path)``: a stock sentence-transformers folder whose HF model carries the LTP
    config and thresholds (and the model card section)."""

    _, hf, _, _ = parts(st)
    st.save(str(path))
    write_model_card(hf, transformer_folder(Path(path)))
    return Path(path)
