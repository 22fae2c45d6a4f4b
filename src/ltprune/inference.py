"""Predictions for raw texts: length-sorted batches through the pruned model (the fast path)."""

from __future__ import annotations

import warnings

import torch

from .errors import ConfigError, LTPError
from .batching import collate, length_sorted_batches
from .loading import model_max_tokens


def _check_texts(texts) -> list:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise LTPError("no texts to predict")
    for i, text in enumerate(texts):
        parts = text if isinstance(text, (tuple, list)) else (text,)
        if not all(isinstance(p, str) for p in parts):
            raise LTPError(f"text {i} is not a string (got {type(text).__name__})")
        if any(not p.strip() for p in parts):
            raise LTPError(f"text {i} is empty or only whitespace: nothing to classify")
    return texts


@torch.no_grad()
def predict(model, tokenizer, texts, batch_size: int = 32, return_tokens: bool = False,
            max_length: int | None = None) -> list[dict]:
    """Classify ``texts`` (strings, or (text, pair) tuples) with a patched model.

    Returns one dict per text, in input order: ``label``, ``score`` (softmax probability; the
    raw value for regression), ``tokens`` (input length), ``tokens_per_layer`` and, with
    ``return_tokens``, ``kept_tokens``: for each layer, the tokens still alive after it.
    Texts longer than the model's maximum are truncated, with one warning.
    """
    texts = _check_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    positions = model_max_tokens(getattr(model, "config", None))
    if max_length is not None:
        if positions is not None and max_length > positions:
            raise ConfigError(f"max_length={max_length} exceeds the model's {positions} positions")
        limit = max_length
    else:  # the tokenizer's limit, capped to what the position embeddings can take
        limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512, positions or 512)
    pairs = [t if isinstance(t, (tuple, list)) else (t,) for t in texts]
    encoded = [tokenizer(*p, truncation=True, max_length=limit) for p in pairs]
    # only a text that fills the limit can have been cut: re-encode just those with one more slot
    cut = sum(len(tokenizer(*pairs[i], truncation=True, max_length=limit + 1)["input_ids"]) > limit
              for i, e in enumerate(encoded) if len(e["input_ids"]) >= limit)
    if cut:
        warnings.warn(f"{cut} of {len(texts)} texts are longer than {limit} tokens and were truncated",
                      UserWarning, stacklevel=3)  # 3: past torch.no_grad's wrapper, to the caller
    model.eval()
    device = next(model.parameters()).device
    id2label = getattr(model.config, "id2label", None) or {}
    results: list[dict | None] = [None] * len(texts)
    for index in length_sorted_batches([len(e["input_ids"]) for e in encoded], batch_size):
        batch = collate([encoded[i] for i in index], tokenizer.pad_token_id, device)
        out = model(**batch)
        logits = out.logits.float()
        rec = out.ltp
        for row, i in enumerate(index):
            if logits.shape[-1] == 1:
                label, score = "score", float(logits[row, 0])
            else:
                probs = logits[row].softmax(-1)
                cls = int(probs.argmax())
                label, score = id2label.get(cls, str(cls)), float(probs[cls])
            item = {"text": texts[i], "label": label, "score": round(score, 6),
                    "tokens": int(rec.lengths[row]), "tokens_per_layer": rec.tokens_kept[row].tolist()}
            if return_tokens:
                n = len(encoded[i]["input_ids"])
                names = tokenizer.convert_ids_to_tokens(encoded[i]["input_ids"])
                pruned_at = rec.pruned_at[row, :n].tolist()
                item["kept_tokens"] = [[t for t, p in zip(names, pruned_at) if p > layer]
                                       for layer in range(rec.num_layers)]
            results[i] = item
    return results
