"""The SQuAD 2.0 task: extractive QA on the pruned model (paper Fig. 5, Table 1).

Everything particular to spans lives here: the official SQuAD v2 metrics (exact and F1, overall,
HasAns and NoAns, as fractions), reading the data (the hub's ``rajpurkar/squad_v2`` or local SQuAD
v2 JSON), question/context features with offset mappings and a doc stride, n-best span decoding
with a null answer, prediction and scoring with FLOPs, the Trainer's dev metric, and loading a
``...ForQuestionAnswering`` model. The model side is ``patch``'s: QA heads get drop-and-restore
and, in evaluation, pruned positions cannot be an answer boundary. ``ltprune.qa`` composes these
into training runs and the Fig. 5 experiment.

**No real QA data ships offline**: the tests use a tiny hand-written SQuAD-v2-format fixture.
"""

from __future__ import annotations

import collections
import json
import math
import re
import string
import warnings
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering

from .. import checkpoint
from ..batching import MODEL_INPUTS, collate, length_sorted_batches
from ..config import LTPConfig
from ..data import TaskInfo
from ..device import place
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation import Predictions, flops_summary, record_dims
from ..names import CONFIG_KEY, is_qa_class
from ..patch import get_config, get_thresholds, is_patched, patch
from ..trainer import LTPTrainer


HUB_NAME = "rajpurkar/squad_v2"
TASK_NAME = "squad_v2"
EVAL_COLUMNS = ("example_id", "offset_mapping")


def qa_info():
    """What ``run_stage`` needs to know about the task (its metric function is replaced, see QATrainer)."""
    return TaskInfo(name=TASK_NAME, num_labels=2, is_regression=False, metric="squad_v2_f1", has_pair=True,
                    label_names=None)


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official normalisation: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def compute_exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold: str, prediction: str) -> float:
    """Bag-of-tokens F1 of the normalised answers; an empty side scores 1 only if both are empty."""
    gold_toks, pred_toks = _tokens(gold), _tokens(prediction)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _answer_texts(answers) -> list[str]:
    return list(answers["text"]) if isinstance(answers, dict) else list(answers)


def _gold_texts(answers) -> list[str]:
    golds = [t for t in _answer_texts(answers) if normalize_answer(t)]
    return golds or [""]  # unanswerable: the only correct answer is the empty string


def per_example_scores(predictions: dict, references: dict) -> dict[str, tuple[int, float]]:
    """{id: (exact, f1)}: the best over the gold answers. A missing prediction counts as "" (no
    answer); the official script would skip it instead, which can only flatter a system."""
    out = {}
    for qid, answers in references.items():
        pred = predictions.get(qid, "")
        golds = _gold_texts(answers)
        out[qid] = (max(compute_exact(g, pred) for g in golds), max(compute_f1(g, pred) for g in golds))
    return out


def squad_v2_metrics(predictions: dict, references: dict) -> dict:
    """exact, f1 (overall, ``HasAns_*``, ``NoAns_*``) and the counts, as in evaluate-v2.0.py.

    ``predictions``: {id: answer text, "" for no answer}; ``references``: {id: answers}, where
    answers is a SQuAD ``{"text": [...], "answer_start": [...]}`` dict or a list of texts (empty
    for an unanswerable question).
    """
    if not references:
        raise DataError("no reference answers to score")
    scores = per_example_scores(predictions, references)
    has = {qid: bool(_answer_texts(a)) for qid, a in references.items()}
    out = {}
    for prefix, ids in (("", list(scores)), ("HasAns_", [q for q in scores if has[q]]),
                        ("NoAns_", [q for q in scores if not has[q]])):
        out[f"{prefix}total"] = len(ids)
        if ids:
            out[f"{prefix}exact"] = float(np.mean([scores[q][0] for q in ids]))
            out[f"{prefix}f1"] = float(np.mean([scores[q][1] for q in ids]))
    return out


