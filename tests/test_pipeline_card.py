"""HF pipelines on a patched model, the model card written by save_pretrained, the ViT bench config."""

from __future__ import annotations

import copy
import importlib
import json
from types import SimpleNamespace

import datasets
import pytest
import torch
import transformers
from transformers import AutoTokenizer

import ltprune
from ltprune import bench
from ltprune.cli import main as cli_main
from ltprune.evaluation import evaluate
from ltprune.inference import predict

from conftest import offline_model_dir, tiny_model

patch_module = importlib.import_module("ltprune.patch")  # ``ltprune.patch`` is the function

TEXTS = ["a gorgeous, witty film", "the plot was dull and the actors were quite weak , really",
         "superb", "not my cup of tea at all , though some will like it", "ok then"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(offline_model_dir())


def _model(tokenizer, final=0.03):
    model = tiny_model("bert", vocab_size=tokenizer.vocab_size, num_labels=2)
    return ltprune.patch(model, ltprune.LTPConfig(final_threshold=final, mode="hard"))


# --------------------------------------------------------------------------------------------
# transformers.pipeline
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pipeline_uses_the_fast_path_and_agrees_with_predict(tokenizer, monkeypatch, batch_size):
    model = _model(tokenizer)
    records = []
    engine = patch_module.run_encoder

    def spy(*args, **kwargs):
        hidden, rec = engine(*args, **kwargs)
        records.append(rec)
        return hidden, rec

    monkeypatch.setattr(patch_module, "run_encoder", spy)
    clf = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    out = clf(TEXTS, batch_size=batch_size)
    assert len(records) == -(-len(TEXTS) // batch_size)  # one engine pass per pipeline batch
    assert any(bool((r.tokens_kept[:, -1] < r.lengths).any()) for r in records)  # tokens were removed
    expected = predict(model, tokenizer, TEXTS, batch_size=2)
    for got, want in zip(out, expected):
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def _card(path) -> str:
    return (path / "README.md").read_text()


def _tiny_dev(tokenizer):
    enc = [tokenizer(t) for t in TEXTS]
    data = datasets.Dataset.from_dict({"input_ids": [e["input_ids"] for e in enc],
                                       "attention_mask": [e["attention_mask"] for e in enc],
                                       "token_type_ids": [e["token_type_ids"] for e in enc],
                                       "label": [1, 0, 1, 0, 1]})
    return data, SimpleNamespace(name="tiny", metric="accuracy")


def test_save_pretrained_writes_a_card_and_still_round_trips(tokenizer, tmp_path):
    model = _model(tokenizer)
    ltprune.set_thresholds(model, [0.001, 0.0125, 0.03])
    model.save_pretrained(tmp_path)
    card = _card(tmp_path)
    assert card.count("## Learned Token Pruning") == 1
    for text in ("| threshold | 0.001 | 0.0125 | 0.03 |", "| `final_threshold` | 0.03 |", "| `mode` | hard |",
                 "| `layout` | packed |", "ltprune.from_pretrained"):
        assert text in card
    assert "Evaluation when saved" not in card  # never evaluated: no metrics claimed
    loaded = ltprune.from_pretrained(tmp_path)
    assert torch.equal(ltprune.get_thresholds(loaded), ltprune.get_thresholds(model))
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-6)
    assert ltprune.get_config(loaded) == ltprune.get_config(model)


def test_card_records_the_evaluation_only_while_it_is_current(tokenizer, tmp_path):
    model = _model(tokenizer)
    data, info = _tiny_dev(tokenizer)
    result = evaluate(model, data, info, tokenizer.pad_token_id, batch_size=2)
    assert model._ltp.last_eval["relative_flops"] == result["relative_flops"]
    model.save_pretrained(tmp_path / "a")
    card = _card(tmp_path / "a")
    assert "### Evaluation when saved" in card
    assert f"| accuracy | {result['accuracy']:.6g} |" in card
    assert f"| relative FLOPs (vs unpruned) | {result['relative_flops']:.6g} |" in card
    assert "| task | tiny |" in card
    ltprune.from_pretrained(tmp_path / "a")  # the card does not disturb loading

    ltprune.set_thresholds(model, [0.0, 0.0, 0.0])  # the model changed since it was evaluated
    model.save_pretrained(tmp_path / "b")
    assert "Evaluation when saved" not in _card(tmp_path / "b")
    path = patch_module.write_model_card(model, tmp_path / "c", {"accuracy": 0.875, "relative_flops": 0.5,
                                                                 "tokens_per_layer": [9, 5], "_labels": [1]})
    text = path.read_text()
    assert "| accuracy | 0.875 |" in text and "| relative FLOPs (vs unpruned) | 0.5 |" in text
    assert "tokens_per_layer" not in text and "_labels" not in text  # scalars only


def test_card_keeps_other_content_and_follows_deepcopies(tokenizer, tmp_path):
    model = _model(tokenizer)
    (tmp_path / "README.md").write_text("# My model\n\nIntro.\n\n## Learned Token Pruning\n\nold text\n\n"
                                        "### old sub\n\n## License\n\nMIT\n")
    model.save_pretrained(tmp_path)
    card = _card(tmp_path)
    assert card.startswith("# My model\n\nIntro.\n\n## Learned Token Pruning\n")
    assert card.rstrip().endswith("## License\n\nMIT")
    assert "old text" not in card and "old sub" not in card and card.count("## Learned Token Pruning") == 1

    twin = copy.deepcopy(model)
    assert twin.save_pretrained.__self__ is twin
    ltprune.set_thresholds(twin, [0.002, 0.004, 0.008])
    twin.save_pretrained(tmp_path / "twin")
    assert "| threshold | 0.002 | 0.004 | 0.008 |" in _card(tmp_path / "twin")
    assert torch.equal(ltprune.get_thresholds(ltprune.from_pretrained(tmp_path / "twin")),
                       ltprune.get_thresholds(twin))
    model.save_pretrained(tmp_path / "orig")
    assert "0.002 | 0.004" not in _card(tmp_path / "orig")

    model.save_pretrained(tmp_path / "worker", is_main_process=False)
    assert not (tmp_path / "worker" / "README.md").exists()


# --------------------------------------------------------------------------------------------
# ViT benchmark config (tiny sizes: structure only, no speed asserted)
# --------------------------------------------------------------------------------------------


def test_vit_bench_config_runs_from_the_cli(tmp_path, monkeypatch, capsys):
    tiny = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=3,
                num_attention_heads=4, intermediate_size=48, num_labels=3, initializer_range=0.2)
    monkeypatch.setitem(bench.IMAGE_CONFIGS, "vit-base", tiny)
    monkeypatch.setattr(bench, "NUM_IMAGES", 40)
    monkeypatch.setattr(bench, "CALIBRATION_IMAGES", 16)
    code = cli_main(["bench", "--configs", "vit-base", "--parts", "throughput", "--batch-sizes", "1,8,32",
                     "--repeats", "1", "--threads", "1", "--device", "cpu", "--max-examples", "24",
                     "--output-dir", str(tmp_path)])
    torch.set_num_threads(1)
    assert code == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    assert "task" not in results  # no text data loaded for an image-only run
    assert "device" not in results["environment"]  # named only for an accelerator
    model = results["models"]["vit-base"]
    assert model["layers"] == 3 and "17 tokens each" in model["inputs"] and model["calibrated_final_threshold"] > 0
    rows = results["throughput"]["vit-base"]
    assert [r["batch_size"] for r in rows] == [1, 8, 32] and all(r["num_sequences"] == 24 for r in rows)
    for r in rows:
        assert r["flops_reduction"] > 1
        for layout in ("padded", "packed"):
            assert r[layout]["realised_over_theoretical"] == pytest.approx(r[layout]["speedup"] / r["flops_reduction"])
    assert "Throughput vs batch size: vit-base" in capsys.readouterr().out
    assert (tmp_path / "bench.png").is_file()


