"""The embedding task: pruned sentence-embedding models, trained without labels.

    from sentence_transformers import SentenceTransformer
    import ltprune
    st = ltprune.patch(SentenceTransformer(path), ltprune.LTPConfig())  # or ltprune.embedding.load(pruned)
    vectors = st.encode(texts)

Modules: ``pooling`` (pure pooling functions), ``st`` (sentence-transformers integration: patch,
save, load), ``encode`` (embeddings with FLOPs records), ``metrics`` (agreement with the
unpruned model, probes), ``texts`` (unlabeled text sources), ``training`` (label-free
distillation stages), ``experiment`` (the curves of docs/RESULTS.md).
Names load on first use (the commands are in ``ltprune.cli.embedding``).
"""

from __future__ import annotations

import importlib

_LAZY = {
    **{name: "pooling" for name in ("POOLINGS", "PoolingSpec", "pool", "pooling_mask")},
    **{name: "st" for name in ("is_sentence_transformer", "load", "patch_sentence_transformer", "pooling_spec",
                               "save")},
    "embed": "encode", "Embeddings": "encode",
    "train_embedding": "training",
    "load_texts": "texts",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ltprune.embedding' has no attribute {name!r}")
