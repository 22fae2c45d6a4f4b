"""Names ltprune writes to disk and the stage names: one definition each, torch-free, so that the
command line can use them before torch loads."""

from __future__ import annotations

#: The key of the LTP config in a checkpoint's ``config.json``, and the thresholds' parameter.
CONFIG_KEY = "ltp_config"
THRESHOLDS = "ltp_thresholds"
#: Written last into a finished stage's ``final/`` folder (its summary): the stage is done.
DONE = "ltprune_stage.json"

#: The LTP recipe's stages, in order (METHOD §4); LAT's LengthDrop training is a stage too.
STAGES = ("finetune", "soft", "hard")
STAGE_NAMES = (*STAGES, "lengthdrop")
#: The mode each stage trains in, and the stages that keep their best dev checkpoint.
STAGE_MODES = {"finetune": "off", "soft": "soft", "hard": "hard", "lengthdrop": "off"}
KEEP_BEST = ("hard", "lengthdrop")

#: ``ltprune sweep``: its methods and the knob values each one sweeps by default.
SWEEP_METHODS = ("ltp", "topk", "manual", "lat")
SWEEP_KNOBS = {
    "ltp": [0.01, 0.05, 0.1, 0.2, 0.4],            # paper: 0.001 to 0.4
    "topk": [0.75, 0.5, 0.25, 0.0, -0.5, -1.0],    # paper: 1.0 down to -1.0
    "manual": [0.001, 0.002, 0.005, 0.01, 0.02],   # METHOD §9: sweep below 0.01 too
    "lat": [0.9, 0.75, 0.6, 0.5, 0.4],
}

QA_SUFFIX = "ForQuestionAnswering"


def is_qa_class(name: str) -> bool:
    """Whether a transformers class name is a question-answering head."""
    return name.endswith(QA_SUFFIX)