def test_image_batches_and_unknown_configs():
    pixels = bench.random_images(10, 32)
    assert torch.equal(pixels, bench.random_images(10, 32))  # fixed seed
    batches, n = bench.bench_batches(pixels, None, 4, limit=6)
    assert n == 6 and [b["pixel_values"].shape[0] for b in batches] == [4, 2]
    with pytest.raises(ltprune.ConfigError, match="unknown bench config 'vit-huge'"):
        bench.run_bench(configs=("vit-huge",), parts=(), threads=1)
    with pytest.raises(ltprune.ConfigError, match="not a torch device"):
        bench.run_bench(configs=("vit-base",), parts=(), threads=1, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ltprune.ConfigError, match="CUDA is not available"):
            bench.run_bench(configs=("vit-base",), parts=(), threads=1, device="cuda")
    assert bench.to_device(batches, "cpu")[0]["pixel_values"].device.type == "cpu"


# --------------------------------------------------------------------------------------------
# Evaluation placement: where training runs (GPU when there is one), or where the model is
# --------------------------------------------------------------------------------------------


def test_evaluation_device_resolution(monkeypatch):
    from ltprune.evaluation import resolve_device

    assert resolve_device(None) is None
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") is None  # CPU-only: the model stays where it is
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")  # a checkpoint loaded on CPU moves to the GPU


def test_evaluate_moves_the_model_to_the_requested_device(tokenizer):
    model = _model(tokenizer)
    data, info = _tiny_dev(tokenizer)
    moved = []
    original = model.to
    model.to = lambda *a, **k: moved.append(a) or original(*a, **k)
    evaluate(model, data, info, tokenizer.pad_token_id, batch_size=2, device="cpu")
    assert moved == [(torch.device("cpu"),)]
    moved.clear()
    evaluate(model, data, info, tokenizer.pad_token_id, batch_size=2, device=None)
    assert moved == []


def test_auto_placement_moves_only_cpu_models(monkeypatch):
    from ltprune.evaluation import place

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    calls = []
    on_cpu = torch.nn.Linear(2, 2)
    on_cpu.to = lambda *a, **k: calls.append(("cpu model", *a))
    on_gpu = torch.nn.Linear(2, 2, device="meta")  # stands for a model already on an accelerator
    on_gpu.to = lambda *a, **k: calls.append(("gpu model", *a))
    place(on_cpu, "auto")
    place(on_gpu, "auto")  # a torchrun rank keeps its own GPU
    place(on_gpu, "cpu")  # an explicit device always applies
    assert calls == [("cpu model", torch.device("cuda")), ("gpu model", torch.device("cpu"))]
