"""ltprune: Learned Token Pruning for transformer encoders, with tokens really removed.

    import ltprune
    config = ltprune.LTPConfig(final_threshold=0.01, temperature=1e-3, lambda_=0.1, mode="hard")
    model = ltprune.patch(model, config)       # a loaded transformers model, patched in place
    out = model(**batch); out.ltp.tokens_in    # per-example alive tokens per layer, FLOPs, L_reg
    ltprune.set_mode(model, "off" | "soft" | "hard")
    model.save_pretrained(path); model = ltprune.from_pretrained(path)

The names that need torch are imported on first use (PEP 562), so ``import ltprune.cli`` stays
light and the command line can refuse bad input before torch and transformers load.
"""

from __future__ import annotations

import importlib
import sys
import types

from .config import LTPConfig
from .errors import CheckpointError, ConfigError, DataError, LTPError, UnsupportedModelError

__version__ = "0.1.0"

_LAZY = {
    "LTPRecords": "engine",
    "supported_classes": "models",
    "from_pretrained": "checkpoint",
    **{name: "patch" for name in ("get_config", "get_thresholds", "is_patched",
                                  "set_mode", "set_thresholds", "write_model_card")},
    "patch": "api",  # the function; the submodule ltprune.patch is the core's installer
}

__all__ = [
    "LTPConfig", "LTPRecords", "patch", "set_mode", "get_config",
    "get_thresholds", "set_thresholds", "is_patched", "supported_classes", "write_model_card",
    "LTPError", "ConfigError", "UnsupportedModelError", "CheckpointError", "DataError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ltprune' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule ``ltprune.patch`` must not hide the function ``ltprune.patch``
    (the eager ``from .patch import patch`` used to re-bind it; lazily nothing would)."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
