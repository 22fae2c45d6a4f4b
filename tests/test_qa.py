"""Question answering (SQuAD 2.0, paper Fig. 5): official metrics on hand-checked cases, feature
preparation with doc stride, n-best decoding with a null answer, and the LTP stages end to end
on the hand-written SQuAD-v2-format fixture (no real QA data ships offline)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoTokenizer

from ltprune import qa
from ltprune.errors import DataError
from ltprune.cli.experiments import register as register_experiments
from ltprune.cli.qa import register_qa

from conftest import offline_model_dir

FIXTURE = Path(__file__).parent / "fixtures" / "squad_v2"
TRAIN, DEV = FIXTURE / "train.json", FIXTURE / "dev.json"


# --------------------------------------------------------------------------------------------
# metrics (evaluate-v2.0.py), checked by hand
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("The  Cat!", "cat"),
    ("an apple, a pear", "apple pear"),
    ("Theory of the atom", "theory of atom"),   # articles only as whole words
    ("A.B.C.", "abc"),                            # punctuation removed first: "abc" is no article
    ("  Since 1500 BC. ", "since 1500 bc"),
])
def test_normalize_answer(text, expected):
    assert qa.normalize_answer(text) == expected


def test_exact_and_f1_hand_checked():
    # gold tokens [cat, sat, on, mat], predicted [cat, on, mat]: P = 1, R = 3/4, F1 = 6/7
    assert qa.compute_f1("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    assert qa.compute_exact("the cat sat on the mat", "cat on mat") == 0
    assert qa.compute_exact("The Cat sat on the mat.", "cat sat on mat") == 1
    # gold [sicily], predicted [east, coast, of, sicily]: P = 1/4, R = 1, F1 = 0.4
    assert qa.compute_f1("Sicily", "the east coast of Sicily") == pytest.approx(0.4)
    # repeated tokens count at most as often as in the other answer: P = R = 2/3
    assert qa.compute_f1("x y y", "y y y") == pytest.approx(2 / 3)
    assert qa.compute_f1("", "") == 1.0 and qa.compute_f1("", "x") == 0.0 and qa.compute_f1("x", "") == 0.0
    assert qa.compute_f1("Paris", "London") == 0.0


def test_squad_v2_metrics_hand_checked():
    refs = {
        "a": {"text": ["on the east coast of Sicily", "Sicily"], "answer_start": [12, 33]},  # best gold counts
        "b": {"text": ["1500 BC"], "answer_start": [130]},
        "c": {"text": [], "answer_start": []},
        "d": [],
    }
    preds = {"a": "Sicily", "b": "since 1500 BC", "c": "", "d": "Etna"}
    m = qa.squad_v2_metrics(preds, refs)
    # exact: a 1, b 0, c 1, d 0; F1: a 1, b 2*(2/3)*1/(5/3) = 0.8, c 1, d 0
    assert m["total"] == 4 and m["HasAns_total"] == 2 and m["NoAns_total"] == 2
    assert m["exact"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.7)
    assert m["HasAns_exact"] == pytest.approx(0.5) and m["HasAns_f1"] == pytest.approx(0.9)
    assert m["NoAns_exact"] == pytest.approx(0.5) and m["NoAns_f1"] == pytest.approx(0.5)
    # a missing prediction is "no answer": right for c, wrong for a
    m = qa.squad_v2_metrics({"b": "1500 BC"}, refs)
    assert m["exact"] == pytest.approx(0.25 + 0.25 + 0.25) and m["HasAns_f1"] == pytest.approx(0.5)
    with pytest.raises(DataError):
        qa.squad_v2_metrics({}, {})


# --------------------------------------------------------------------------------------------
# data and features
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(offline_model_dir())


def test_fixture_reads_as_squad_v2():
    dsd = qa.load_squad(TRAIN, DEV)
    assert len(dsd["train"]) == 12 and len(dsd["validation"]) == 6
    assert len(set(dsd["train"]["context"])) == 6
    assert sum(not a["text"] for a in dsd["train"]["answers"]) == 3
    assert sum(not a["text"] for a in dsd["validation"]["answers"]) == 2
    for ex in dsd["validation"]:
        for text, start in zip(ex["answers"]["text"], ex["answers"]["answer_start"]):
            assert ex["context"][start:start + len(text)] == text
    assert len(qa.load_squad(TRAIN, DEV, max_eval_examples=2)["validation"]) == 2


def test_bad_squad_files(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="SQuAD JSON"):
        qa.read_squad_json(tmp_path / "x.json")
    bad = {"data": [{"title": "t", "paragraphs": [{"context": "abc def", "qas": [
        {"id": "1", "question": "q?", "answers": [{"text": "xyz", "answer_start": 0}]}]}]}]}
    (tmp_path / "y.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="not in its context"):
        qa.read_squad_json(tmp_path / "y.json")
    shifted = json.loads(json.dumps(bad))
    shifted["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "def"
    (tmp_path / "z.json").write_text(json.dumps(shifted))
    with pytest.warns(UserWarning, match="located by text"):
        assert qa.read_squad_json(tmp_path / "z.json")[0]["answers"]["answer_start"] == [4]
    with pytest.raises(DataError, match="no such file"):
        qa.read_squad_json(tmp_path / "missing.json")


def _check_features(dsd, feats, tokenizer, context_id=1):
    """Every labelled span decodes to the answer; every answerable question has one somewhere."""
    examples = {ex["id"]: ex for ex in dsd}
    found = set()
    for f in feats:
        ex = examples[f["example_id"]]
        s, e = f["start_positions"], f["end_positions"]
        offsets = f["offset_mapping"]
        assert offsets[0] is None  # [CLS] / <s> is never part of the context
        if s == 0:
            assert e == 0
            continue
        assert ex["answers"]["text"], "an unanswerable question got a span"
        span = ex["context"][offsets[s][0]:offsets[e][1]]
        assert qa.normalize_answer(span) == qa.normalize_answer(ex["answers"]["text"][0])
        found.add(ex["id"])
    assert found == {ex["id"] for ex in dsd if ex["answers"]["text"]}


def test_features_with_doc_stride(tokenizer):
    dsd = qa.load_squad(TRAIN, DEV)
    feats = qa.tokenize_squad(dsd, tokenizer, max_length=40, doc_stride=12)
    assert len(feats["train"]) > len(dsd["train"])  # long contexts are cut into windows
    assert max(len(ids) for ids in feats["train"]["input_ids"]) <= 40
    assert min(len(ids) for ids in feats["train"]["input_ids"]) < 40  # no padding
    _check_features(dsd["train"], feats["train"], tokenizer)
    _check_features(dsd["validation"], feats["validation"], tokenizer)


def test_postprocess_picks_spans_and_null(tokenizer):
    dsd = qa.load_squad(None, DEV)["validation"].select([0, 2])  # Etna: answerable; q-dv-3: not
    feats = qa.tokenize_squad({"validation": dsd}, tokenizer, max_length=64, doc_stride=16)["validation"]
    starts = [np.full(len(ids), -5.0) for ids in feats["input_ids"]]
    ends = [np.full(len(ids), -5.0) for ids in feats["input_ids"]]
    for i, (f, qid) in enumerate(zip(feats, feats["example_id"])):
        if qid == "q-dv-1":  # aim at "Sicily" and make a pruned position score highest
            ctx = dsd[0]["context"]
            pos = [j for j, o in enumerate(f["offset_mapping"]) if o and ctx[o[0]:o[1]] == "Sicily"]
            if pos:
                starts[i][pos[0]] = ends[i][pos[0]] = 4.0
                first_ctx = next(j for j, o in enumerate(f["offset_mapping"]) if o is not None)
                starts[i][first_ctx] = ends[i][first_ctx + 1] = 3.0  # a valid but weaker span
        else:
            starts[i][0] = ends[i][0] = 2.0  # null wins for the unanswerable question
    answers, null_odds = qa.postprocess(dsd, feats, starts, ends)
    assert answers == {"q-dv-1": "Sicily", "q-dv-3": ""}
    assert null_odds["q-dv-1"] < 0 < null_odds["q-dv-3"]
    # a high enough null threshold turns every answer into a span
    answers, _ = qa.postprocess(dsd, feats, starts, ends, null_threshold=100.0)
    assert answers["q-dv-3"] != ""
    # max_answer_length 0 leaves no valid span at all: no answer
    answers, _ = qa.postprocess(dsd, feats, starts, ends, max_answer_length=0)
    assert answers == {"q-dv-1": "", "q-dv-3": ""}
    # pruned positions (the patched model sets their logits to the float32 minimum) are never
    # answer bounds, whatever the null threshold
    lowest = np.finfo(np.float32).min
    pruned = [np.where(np.arange(len(x)) == 0, 0.0, lowest) for x in starts]
    answers, _ = qa.postprocess(dsd, feats, pruned, pruned, null_threshold=1e30)
    assert answers == {"q-dv-1": "", "q-dv-3": ""}


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qa_dir(tmp_path_factory, tokenizer):
    """A tiny random 3-layer BertForQuestionAnswering saved with the offline tokenizer."""
    path = tmp_path_factory.mktemp("tiny_qa")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=128)
    transformers.BertForQuestionAnswering(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _parser():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register_qa(sub)
    register_experiments(sub)
    return parser


def test_qa_train_and_eval_cli(tiny_qa_dir, tmp_path, capsys):
    out = tmp_path / "run"
    a = _parser().parse_args(["qa", "train", "--model", str(tiny_qa_dir), "--output-dir", str(out),
                              "--stages", "finetune,soft,hard", "--data-file", str(TRAIN), "--dev-file", str(DEV),
                              "--max-length", "48", "--doc-stride", "16", "--max-steps", "2", "--batch-size", "8",
                              "--lr", "1e-3", "--logging-steps", "1", "--lambda", "0.1"])
    assert a.func(a) == 0
    printed = capsys.readouterr().out
    assert "F1" in printed and "NoAns" in printed
    for stage in ("finetune", "soft", "hard"):
        m = json.loads((out / stage / "metrics.json").read_text())
        assert m["metric"] == m["f1"] and 0 <= m["f1"] <= 1 and m["total"] == 6
        assert m["HasAns_total"] == 4 and m["NoAns_total"] == 2 and 0 < m["relative_flops"] <= 1
        state = json.loads((out / stage / "final" / "ltprune_stage.json").read_text())
        # the Trainer computed a loss, so it got start/end positions; and our F1 ran on dev
        assert math.isfinite(state["training_loss"])
        trainer_state = json.loads(next((out / stage).glob("checkpoint-*/trainer_state.json")).read_text())
        assert any("eval_f1" in h and "eval_metric" in h for h in trainer_state["log_history"])
    preds = json.loads((out / "hard" / "predictions.json").read_text())
    assert set(preds) == {f"q-dv-{i}" for i in range(1, 7)}
    rows = [json.loads(line) for line in (out / "hard" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == json.loads((out / "hard" / "metrics.json").read_text())["num_features"]
    assert all(len(r["tokens_in"]) == len(r["tokens_kept"]) == 3 and "correct" in r for r in rows)

    a = _parser().parse_args(["qa", "eval", "--model", str(out / "hard" / "final"), "--output-dir",
                              str(tmp_path / "eval"), "--dev-file", str(DEV), "--max-length", "48",
                              "--doc-stride", "16"])
    assert a.func(a) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["f1"] == pytest.approx(json.loads((out / "hard" / "metrics.json").read_text())["f1"])
    assert again["mode"] == "hard"


def test_qa_experiment_fig5(tiny_qa_dir, tmp_path):
    out = tmp_path / "fig5"
    argv = ["experiment", "qa", "--model", str(tiny_qa_dir), "--output-dir", str(out), "--lambdas", "0.05,0.4",
            "--data-file", str(TRAIN), "--dev-file", str(DEV), "--max-length", "48", "--doc-stride", "16",
            "--max-steps", "2", "--batch-size", "8", "--lr", "1e-3"]
    a = _parser().parse_args(argv)
    assert a.func(a) == 0
    points = json.loads((out / "points.json").read_text())["points"]
    assert sorted((p["method"], p["knob"]) for p in points if p["method"] == "ltp") == [("ltp", 0.05), ("ltp", 0.4)]
    ref = next(p for p in points if p["method"] == "unpruned")
    assert ref["relative_flops"] == 1.0
    for p in points:
        assert {"f1", "HasAns_f1", "NoAns_f1", "exact", "relative_flops"} <= set(p)
    assert (out / "qa_curve.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "ltp" / "0.4" / "hard" / "final" / "model.safetensors").is_file()
    # a rerun reuses every point (no new training folders, same numbers)
    mtime = (out / "ltp" / "0.4" / "metrics.json").stat().st_mtime_ns
    a = _parser().parse_args(argv)
    assert a.func(a) == 0
    assert (out / "ltp" / "0.4" / "metrics.json").stat().st_mtime_ns == mtime


def test_roberta_qa_features_and_eval(tmp_path):
    """RoBERTa: byte-level BPE offsets (the leading space is outside a token), no token types,
    pad id 1; a tiny tokenizer trained on the fixture keeps it offline."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    import ltprune

    dsd = qa.load_squad(TRAIN, DEV)
    corpus = list(dsd["train"]["context"]) + list(dsd["train"]["question"]) + list(dsd["validation"]["context"]) \
        + list(dsd["validation"]["question"])
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", bpe.token_to_id("</s>")),
                                                                 ("<s>", bpe.token_to_id("<s>")), trim_offsets=True)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    feats = qa.tokenize_squad(dsd, tok, max_length=64, doc_stride=16)
    assert "token_type_ids" not in feats["train"].column_names
    _check_features(dsd["train"], feats["train"], tok)
    _check_features(dsd["validation"], feats["validation"], tok)
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=80, pad_token_id=1)
    model = ltprune.patch(transformers.RobertaForQuestionAnswering(config).eval(),
                          ltprune.LTPConfig(final_threshold=0.02, mode="hard"))
    result = qa.evaluate_qa(model, dsd["validation"], feats["validation"], tok.pad_token_id, batch_size=4)
    assert result["total"] == 6 and 0 <= result["f1"] <= 1 and 0 < result["relative_flops"] <= 1
    # answers are substrings of their contexts (or empty)
    contexts = dict(zip(dsd["validation"]["id"], dsd["validation"]["context"]))
    assert all(a == "" or a in contexts[q] for q, a in result["_answers"].items())


def test_hub_path(monkeypatch, tokenizer):
    """Without files, SQuAD 2.0 comes from datasets.load_dataset("rajpurkar/squad_v2"); its
    columns are the ones read_squad_json writes. Offline, the error says what to pass instead."""
    import datasets

    calls = []

    def fake_hub(name, *args, **kwargs):
        calls.append(name)
        return datasets.DatasetDict({"train": qa.read_squad_json(TRAIN), "validation": qa.read_squad_json(DEV)})

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    dsd = qa.load_squad(max_train_examples=5)
    assert calls == ["rajpurkar/squad_v2"] and len(dsd["train"]) == 5 and len(dsd["validation"]) == 6
    _check_features(dsd["validation"], qa.tokenize_squad(dsd, tokenizer, 64, 16)["validation"], tokenizer)

    def offline(name, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="--data-file"):
        qa.load_squad()
