"""8-bit LTP (paper §4.6): the quantizer, bake/save/load, distillation loss, BOPs, int8 export,
and a tiny quantize + distill + soft/hard run."""

from __future__ import annotations

import argparse
import json
import math
import random

import pytest
import torch
import transformers
from safetensors import safe_open
from transformers import AutoTokenizer

import ltprune
from ltprune import flops as flops_mod
from ltprune import int8 as int8_mod
from ltprune import quantization as Q
from ltprune.distill import (
    DistillTrainer,
    capture_embeddings,
    distillation_loss,
    embedding_mse,
    kd_logits_loss,
    load_teacher,
    prepare_quantized_training,
)
from ltprune.cli.options import add_quantization_options
from ltprune.training import StageArgs, load_model, run_stage

from conftest import offline_model_dir, random_batch, tiny_model


def _model(layout="packed", mode="hard", **overrides):
    """A tiny BERT with logits large enough for closeness checks to mean something, and
    thresholds that remove some tokens."""
    overrides.setdefault("initializer_range", 0.2)
    model = ltprune.patch(tiny_model(**overrides), ltprune.LTPConfig(mode=mode, layout=layout))
    ltprune.set_thresholds(model, [0.0, 0.012, 0.02])
    return model


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# ---------------------------------------------------------------------------------------------
# the quantizer


def test_weight_grid_symmetric_rounded_and_at_most_255_levels():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=g)
    q = Q.fake_quantize_weight(w, 8, per_channel=False)
    scale = w.abs().max() / 127
    levels = q / scale
    assert torch.allclose(levels, levels.round(), atol=1e-4)            # on the integer grid
    assert levels.round().abs().max() == 127                           # clamp range ±127
    assert len(torch.unique(levels.round())) <= 255
    assert (q - w).abs().max() <= scale / 2 + 1e-6                     # nearest level
    i = w.abs().argmax()
    assert torch.isclose(q.flatten()[i], w.flatten()[i], rtol=1e-6)    # ±max is representable
    assert torch.equal(Q.fake_quantize_weight(-w, 8, per_channel=False), -q)  # symmetric
    # per channel: every row keeps its own max, and has at most 255 levels
    qc = Q.fake_quantize_weight(w, 8, per_channel=True)
    assert torch.allclose(qc.abs().amax(1), w.abs().amax(1), rtol=1e-6)
    row_scale = w.abs().amax(1, keepdim=True) / 127
    assert torch.allclose(qc / row_scale, (qc / row_scale).round(), atol=1e-4)
    assert all(len(torch.unique((qc[r] / row_scale[r]).round())) <= 255 for r in range(16))
    assert (qc - w).abs().le(row_scale / 2 + 1e-6).all()


def test_rounding_by_hand_3_bits():
    w = torch.tensor([[3.0, 1.4, 1.6, -0.4, 2.5, -3.0, 0.0, -1.51]])  # max 3, 3 bits: levels -3..3, scale 1
    q = Q.fake_quantize_weight(w, 3, per_channel=False)
    assert q.tolist() == [[3.0, 1.0, 2.0, -0.0, 2.0, -3.0, 0.0, -2.0]]  # 2.5 -> 2: ties to even
    assert torch.equal(Q.fake_quantize_weight(torch.zeros(2, 3), 8), torch.zeros(2, 3))  # zero rows stay zero


def test_ste_gradient_is_identity_inside_the_range():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 12, generator=g, requires_grad=True)
    upstream = torch.randn(8, 12, generator=g)
    (Q.fake_quantize_weight(w, 8) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)
    x = torch.tensor([-3.0, -0.5, 0.2, 0.9, 2.5], requires_grad=True)
    y = Q.fake_quantize_activation(x, torch.tensor(1.0), 8)
    assert y.detach().abs().max() <= 1.0 + 1e-6                          # clipped to the range
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]                  # 1 inside, 0 where clipped


def test_activation_range_is_an_ema_in_training_only():
    aq = Q.ActivationFakeQuant(8, momentum=0.5)
    aq.train()
    aq(torch.tensor([2.0, -1.0]))
    assert float(aq.running_max) == 2.0                                  # first batch sets it
    aq(torch.tensor([4.0]))
    assert float(aq.running_max) == 3.0                                  # 0.5 * 2 + 0.5 * 4
    aq.eval()
    out = aq(torch.tensor([10.0, 1.0]))
    assert float(aq.running_max) == 3.0 and float(out[0]) == pytest.approx(3.0)  # static range at inference