def read_squad_json(path) -> "datasets.Dataset":
    """A SQuAD (v1.1 or v2.0) JSON file as the hub's columns: id, title, context, question, answers."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a SQuAD JSON file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DataError(f"{path}: expected SQuAD JSON ({{'version': ..., 'data': [articles]}})")
    rows = {k: [] for k in ("id", "title", "context", "question", "answers")}
    shifted = 0
    for article in raw["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context")
            if not isinstance(context, str) or not context.strip():
                raise DataError(f"{path}: a paragraph of {article.get('title')!r} has no context")
            for qa in paragraph.get("qas", []):
                if "id" not in qa or not str(qa.get("question", "")).strip():
                    raise DataError(f"{path}: a question of {article.get('title')!r} has no id or text")
                texts, starts = [], []
                for answer in ([] if qa.get("is_impossible") else qa.get("answers", [])):
                    text, start = answer.get("text", ""), answer.get("answer_start")
                    if not isinstance(start, int) or context[start:start + len(text)] != text:
                        found = context.find(text)
                        if found < 0:
                            raise DataError(f"{path}: question {qa['id']}: answer {text!r} is not in its context")
                        start, shifted = found, shifted + 1
                    texts.append(text)
                    starts.append(start)
                rows["id"].append(str(qa["id"]))
                rows["title"].append(str(article.get("title", "")))
                rows["context"].append(context)
                rows["question"].append(str(qa["question"]))
                rows["answers"].append({"text": texts, "answer_start": starts})
    if not rows["id"]:
        raise DataError(f"{path}: no questions")
    if len(set(rows["id"])) != len(rows["id"]):
        raise DataError(f"{path}: question ids are not unique")
    if shifted:
        warnings.warn(f"{path}: {shifted} answers had a wrong answer_start and were located by text",
                      UserWarning, stacklevel=2)
    return datasets.Dataset.from_dict(rows)


def load_squad(data_file=None, dev_file=None, *, max_train_examples: int | None = None,
               max_eval_examples: int | None = None) -> "datasets.DatasetDict":
    """SQuAD 2.0 splits ``train`` / ``validation``: local SQuAD-v2 JSON files when given (either may
    be omitted: ``dev_file`` alone is enough to evaluate), else the hub's ``rajpurkar/squad_v2``.
    ``max_*_examples`` keep the first N questions (the files' order)."""
    if data_file is None and dev_file is None:
        try:
            dsd = datasets.load_dataset(HUB_NAME)
        except Exception as exc:  # offline, no cache: say what to do instead
            raise DataError(f"cannot load {HUB_NAME} from the hub ({type(exc).__name__}); pass local "
                            "SQuAD v2 JSON files with --data-file / --dev-file") from None
        dsd = datasets.DatasetDict({k: dsd[k] for k in ("train", "validation") if k in dsd})
    else:
        dsd = datasets.DatasetDict()
        if data_file is not None:
            dsd["train"] = read_squad_json(data_file)
        if dev_file is not None:
            dsd["validation"] = read_squad_json(dev_file)
    for split, limit in (("train", max_train_examples), ("validation", max_eval_examples)):
        if limit is not None and split in dsd and len(dsd[split]) > limit:
            dsd[split] = dsd[split].select(range(limit))
    return dsd


def prepare_features(examples, tokenizer, max_length: int = 384, doc_stride: int = 128):
    """Question/context features, unpadded (padding is LTP's business): one per window of
    ``max_length`` tokens over the context, consecutive windows sharing ``doc_stride`` tokens.

    Each feature has the model inputs, ``start_positions``/``end_positions`` (the [CLS] index
    when the answer is absent or not wholly inside the window) and, for decoding,
    ``example_id`` and ``offset_mapping`` (``None`` outside the context). The Trainer drops the
    last two itself (they are not model arguments).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("question answering needs a fast tokenizer (offset mappings)")
    if doc_stride >= max_length // 2 or doc_stride < 0:
        raise ConfigError(f"doc_stride must be in [0, max_length / 2), got {doc_stride} for max_length {max_length}")
    question_first = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]
    first, second = (questions, examples["context"]) if question_first else (examples["context"], questions)
    enc = tokenizer(first, second, truncation="only_second" if question_first else "only_first",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    sample_map = enc.pop("overflow_to_sample_mapping")
    context_id = 1 if question_first else 0
    enc["start_positions"], enc["end_positions"], enc["example_id"] = [], [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids = enc["input_ids"][i]
        cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq = enc.sequence_ids(i)
        sample = sample_map[i]
        answers = examples["answers"][sample]
        start_pos = end_pos = cls_index
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            ctx = [j for j, s in enumerate(seq) if s == context_id]
            if ctx and offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char:
                start_pos = next(j for j in ctx if offsets[j][1] > start_char)
                end_pos = next(j for j in reversed(ctx) if offsets[j][0] < end_char)
        enc["start_positions"].append(start_pos)
        enc["end_positions"].append(end_pos)
        enc["example_id"].append(examples["id"][sample])
        enc["offset_mapping"][i] = [list(o) if seq[j] == context_id else None for j, o in enumerate(offsets)]
    return enc


def tokenize_squad(dsd, tokenizer, max_length: int = 384, doc_stride: int = 128):
    """``prepare_features`` over every split (examples are kept separately for decoding)."""
    out = datasets.DatasetDict()
    for split, ds in dsd.items():
        out[split] = ds.map(prepare_features, batched=True, remove_columns=ds.column_names,
                            fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, doc_stride=doc_stride),
                            desc=f"features {split}")
    return out


def postprocess(examples, features, start_logits, end_logits, *, n_best: int = 20, max_answer_length: int = 30,
                null_threshold: float = 0.0) -> tuple[dict, dict]:
    """Answers from start/end logits: the best valid span over an example's features (n-best
    starts x n-best ends, inside the context, end >= start, at most ``max_answer_length`` tokens),
    or "" when the null score (start + end logit at [CLS], lowest over the features) beats it
    by more than ``null_threshold``. Logits are per feature (rows may be padded: only positions
    with an offset are read). Returns ({id: answer}, {id: null score - best span score}).
    """
    by_example = collections.defaultdict(list)
    for i, qid in enumerate(features["example_id"]):
        by_example[qid].append(i)
    offsets_all = features["offset_mapping"]
    answers, null_odds = {}, {}
    for example in examples:
        qid, context = example["id"], example["context"]
        null_score, best = math.inf, None
        for i in by_example.get(qid, []):
            offsets = offsets_all[i]
            start = np.asarray(start_logits[i], dtype=np.float64)[:len(offsets)]
            end = np.asarray(end_logits[i], dtype=np.float64)[:len(offsets)]
            null_score = min(null_score, start[0] + end[0])
            starts = np.argsort(start)[::-1][:n_best]
            ends = np.argsort(end)[::-1][:n_best]
            for s in starts:
                if offsets[s] is None or not np.isfinite(start[s]) or start[s] <= np.finfo(np.float32).min:
                    continue
                for e in ends:
                    if (offsets[e] is None or e < s or e - s + 1 > max_answer_length
                            or not np.isfinite(end[e]) or end[e] <= np.finfo(np.float32).min):
                        continue
                    score = start[s] + end[e]
                    if best is None or score > best[0]:
                        best = (score, offsets[s][0], offsets[e][1])
        if best is None:
            answers[qid], null_odds[qid] = "", math.inf
            continue
        diff = null_score - best[0]
        null_odds[qid] = float(diff)
        answers[qid] = "" if diff > null_threshold else context[best[1]:best[2]]
    return answers, null_odds


def _references(examples) -> dict:
    return {qid: answers for qid, answers in zip(examples["id"], examples["answers"])}


def predict_features(model, features, pad_id: int, batch_size: int = 64):
    """Start/end logits per feature (unpadded, dataset order) and the pruning records."""
    with torch.no_grad():
        return _predict_features(model, features, pad_id, batch_size)


def _predict_features(model, features, pad_id, batch_size):
    place(model, "auto").eval()  # as for classification: evaluate where training ran
    device = next(model.parameters()).device
    cols = [c for c in MODEL_INPUTS if c in features.column_names]
    rows = [dict(zip(cols, values)) for values in zip(*(features[c] for c in cols))]
    lengths = [len(r["input_ids"]) for r in rows]
    n = len(rows)
    starts, ends = [None] * n, [None] * n
    tokens_in = tokens_kept = out_len = dims = None
    for index in length_sorted_batches(lengths, batch_size):
        out = model(**collate([rows[i] for i in index], pad_id, device))
        rec = out.ltp
        if tokens_in is None:
            tokens_in = np.zeros((n, rec.num_layers), dtype=np.int64)
            tokens_kept, out_len = np.zeros_like(tokens_in), np.zeros(n, dtype=np.int64)
            dims = record_dims(rec)
        s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        for row, i in enumerate(index):
            starts[i], ends[i] = s[row, :lengths[i]], e[row, :lengths[i]]
        tokens_in[index] = rec.tokens_in.cpu().numpy()
        tokens_kept[index] = rec.tokens_kept.cpu().numpy()
        out_len[index] = rec.lengths.cpu().numpy()
    return starts, ends, Predictions(np.zeros((n, 0), np.float32), out_len, tokens_in, tokens_kept, *dims)


def evaluate_qa(model, examples, features, pad_id: int, *, batch_size: int = 64, n_best: int = 20,
                max_answer_length: int = 30, null_threshold: float = 0.0) -> dict:
    """SQuAD v2 metrics + FLOPs of ``model`` on the dev examples (``metric`` is F1)."""
    if len(features) == 0:
        raise DataError("no QA features to evaluate")
    starts, ends, pred = predict_features(model, features, pad_id, batch_size)
    answers, null_odds = postprocess(examples, features, starts, ends, n_best=n_best,
                                     max_answer_length=max_answer_length, null_threshold=null_threshold)
    refs = _references(examples)
    scores = squad_v2_metrics(answers, refs)
    result = {"task": TASK_NAME, "metric_name": "f1", "metric": scores["f1"], **scores,
              **flops_summary(pred), "num_examples": len(refs), "num_features": len(features)}
    if is_patched(model):
        result["mode"] = get_config(model).mode
        result["thresholds"] = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
    result.update(_predictions=pred, _answers=answers, _null_odds=null_odds,
                  _per_example=per_example_scores(answers, refs), _features=features, _references=refs)
    return result


def write_qa_metrics(result: dict, output_dir) -> Path:
    """``metrics.json``, ``predictions.json`` (the official {id: answer} format) and
    ``examples.jsonl``: one row per feature with its length, tokens per layer and whether its
    question was answered exactly (``correct``), for the per-example plots."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    path = output_dir / "metrics.json"
    path.write_text(json.dumps(public, indent=1))
    (output_dir / "predictions.json").write_text(json.dumps(result["_answers"], indent=1, ensure_ascii=False))
    pred, scores, refs = result["_predictions"], result["_per_example"], result["_references"]
    with open(output_dir / "examples.jsonl", "w") as handle:
        for i, qid in enumerate(result["_features"]["example_id"]):
            has = bool(_answer_texts(refs[qid]))
            row = {"index": i, "example_id": qid, "length": int(pred.lengths[i]), "label": int(has),
                   "prediction": int(bool(result["_answers"].get(qid))), "correct": bool(scores[qid][0]),
                   "f1": round(scores[qid][1], 6), "tokens_in": pred.tokens_in[i].tolist(),
                   "tokens_kept": pred.tokens_kept[i].tolist()}
            handle.write(json.dumps(row) + "\n")
    return path


