"""ltprune: Learned Token Pruning for transformer encoders, with tokens really removed.

    import ltprune
    config = ltprune.LTPConfig(final_threshold=0.01, temperature=1e-3, lambda_=0.1, mode="hard")
    model = ltprune.patch(model, config)       # a loaded transformers model, patched in place
    out = model(**batch); out.ltp.tokens_in    # per-example alive tokens per layer, FLOPs, L_reg
    ltprune.set_mode(model, "off" | "soft" | "hard")
    model.save_pretrained(path); model = ltprune.from_pretrained(path)
"""

from .config import LTPConfig
from .engine import LTPRecords
from .errors import CheckpointError, ConfigError, DataError, LTPError, UnsupportedModelError
from .models import supported_classes
from .patch import (
    from_pretrained,
    get_config,
    get_thresholds,
    is_patched,
    patch,
    set_mode,
    set_thresholds,
    write_model_card,
)

__version__ = "0.1.0"

__all__ = [
    "LTPConfig", "LTPRecords", "patch", "set_mode", "from_pretrained", "get_config",
    "get_thresholds", "set_thresholds", "is_patched", "supported_classes", "write_model_card",
    "LTPError", "ConfigError", "UnsupportedModelError", "CheckpointError", "DataError",
]
