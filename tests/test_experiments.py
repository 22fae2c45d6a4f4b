"""The paper's experiments end to end on tiny fixtures: length robustness (Table 3), length
distributions (Table 2 / Fig. 1) and the per-example plots (Fig. A.2 / A.3)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy
from transformers import AutoTokenizer

from ltprune.errors import DataError, LTPError
from ltprune.cli.experiments import register
from ltprune.experiments import lengths as lengths_mod
from ltprune.experiments import per_example, robustness

from conftest import offline_model_dir, save_tiny_classifier

FIXTURES = Path(__file__).parent / "fixtures"
LENGTHS_TASK = FIXTURES / "lengths"   # train.csv (shorter) + dev.csv (longer)
NLI_TASK = FIXTURES / "custom" / "nli"
PNG = b"\x89PNG\r\n\x1a\n"


def _run(argv) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args(argv)
    return a.func(a)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("tiny"), num_layers=4)


# --------------------------------------------------------------------------------------------
# Table 3
# --------------------------------------------------------------------------------------------


def test_length_buckets():
    split = robustness.length_buckets([5, 1, 9, 3, 7, 2, 8, 4])  # Q2 4.5, Q3 7.25
    assert split["q2"] == 4.5 and split["q3"] == 7.25
    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4])
    assert sorted(lengths[split["indices"]["~Q2"]]) == [1, 2, 3, 4]
    assert sorted(lengths[split["indices"]["Q2~Q3"]]) == [5, 7]
    assert sorted(lengths[split["indices"]["Q3~"]]) == [8, 9]
    with pytest.raises(LTPError):
        robustness.length_buckets([])


@pytest.fixture(scope="module")
def robust_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness")
    argv = ["experiment", "robustness", "--model", str(tiny_dir), "--task", str(LENGTHS_TASK), "--output-dir",
            str(out), "--finetune", "--lambdas", "0.05,0.3", "--max-steps", "2", "--batch-size", "8", "--lr", "1e-3",
            "--logging-steps", "1", "--population", "3", "--generations", "2"]
    assert _run(argv) == 0
    return out, argv


def test_robustness_end_to_end(robust_run, capsys):
    out, _ = robust_run
    data = json.loads((out / "robustness.json").read_text())
    q2 = data["q2"]
    # only training examples no longer than the dev median were used
    assert 0 < data["train_examples"]["used (length <= Q2)"] < data["train_examples"]["total"]
    assert data["train_examples"]["max_length"] <= q2
    b = data["buckets"]
    assert b["~Q2"]["max_length"] <= q2 < b["Q2~Q3"]["min_length"] <= b["Q2~Q3"]["max_length"] <= data["q3"]
    assert b["Q3~"]["min_length"] > data["q3"]
    assert sum(v["n"] for v in b.values()) == 40
    rows = {(r["method"], r["knob"]): r for r in data["rows"]}
    assert set(rows) == {("unpruned", None), ("ltp", 0.05), ("ltp", 0.3), ("lat", 0.05), ("lat", 0.3)}
    for (method, knob), r in rows.items():
        for name in robustness.BUCKETS:
            cell = r["buckets"][name]
            assert 0 <= cell["metric"] <= 1 and 0 < cell["relative_flops"] <= 1 + 1e-9
            assert cell["n"] == b[name]["n"]
            assert (out / (method if knob is None else f"{method}/{knob:g}") / robustness.BUCKET_DIRS[name]
                    / "examples.jsonl").is_file()
    assert all(v["relative_flops"] == 1.0 for v in rows[("unpruned", None)]["buckets"].values())
    for lam in (0.05, 0.3):
        lat, ltp = rows[("lat", lam)], rows[("ltp", lam)]
        # LAT was searched on ~Q2 to (at most) LTP's FLOPs there ...
        assert lat["flops_target"] == pytest.approx(ltp["buckets"]["~Q2"]["relative_flops"])
        assert lat["buckets"]["~Q2"]["relative_flops"] <= lat["flops_target"] + 1e-9
        # ... and its fixed lengths cut longer inputs harder: its FLOPs fall with length
        flops = [lat["buckets"][k]["relative_flops"] for k in robustness.BUCKETS]
        assert flops[0] > flops[1] > flops[2]
        assert all(x >= y for x, y in zip(lat["keep_lengths"], lat["keep_lengths"][1:]))
    # the fine-tuned start and LAT's one LengthDrop model were trained once, on short inputs
    assert (out / "finetune" / "final" / "model.safetensors").is_file()
    assert (out / "lat" / "lengthdrop" / "final" / "model.safetensors").is_file()
    table = (out / "robustness.md").read_text()
    assert "| LTP (lambda 0.05) |" in table and "LAT (matched to lambda 0.3)" in table and "LTP - LAT" in table
    assert (out / "robustness.png").read_bytes().startswith(PNG)
    capsys.readouterr()
    assert _run(["experiment", "robustness", "--output-dir", str(out), "--table"]) == 0
    assert "~Q2 accuracy" in capsys.readouterr().out


def test_robustness_resumes(robust_run):
    out, argv = robust_run
    before = (out / "robustness.json").read_text()
    stamp = (out / "ltp" / "0.05" / "to_q2" / "metrics.json").stat().st_mtime_ns
    assert _run(argv) == 0  # everything is reused: nothing re-evaluated
    assert (out / "ltp" / "0.05" / "to_q2" / "metrics.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "robustness.json").read_text())["rows"] == json.loads(before)["rows"]


# --------------------------------------------------------------------------------------------
# Table 2 / Fig. 1
# --------------------------------------------------------------------------------------------


def test_kl_of_smoothed_histograms_by_hand():
    edges = lengths_mod.shared_bins([1, 2, 3], [3, 4], bins=4)
    assert edges.tolist() == [1, 2, 3, 4, 5]
    p = lengths_mod.smoothed_histogram([1, 2, 3], edges, smoothing=1.0)   # counts 1,1,1,0 + 1
    q = lengths_mod.smoothed_histogram([3, 4], edges, smoothing=1.0)      # counts 0,0,1,1 + 1
    assert p.tolist() == pytest.approx([2 / 7, 2 / 7, 2 / 7, 1 / 7])
    assert q.tolist() == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6])
    expected = sum(a * np.log(a / b) for a, b in zip(p, q))
    assert lengths_mod.kl_divergence(p, q) == pytest.approx(expected) == pytest.approx(entropy(p, q))
    # identical samples: zero; no smoothing with an empty bin on one side: infinite
    same = lengths_mod.compare_lengths([3, 4, 5, 5], [3, 4, 5, 5], bins=3)
    assert same["kl"] == pytest.approx(0.0) and same["kl_train_dev"] == pytest.approx(0.0)
    assert np.isinf(lengths_mod.kl_divergence(lengths_mod.smoothed_histogram([1], edges, 0.0),
                                              lengths_mod.smoothed_histogram([4], edges, 0.0)))
    wide = lengths_mod.shared_bins(np.arange(0, 500), [600], bins=40)
    assert len(wide) - 1 <= 40 and wide[0] == 0 and wide[-1] > 600


def test_lengths_experiment(tmp_path, capsys):
    out = tmp_path / "lengths"
    assert _run(["experiment", "lengths", "--task", f"{LENGTHS_TASK},{NLI_TASK}", "--model",
                 str(offline_model_dir()), "--output-dir", str(out), "--bins", "20"]) == 0
    data = json.loads((out / "lengths.json").read_text())
    assert set(data["tasks"]) == {"lengths", "nli"}
    r = data["tasks"]["lengths"]
    assert r["train"]["n"] == 96 and r["dev"]["n"] == 40
    assert r["dev"]["mean"] > r["train"]["mean"]  # the fixture's dev texts are longer
    assert sum(r["train_hist"]) == pytest.approx(1.0) and sum(r["dev_hist"]) == pytest.approx(1.0)
    assert len(r["edges"]) == len(r["train_hist"]) + 1 <= 21
    assert r["kl"] == pytest.approx(entropy(r["dev_hist"], r["train_hist"]), rel=1e-5) and r["kl"] > 0.05
    # lengths are untruncated token counts with special tokens: check one by hand
    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    first = (LENGTHS_TASK / "train.csv").read_text().splitlines()[1].rsplit(",", 1)[0]
    assert r["train"]["min"] <= len(tok(first)["input_ids"]) <= r["train"]["max"]
    assert (out / "lengths.png").read_bytes().startswith(PNG)
    assert "KL(dev‖train)" in (out / "lengths.md").read_text()
    assert "| lengths | 96 |" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Fig. A.2 / A.3
# --------------------------------------------------------------------------------------------


def _write_examples(folder: Path, rows) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_per_example_stats_by_hand(tmp_path):
    rows = [{"index": i, "length": n, "label": i % 2, "prediction": 1 if n > 10 else i % 2,
             "tokens_in": [n, n - n // 4, n // 2]} for i, n in enumerate([4, 8, 12, 16, 20, 24])]
    folder = _write_examples(tmp_path / "eval", rows)
    data = per_example.per_example_report(folder)
    run = data["runs"]["eval"]
    k = run["kept_per_layer"]
    assert k["num_layers"] == 3 and [x["after_layer"] for x in k["layers"]] == [1, 2]
    assert k["layers"][1]["mean_kept"] == pytest.approx(np.mean([2, 4, 6, 8, 10, 12]))
    assert k["layers"][0]["spearman_with_length"] == pytest.approx(1.0)
    bias = run["length_bias"]
    # wrong: lengths 12 (label 0 -> 1), 20 (label 0 -> 1); correct: 4, 8, 16, 24
    assert bias["num_wrong"] == 2 and bias["mean_length_wrong"] == 16 and bias["mean_length_correct"] == 13
    assert 0 <= bias["mannwhitney_p"] <= 1
    assert [q["n"] for q in bias["accuracy_by_length_quartile"]] == [2, 1, 1, 2]
    for name in ("kept_per_layer.png", "length_correct.png"):
        assert (folder / name).read_bytes().startswith(PNG)
    # regression records have no "wrong": the bias part is None, the plots still come out
    reg = _write_examples(tmp_path / "reg", [{"length": n, "label": 0.5 * n, "prediction": 0.4 * n,
                                              "tokens_in": [n, n]} for n in (3, 5, 7)])
    assert per_example.per_example_report(reg)["runs"]["reg"]["length_bias"] is None
    with pytest.raises(DataError, match="no such file"):
        per_example.read_examples(tmp_path / "nothing")
    # rows with tokens_kept (QA writes it) give every layer, the last one included
    full = _write_examples(tmp_path / "full", [dict(r, tokens_kept=[r["tokens_in"][1], r["tokens_in"][2], 1])
                                               for r in rows])
    layers = per_example.per_example_report(full)["runs"]["full"]["kept_per_layer"]["layers"]
    assert [x["after_layer"] for x in layers] == [1, 2, 3] and layers[2]["mean_kept"] == 1.0


def test_per_example_cli_on_robustness_records(robust_run, tmp_path, capsys):
    out, _ = robust_run
    assert _run(["experiment", "per-example", str(out / "ltp" / "0.05" / "from_q3"),
                 str(out / "lat" / "0.05" / "from_q3"), "--labels", "LTP,LAT",
                 "--output-dir", str(tmp_path / "plots")]) == 0
    data = json.loads((tmp_path / "plots" / "per_example.json").read_text())
    assert list(data["runs"]) == ["LTP", "LAT"]
    lat_layers = data["runs"]["LAT"]["kept_per_layer"]["layers"]
    keep = json.loads((out / "robustness.json").read_text())
    keep = next(r for r in keep["rows"] if r["method"] == "lat" and r["knob"] == 0.05)["keep_lengths"]
    # on Q3~ every input is longer than LAT's lengths: it keeps exactly its configuration
    # (examples.jsonl records tokens kept after every layer, the last one included)
    assert [x["mean_kept"] for x in lat_layers] == pytest.approx([float(k) for k in keep])
    assert "Mann-Whitney" in capsys.readouterr().out
    assert (tmp_path / "plots" / "kept_per_layer.png").read_bytes().startswith(PNG)