def test_quantize_model_wraps_every_linear_but_the_embeddings():
    model = _model()
    latent = model.bert.encoder.layer[1].intermediate.dense.weight.detach().clone()
    Q.quantize_model(model, 8)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 6 + 2                                     # 6 per layer, pooler, classifier
    assert all(Q._weight_quantizer(m) is not None for m in linears)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.bert.embeddings.modules())
    dense = model.bert.encoder.layer[1].intermediate.dense
    assert torch.equal(dense.parametrizations.weight.original, latent)  # the optimizer keeps fp32 weights
    assert torch.equal(dense.weight, Q.fake_quantize_weight(latent, 8))  # the forward sees the grid
    assert model.config.ltp_quantization["weight_bits"] == 8
    assert model.config.ltp_quantization["activation_bits"] is None
    Q.remove_quantization(model)
    assert torch.equal(model.bert.encoder.layer[1].intermediate.dense.weight, latent)


@pytest.mark.parametrize("activation_bits", [None, 8])
def test_bake_save_load_round_trip_gives_identical_logits(tmp_path, activation_bits):
    model = _model()
    Q.quantize_model(model, 8, activation_bits)
    ids, mask = random_batch([11, 6, 9], seed=3)
    model.train()
    model(input_ids=ids, attention_mask=mask)                          # calibrates the activation ranges
    model.eval()
    before = _logits(model, ids, mask)
    Q.bake(model)
    assert not Q.has_fake_quant_weights(model)
    assert torch.equal(_logits(model, ids, mask), before)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert not any("parametrizations" in k for k in keys) and any(k.endswith("query.weight") for k in keys)
    saved = json.loads((tmp_path / "config.json").read_text())["ltp_quantization"]
    assert saved["weight_bits"] == 8 and saved["activation_bits"] == activation_bits
    loaded = Q.restore_quantization(ltprune.from_pretrained(tmp_path).eval())
    assert torch.equal(_logits(loaded, ids, mask), before)


def test_baked_copy_is_independent_of_the_original():
    """A deep copy of a patched model would run the original's layers; baked_copy must not."""
    model = _model()
    Q.quantize_model(model, 8)
    ids, mask = random_batch([7, 5])
    before = _logits(model, ids, mask)
    clone = Q.baked_copy(model).eval()
    assert torch.equal(_logits(clone, ids, mask), before)
    with torch.no_grad():
        for p in clone.bert.encoder.parameters():
            p.mul_(0.5)
    assert torch.equal(_logits(model, ids, mask), before)
    assert not torch.allclose(_logits(clone, ids, mask), before)


# ---------------------------------------------------------------------------------------------
# distillation


