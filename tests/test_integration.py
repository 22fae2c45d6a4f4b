"""Integration on the real offline model (all-MiniLM-L6-v2, BERT, 6 layers): a handful of steps."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import ltprune
from ltprune.resources import rotten_tomatoes_sentences

pytestmark = pytest.mark.integration


def test_offline_model_prunes_real_sentences(minilm_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    sentences = rotten_tomatoes_sentences(8)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        stock = model(**batch).last_hidden_state
    ltprune.patch(model, ltprune.LTPConfig(mode="off"))
    with torch.no_grad():
        off = model(**batch)
    real = batch["attention_mask"].bool()
    assert (off.last_hidden_state - stock)[real].abs().max() <= 1e-5

    for layout in ("packed", "padded"):
        ltprune.patch(model, ltprune.LTPConfig(final_threshold=0.01, layout=layout))
        with torch.no_grad():
            out = model(**batch)
        records = out.ltp
        assert records.tokens_in.shape == (8, 6)
        assert torch.equal(records.lengths, batch["attention_mask"].sum(1))
        # pruning is monotone: no token comes back
        assert bool((records.tokens_kept[:, 1:] <= records.tokens_kept[:, :-1]).all())
        assert 0.2 < records.relative_flops < 0.9
        # the first token ([CLS]) survives and its final state is a real computation
        assert bool(records.kept_mask[:, 0].all())
        if layout == "packed":
            packed = out.last_hidden_state
        else:
            assert (out.last_hidden_state - packed)[real].abs().max() <= 1e-4

    model.save_pretrained(tmp_path)
    loaded = ltprune.from_pretrained(tmp_path)
    with torch.no_grad():
        again = loaded(**batch)
    assert torch.equal(again.ltp.tokens_kept, records.tokens_kept)
