"""Where a model runs: the device (the GPU when there is one) and torch's thread count."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def resolve_device(device="auto"):
    """Where evaluation runs. ``"auto"``: the GPU when there is one, as ``Trainer`` does for
    training, so that a model loaded from a checkpoint (a resumed sweep, a finished stage) is
    not evaluated on the CPU while a GPU sits idle; ``None``: wherever the model already is."""
    if device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    return None if device is None else torch.device(device)


def place(model, device="auto"):
    """Move ``model`` (in place) to ``resolve_device(device)``. Under ``"auto"`` a model already on
    an accelerator stays there (a torchrun rank keeps its own GPU); only a CPU model moves."""
    target = resolve_device(device)
    here = next(model.parameters()).device
    if target is not None and (device != "auto" or here.type == "cpu"):
        model.to(target)
    return model


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (two processes on two cores must not each take two).
    ``None``: torch's default (under torchrun, the cores shared out among the local ranks)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be an integer >= 1 (or None: torch's default), got {threads!r}")
    if threads:
        torch.set_num_threads(threads)
    elif "LOCAL_WORLD_SIZE" in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