def load_qa_model(name_or_path, ltp: LTPConfig | None = None):
    """A patched ``...ForQuestionAnswering``: an ltprune QA checkpoint (``ltp`` overrides its
    settings, not its mode), or any transformers checkpoint (local or hub) given a QA head."""

    path = Path(str(name_or_path))
    config_file = path / "config.json"
    if config_file.is_file() and CONFIG_KEY in json.loads(config_file.read_text()):
        overrides = ltp.to_dict() if ltp is not None else {}
        overrides.pop("mode", None)
        model = checkpoint.from_pretrained(path, **overrides)
        if not is_qa_class(type(model).__name__):
            raise CheckpointError(f"{path}: a {type(model).__name__}, not a question-answering model")
        return model
    if path.exists() and not config_file.is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(str(name_or_path), use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a QA model from {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return patch(model, ltp or LTPConfig())


class QATrainer(LTPTrainer):
    """LTPTrainer whose dev metric is SQuAD v2 F1 (``metric``), so the hard stage keeps the
    checkpoint with the best F1; run_stage's classification metric does not apply to spans."""

    def __init__(self, *args, qa_metrics=None, **kwargs):
        super().__init__(*args, **kwargs)
        if qa_metrics is not None:
            self.compute_metrics = qa_metrics


def _trainer_metrics(examples, features, **decode):
    """compute_metrics for the Trainer: its logits come padded with -100 across batches, but
    only positions with an offset are read, so the padding never matters."""
    refs = _references(examples)

    def fn(prediction):
        start, end = prediction.predictions[:2]
        answers, _ = postprocess(examples, features, start, end, **decode)
        scores = squad_v2_metrics(answers, refs)
        return {"metric": scores["f1"], **{k: v for k, v in scores.items() if not k.endswith("total")}}

    return fn
