"""Embeddings of many texts with what each pass pruned: the evaluation's view of ``encode()``.

``SentenceTransformer.encode`` returns vectors only; evaluation also needs the tokens each
layer kept (FLOPs). :func:`embed` runs the same pipeline (``st.preprocess`` then ``st(...)``)
on length-sorted batches and collects both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import flops as flops_mod
from ..errors import ConfigError, LTPError
from .st import RECORDS_KEY, parts


@dataclass
class Embeddings:
    """(N, D) vectors in input order, with per-text FLOPs of the pass that made them."""

    vectors: np.ndarray
    macs: np.ndarray  # per text, this model
    baseline_macs: np.ndarray  # per text, the same model unpruned on the same unpadded input
    lengths: np.ndarray  # input tokens per text
    tokens_kept: np.ndarray  # (N, L) alive after each layer

    @property
    def relative_flops(self) -> float:
        return float(self.macs.sum() / self.baseline_macs.sum())

    @property
    def gflops(self) -> float:
        return float(flops_mod.gflops(torch.as_tensor(self.macs)).mean())


def check_texts(texts) -> list[str]:
    """Texts as a list of non-empty strings; anything else is a one-line error naming the text."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise LTPError("no texts to embed")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise LTPError(f"text {i} is not a string (got {type(text).__name__})")
        if not text.strip():
            raise LTPError(f"text {i} is empty or only whitespace: nothing to embed")
    return texts


@torch.no_grad()
def embed(st, texts, batch_size: int = 32) -> Embeddings:
    """Embed ``texts`` with a patched ``SentenceTransformer``, in length-sorted batches."""
    texts = check_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    _, hf, _, _ = parts(st)
    if getattr(hf, "_ltp", None) is None:
        raise LTPError("embed() needs a patched model: ltprune.patch(st, config) or ltprune.embedding.load(path)")
    st.eval()
    tokenizer = st.tokenizer
    limit = st.max_seq_length or 512
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    device = next(st.parameters()).device
    vectors = [None] * len(texts)
    macs = np.zeros(len(texts))
    base = np.zeros(len(texts))
    kept = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        index = order[start:start + batch_size].tolist()
        features = st.preprocess([texts[i] for i in index])
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        out = st(features)
        rec = out[RECORDS_KEY]
        emb = out["sentence_embedding"].float().cpu().numpy()
        m, b = rec.macs().cpu().numpy(), rec.baseline_macs().cpu().numpy()
        for row, i in enumerate(index):
            vectors[i], macs[i], base[i], kept[i] = emb[row], m[row], b[row], rec.tokens_kept[row].cpu().numpy()
    return Embeddings(np.stack(vectors), macs, base, np.asarray(lengths), np.stack(kept))
