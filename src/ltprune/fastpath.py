"""Making a patched model fast on its hardware: capacity plans for the static step.

The static step (``LTPConfig(step="static")``, the default on CUDA) keeps, after each pruning
layer, room for a planned number of rows. :func:`plan_capacity` measures the kept tokens on
sample batches with the exact step and stores fractions of the padded batch with a margin; a
batch that keeps more than planned is rerun exactly, so a tight plan is only slower, never wrong.
"""

from __future__ import annotations

import copy

import torch

from .patch import get_config, is_patched, patch


@torch.no_grad()
def plan_capacity(model, batches, margin: float = 0.05, quantile: float = 1.0) -> list[float]:
    """Measure and set ``config.capacity``: per layer, the ``quantile`` (default: the largest) over
    ``batches`` of kept tokens / (B * n), plus ``margin``, capped at 1. Returns the fractions."""
    config = get_config(model)
    patch(model, config.replace(step="exact", capacity=None))
    ratios = []
    try:
        model.eval()
        for batch in batches:
            records = model(**batch).ltp
            b, n = records.pruned_at.shape
            ratios.append((records.tokens_kept.sum(0).double() / (b * n)).cpu())
    finally:
        patch(model, config)
    if not ratios:
        raise ValueError("plan_capacity needs at least one batch")
    stacked = torch.stack(ratios)
    fractions = [min(1.0, float(torch.quantile(col, quantile)) + margin) for col in stacked.T]
    patch(model, config.replace(capacity=fractions))
    return fractions


#: Lengths a batch is padded up to before it is graphed (one graph per (batch size, bucket)).
LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def bucket_length(n: int, buckets=LENGTH_BUCKETS) -> int:
    """The smallest bucket >= n (n itself beyond the largest)."""
    return next((b for b in buckets if b >= n), n)


class GraphRunner:
    """Runs a model (patched or stock) through CUDA graphs, one per (batch size, length bucket).

    Launch overhead is what makes small batches slow on a GPU (FASTPATH.md §4): a graph replays a
    whole forward as one launch. Inputs are padded to a bucket (padding never changes a result),
    copied into the graph's static input buffers, the graph is replayed, and the outputs are
    sliced back and cloned. A patched model must use the static step (its shapes are then fixed);
    its overflow flag is read once after each replay, and an overflowing batch is rerun eagerly on
    the exact step. The same runner over the stock model is the honest baseline for a speed-up.
    On the CPU (or with ``graphs=False``) it runs eagerly with the same bucketing, which is what
    the CPU tests check. Inference only (``torch.no_grad``).
    """

    def __init__(self, model, buckets=LENGTH_BUCKETS, graphs: bool | None = None, warmup: int = 2):
        self.model = model.eval()
        self.buckets = tuple(buckets)
        self.warmup = warmup
        self.patched = is_patched(model)
        if self.patched and get_config(model).mode != "off":
            patch(model, get_config(model).replace(step="static"))
        device = next(model.parameters()).device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        self._cache: dict[tuple, tuple] = {}

    @torch.no_grad()
    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        batch, n = input_ids.shape
        width = bucket_length(n, self.buckets)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        pad_id = getattr(self.model.config, "pad_token_id", None) or 0
        padded = {k: torch.nn.functional.pad(v, (0, width - n), value=pad_id if k == "input_ids" else 0)
                  for k, v in inputs.items()}
        if not self.graphs:
            return _slice(self.model(**padded), n)
        key = (batch, width, tuple(sorted(padded)))
        if key not in self._cache:
            self._cache[key] = self._capture(padded)
        graph, static_in, static_out = self._cache[key]
        for name, value in padded.items():
            static_in[name].copy_(value)
        graph.replay()
        records = getattr(static_out, "ltp", None)
        if records is not None and records.overflow is not None and bool(records.overflow):
            return self._exact(inputs, n)  # did not fit the planned capacity: rerun exactly
        return _slice(_clone(static_out), n)

    def _capture(self, example):
        static_in = {k: v.clone() for k, v in example.items()}
        static_in["attention_mask"].fill_(1)  # warm-up and capture inputs must be valid
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.model(**static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.model(**static_in)
        return graph, static_in, static_out

    def _exact(self, inputs, n):
        config = get_config(self.model)
        patch(self.model, config.replace(step="exact"))
        try:
            return _slice(self.model(**inputs), n)
        finally:
            patch(self.model, config)


def _clone(output):
    """A copy of a model output whose tensors (and records) no longer alias graph buffers."""
    out = copy.copy(output)
    for key, value in output.items():
        if torch.is_tensor(value):
            out[key] = value.clone()
    records = getattr(output, "ltp", None)
    if records is not None:
        fields = {f: (v.clone() if torch.is_tensor(v) else v) for f, v in vars(records).items()}
        out.ltp = type(records)(**fields)
    return out


def _slice(output, n: int):
    """Token-level outputs back to the input's length (poolers and heads read position 0)."""
    for key in ("last_hidden_state", "start_logits", "end_logits"):
        value = output.get(key) if hasattr(output, "get") else None
        if value is not None and value.dim() >= 2:
            output[key] = value[:, :n]
    records = getattr(output, "ltp", None)
    if records is not None and records.pruned_at.shape[1] != n:
        records.pruned_at = records.pruned_at[:, :n]
    return output