def test_kd_loss_by_hand_two_classes():
    s, t, temp = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 2.0
    ps = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]  # softmax([0.5, 0])
    pt = [1 / (1 + math.e), math.e / (1 + math.e)]                       # softmax([0, 1])
    expected = temp ** 2 * sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    assert float(kd_logits_loss(s, t, temp)) == pytest.approx(expected, rel=1e-6)
    assert float(kd_logits_loss(t, t, temp)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_loss_combination():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    es, et = torch.randn(4, 5, 8, generator=g), torch.randn(4, 5, 8, generator=g)
    task = torch.tensor(0.7)
    loss, parts = distillation_loss(task, s, t, es, et, alpha=0.0, temperature=2.0)
    assert float(loss) == pytest.approx(0.7)                               # alpha = 0: the task loss
    assert float(embedding_mse(es, es.clone())) == 0.0                     # student == teacher
    mask = torch.ones(4, 5)
    mask[:, 3:] = 0
    es2 = es.clone()
    es2[:, 3:] += 100                                                      # padding is not compared
    assert float(embedding_mse(es2, es, mask)) == 0.0
    loss, parts = distillation_loss(task, s, t, es, et, alpha=0.25, temperature=2.0)
    expected = 0.75 * 0.7 + 0.25 * (float(kd_logits_loss(s, t, 2.0)) + float(((es - et) ** 2).mean()))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert set(parts) == {"task_loss", "kd_logits", "kd_embeddings"}


def _loss(trainer, model, inputs):
    return float(trainer.compute_loss(model, dict(inputs)).detach())


def _trainer(tmp_path, student, teacher, alpha):
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    return DistillTrainer(model=student, args=args, teacher=teacher, alpha=alpha, temperature=2.0)


def test_distill_trainer_loss(tmp_path):
    student = _model(mode="off", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = int8_mod.stock_copy(student)                                        # same weights, stock class
    ids, mask = random_batch([9, 6, 8], seed=2)
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}
    student.train()
    task = float(student(**inputs).loss.detach())
    # same model: the KD terms vanish, loss = (1 - alpha) * task; alpha = 0: exactly the task loss
    trainer = _trainer(tmp_path, student, teacher, 0.4)
    assert _loss(trainer, student, inputs) == pytest.approx(0.6 * task, rel=1e-5)
    trainer = _trainer(tmp_path, student, teacher, 0.0)
    assert _loss(trainer, student, inputs) == pytest.approx(task, rel=1e-6)
    # a different student: the embedding term is the MSE of the embedding outputs
    ltprune.set_mode(student, "soft")
    with torch.no_grad():
        student.bert.embeddings.word_embeddings.weight.add_(0.05)
    with capture_embeddings(student) as se, capture_embeddings(teacher) as te, torch.no_grad():
        out = student(**inputs)
        tout = teacher(input_ids=ids, attention_mask=mask)
    expected = 0.5 * float(out.loss) + 0.5 * (float(kd_logits_loss(out.logits, tout.logits, 2.0))
                                              + float(embedding_mse(se["out"], te["out"], mask)))
    trainer = _trainer(tmp_path, student, teacher, 0.5)
    assert _loss(trainer, student, inputs) == pytest.approx(expected, rel=1e-5)
    student.eval()                                                         # evaluation: the task loss only
    assert _loss(trainer, student, inputs) == pytest.approx(float(student(**inputs).loss.detach()))


def test_teacher_and_options_are_checked(tmp_path):
    student = _model()
    tiny_model(num_labels=2).save_pretrained(tmp_path / "two_labels")
    tiny_model(head="base").save_pretrained(tmp_path / "no_head")
    for name in ("two_labels", "no_head"):
        with pytest.raises(ltprune.ConfigError):
            load_teacher(tmp_path / name, student=student)
    ok = tiny_model()
    ok.save_pretrained(tmp_path / "ok")
    teacher = load_teacher(tmp_path / "ok", student=student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert prepare_quantized_training(student, argparse.Namespace()) == (None, None)
    with pytest.raises(ltprune.ConfigError):
        prepare_quantized_training(student, argparse.Namespace(quantize=None, quantize_activations=8))
    with pytest.raises(ltprune.ConfigError):
        prepare_quantized_training(student, argparse.Namespace(distill_from=str(tmp_path / "ok"), distill_alpha=2))
    with pytest.raises(ltprune.ConfigError):
        Q.quantize_model(student, 1)


# ---------------------------------------------------------------------------------------------
# bit operations


def test_bops_by_hand():
    # one layer, n = k = 10 tokens, D = 4, I = 8: 4*16*10 + 2*4*100 + 2*4*8*10 = 2080 MACs
    macs = flops_mod.example_macs(torch.tensor([[10]]), torch.tensor([[10]]), 4, 8)
    assert float(macs) == 2080
    assert float(flops_mod.bops(macs, 8, 8)) == 2080 * 64
    # 2 GFLOPs = 1e9 MACs at 8x8 bits vs 4 GFLOPs at 16x16: 64e9 / 512e9
    summary = Q.bops_summary({"gflops": 2.0, "baseline_gflops": 4.0}, 8, 8)
    assert summary["bops"] == pytest.approx(64e9) and summary["baseline_bops"] == pytest.approx(512e9)
    assert summary["relative_bops"] == pytest.approx(0.125)
    # 8-bit weights, full-precision (16-bit) activations: half the BOPs of the same FLOPs
    assert Q.bops_summary({"gflops": 1.0, "baseline_gflops": 1.0}, 8, None)["relative_bops"] == pytest.approx(0.5)
    model = _model()
    assert Q.bops_for(model, {"gflops": 1.0, "baseline_gflops": 2.0}) == {}
    Q.quantize_model(model, 8, 8)
    assert Q.bops_for(model, {"gflops": 1.0, "baseline_gflops": 2.0})["relative_bops"] == pytest.approx(0.125)


# ---------------------------------------------------------------------------------------------
# int8 inference


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_export_int8_runs_the_patched_model_in_hard_mode(layout):
    model = _model(layout=layout)
    Q.quantize_model(model, 8)
    model.eval()
    ids, mask = random_batch([12, 7, 10, 4], seed=5)
    with torch.no_grad():
        fq = model(input_ids=ids, attention_mask=mask)
    int8 = int8_mod.export_int8(model)
    assert int8.bert.encoder.layer[0].attention.self.query._get_name() == "DynamicQuantizedLinear"
    assert ltprune.get_config(int8).layout == layout and ltprune.get_config(int8).mode == "hard"
    with torch.no_grad():
        out = int8(input_ids=ids, attention_mask=mask)
    assert bool((out.ltp.tokens_kept < out.ltp.tokens_in).any())          # it prunes
    scale = fq.logits.abs().max()
    assert (out.logits - fq.logits).abs().max() <= 0.05 * scale             # close to the fake-quant model
    fp32 = Q.baked_copy(model).eval()
    assert (out.logits - _logits(fp32, ids, mask)).abs().max() <= 0.05 * scale
    # the int8 weights are the trained grid, not rounded a second time
    w = int8.bert.encoder.layer[1].output.dense.weight().dequantize()
    assert torch.equal(w, model.bert.encoder.layer[1].output.dense.weight.detach())
    assert torch.equal(_logits(model, ids, mask), fq.logits)               # the original is untouched


def test_int8_throughput_rows():
    from datasets import Dataset

    model = _model()
    Q.quantize_model(model, 8)
    ids, mask = random_batch([12, 7, 10, 4, 9, 11], seed=6)
    rows = [{"input_ids": i[m.bool()].tolist(), "attention_mask": m[m.bool()].tolist()} for i, m in zip(ids, mask)]
    dataset = Dataset.from_list(rows)
    out = int8_mod.int8_throughput(model, dataset, 0, batch_sizes=(1, 3), repeats=1)
    assert [r["batch_size"] for r in out] == [1, 3]
    for row in out:
        assert row["flops_reduction"] > 1
        assert set(row["ratios"]) == {"ltp_int8_over_stock_fp32", "ltp_int8_over_ltp_fp32",
                                      "ltp_fp32_over_stock_fp32", "stock_int8_over_stock_fp32"}
        assert all(v > 0 for v in row["ratios"].values())
        assert row["int8_vs_fp32_ltp"]["argmax_agreement"] >= 0.5
    assert Q.has_fake_quant_weights(model)                                  # the given model is untouched


@pytest.mark.parametrize("full_range", [False, True], ids=["7bit", "full_range"])
@pytest.mark.parametrize("name", ["distilbert", "electra", "xlm-roberta", "vit"])
def test_quantize_and_export_int8_other_families(name, full_range):
    """7-bit activations on every CPU; full range only on AVX512-VNNI (elsewhere it is refused,
    see test_full_range_is_refused_on_a_cpu_without_vnni)."""
    if full_range and not int8_mod.int8_full_range_supported():
        pytest.skip(f"full-range int8 needs AVX512-VNNI kernels; this CPU has {int8_mod.cpu_int8_kind()} "
                    "(16-bit sums saturate)")
    from test_families import FAMILIES, _inputs

    family = FAMILIES[name]
    model = ltprune.patch(family.model("seq"), ltprune.LTPConfig(mode="hard"))
    ltprune.set_thresholds(model, [0.0, 0.01, 0.02])
    Q.quantize_model(model, 8)
    names = [n for n, _ in Q.quantizable_linears(model)]
    assert ("electra.embeddings_project" in names) == (name == "electra")  # a Linear outside the embeddings
    inputs, _ = _inputs(family)
    with torch.no_grad():
        fq = model(**inputs)
    with capture_embeddings(model) as emb, torch.no_grad():
        model(**inputs)
    assert emb["out"].shape[:2] == fq.ltp.pruned_at.shape                  # the distillation hook point
    with torch.no_grad():
        out = int8_mod.export_int8(model, full_range=full_range)(**inputs)
    assert bool((out.ltp.tokens_kept < out.ltp.tokens_in).any())
    # int8 activations (7-bit by default) on a random wide-init model: loose, but not noise
    assert (out.logits - fq.logits).abs().max() <= (0.15 if full_range else 0.3) * fq.logits.abs().max()


# ---------------------------------------------------------------------------------------------
# end to end: quantize + distill, soft and hard stages through run_stage

WORDS = "good great fine fun superb lovely bad awful dull boring weak poor the a film movie plot was".split()


def test_quantized_distilled_soft_and_hard_stages(tmp_path):
    from datasets import Dataset, DatasetDict

    from ltprune.data import TaskInfo, tokenize_task

    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir())
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, num_labels=2)
    teacher_dir = tmp_path / "teacher"
    transformers.BertForSequenceClassification(config).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choices(WORDS[:6] if i % 2 else WORDS[6:12], k=3) + rng.choices(WORDS[12:], k=4)),
             "label": i % 2} for i in range(24)]
    dsd = DatasetDict(train=Dataset.from_list(rows[:16]), validation=Dataset.from_list(rows[16:]))
    info = TaskInfo("toy", 2, False, "accuracy", False, None)
    data = tokenize_task(dsd, tokenizer, info)

    model = load_model(str(teacher_dir), 2, False, ltprune.LTPConfig())
    parser = argparse.ArgumentParser()
    add_quantization_options(parser.add_argument_group("quantization"))
    options = parser.parse_args(["--quantize", "8", "--distill-from", str(teacher_dir), "--distill-alpha", "0.5"])
    trainer_cls, kwargs = prepare_quantized_training(model, options)
    assert trainer_cls is DistillTrainer and kwargs["alpha"] == 0.5 and kwargs["temperature"] == 2.0
    assert Q.has_fake_quant_weights(model)
    args = StageArgs(max_steps=2, save_steps=1, batch_size=8, learning_rate=1e-3, logging_steps=1)
    for stage in ("soft", "hard"):
        run_stage(model, tokenizer, data["train"], data["validation"], info, stage, tmp_path / stage, args,
                  trainer_cls=trainer_cls, trainer_kwargs=kwargs)
    assert Q.has_fake_quant_weights(model)                                 # still training-ready
    state = json.loads((tmp_path / "soft" / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("kd_logits" in entry and "kd_embeddings" in entry for entry in state["log_history"])
    # checkpoints keep the latent weights (exact resume); the final model is baked and loads
    with safe_open(str(tmp_path / "hard" / "checkpoint-2" / "model.safetensors"), framework="pt") as f:
        assert any("parametrizations.weight.original" in k for k in f.keys())
    soft = ltprune.from_pretrained(tmp_path / "soft" / "final")
    assert not torch.allclose(ltprune.get_thresholds(soft), ltprune.pruning.init_thresholds(2, 0.01))
    hard = ltprune.from_pretrained(tmp_path / "hard" / "final").eval()
    assert hard.config.ltp_quantization["weight_bits"] == 8
    batch = tokenizer(["a good film", "the plot was dull and weak"], padding=True, return_tensors="pt")
    model.eval()
    assert torch.allclose(_logits(hard, batch["input_ids"], batch["attention_mask"]),
                          _logits(model, batch["input_ids"], batch["attention_mask"]), atol=1e-6)
    weight = hard.bert.encoder.layer[0].intermediate.dense.weight
    assert torch.equal(weight, Q.fake_quantize_weight(weight, 8))           # already on the grid


# ---------------------------------------------------------------------------------------------
# the CPU kind decides whether full-range int8 activations are safe (AVX2 kernels saturate)


@pytest.mark.parametrize("forced,kind", [("1", "avx512_vnni"), ("0", "avx2")])
def test_cpu_kind_can_be_simulated(monkeypatch, forced, kind):
    monkeypatch.setenv(int8_mod.CPU_KIND_ENV, forced)
    assert int8_mod.cpu_int8_kind() == kind
    assert int8_mod.int8_full_range_supported() is (kind == "avx512_vnni")


def test_full_range_is_refused_on_a_cpu_without_vnni(monkeypatch):
    model = _model()
    Q.quantize_model(model, 8)
    monkeypatch.setenv(int8_mod.CPU_KIND_ENV, "0")
    with pytest.raises(ltprune.ConfigError, match="AVX512-VNNI.*saturate"):
        int8_mod.export_int8(model, full_range=True)
    assert int8_mod.export_int8(model).config.ltp_quantization["int8_activations"] == "7-bit"  # the default works


def test_full_range_switches_the_kernels_on_a_vnni_cpu(monkeypatch):
    """What full range changes, checked without running it (it must run on a VNNI CPU only)."""
    model = _model()
    Q.quantize_model(model, 8)
    monkeypatch.setenv(int8_mod.CPU_KIND_ENV, "1")
    out = int8_mod.export_int8(model, full_range=True)
    versions = {m.version for m in out.modules() if m._get_name() == "DynamicQuantizedLinear"}
    assert versions == {3} and out.config.ltp_quantization["int8_activations"] == "8-bit"
    default = {m.version for m in int8_mod.export_int8(model).modules() if m._get_name() == "DynamicQuantizedLinear"}
    assert 3 not in default


def test_cli_eval_int8_full_range_refused_before_loading(monkeypatch, tmp_path, capsys):
    from ltprune.cli import main

    monkeypatch.setenv(int8_mod.CPU_KIND_ENV, "0")
    code = main(["eval", "--model", str(tmp_path / "nothing-here"), "--task", "rotten_tomatoes",
                 "--output-dir", str(tmp_path / "out"), "--int8-full-range"])
    assert code == 2 and "AVX512-VNNI" in capsys.readouterr().err
