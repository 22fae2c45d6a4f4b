"""Extractive question answering with LTP: SQuAD 2.0 (paper Fig. 5, Table 1).

Why a module of its own: QA needs the standard span machinery around the pruned model, i.e.
question/context features with offset mappings and a doc stride, start/end labels for the
Trainer, n-best span decoding with a null answer, and the official SQuAD v2 metrics (exact and
F1, overall, HasAns and NoAns: Fig. 5 shows that pruning moves the two subsets in opposite
directions). The model side is already done by ``patch``: QA heads get drop-and-restore and, in
evaluation, pruned positions cannot be an answer start or end; in the soft stage ``outputs.loss``
is the QA loss + lambda * L_reg, so the LTP stages run unchanged through ``training.run_stage``.

Data: ``datasets.load_dataset("rajpurkar/squad_v2")`` when a hub is reachable, else local files
in the SQuAD v2 JSON format (``--data-file train.json --dev-file dev.json``). **No real QA data
ships offline**: the tests use a tiny hand-written SQuAD-v2-format fixture, so offline numbers
only show that the pipeline runs, not the paper's F1.

Metrics are fractions in [0, 1] (the official script prints percentages), like every other
metric in ltprune.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import string
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .config import LTPConfig
from .errors import CheckpointError, ConfigError, DataError, LTPError
from .options import add_ltp_options, add_stage_options, ltp_from_args, parse_floats, stage_args_from_args
from .runs import write_json_atomic

if TYPE_CHECKING:
    import datasets

log = logging.getLogger("ltprune")

HUB_NAME = "rajpurkar/squad_v2"
TASK_NAME = "squad_v2"
QA_STAGES = ("finetune", "soft", "hard")
EVAL_COLUMNS = ("example_id", "offset_mapping")
POINTS = "points.json"

__all__ = [
    "qa_info", "normalize_answer", "compute_exact", "compute_f1", "squad_v2_metrics", "read_squad_json",
    "load_squad", "prepare_features", "postprocess", "predict_features", "evaluate_qa", "write_qa_metrics",
    "load_qa_model", "run_qa_stage", "train_qa", "run_qa_experiment", "plot_qa", "register",
    "register_experiment",
]


def qa_info():
    """What ``run_stage`` needs to know about the task (its metric function is replaced, see QATrainer)."""
    from .data import TaskInfo

    return TaskInfo(name=TASK_NAME, num_labels=2, is_regression=False, metric="squad_v2_f1", has_pair=True,
                    label_names=None)


# --------------------------------------------------------------------------------------------
# the official SQuAD v2 metrics (evaluate-v2.0.py), as fractions
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def read_squad_json(path) -> "datasets.Dataset":
    """A SQuAD (v1.1 or v2.0) JSON file as the hub's columns: id, title, context, question, answers."""
    import datasets

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
    import datasets

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
    import datasets

    out = datasets.DatasetDict()
    for split, ds in dsd.items():
        out[split] = ds.map(prepare_features, batched=True, remove_columns=ds.column_names,
                            fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, doc_stride=doc_stride),
                            desc=f"features {split}")
    return out


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def predict_features(model, features, pad_id: int, batch_size: int = 64):
    """Start/end logits per feature (unpadded, dataset order) and the pruning records."""
    import torch

    with torch.no_grad():
        return _predict_features(model, features, pad_id, batch_size)


def _predict_features(model, features, pad_id, batch_size):
    from .evaluation import MODEL_INPUTS, Predictions, collate, length_sorted_batches, place

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
            dims = (rec.hidden, rec.intermediate)
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
    from .evaluation import flops_summary
    from .patch import get_config, get_thresholds, is_patched

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


# --------------------------------------------------------------------------------------------
# models and training
# --------------------------------------------------------------------------------------------


def load_qa_model(name_or_path, ltp: LTPConfig | None = None):
    """A patched ``...ForQuestionAnswering``: an ltprune QA checkpoint (``ltp`` overrides its
    settings, not its mode), or any transformers checkpoint (local or hub) given a QA head."""
    from transformers import AutoModelForQuestionAnswering

    from .checkpoint import from_pretrained
    from .patch import patch

    path = Path(str(name_or_path))
    config_file = path / "config.json"
    if config_file.is_file() and "ltp_config" in json.loads(config_file.read_text()):
        overrides = ltp.to_dict() if ltp is not None else {}
        overrides.pop("mode", None)
        model = from_pretrained(path, **overrides)
        if not type(model).__name__.endswith("ForQuestionAnswering"):
            raise CheckpointError(f"{path}: a {type(model).__name__}, not a question-answering model")
        return model
    if path.exists() and not config_file.is_file():
        raise CheckpointError(f"{path}: not a model folder (no config.json)")
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(str(name_or_path), use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load a QA model from {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return patch(model, ltp or LTPConfig())


def _qa_trainer_cls():
    from .training import LTPTrainer

    class QATrainer(LTPTrainer):
        """LTPTrainer whose dev metric is SQuAD v2 F1 (``metric``), so the hard stage keeps the
        checkpoint with the best F1; run_stage's classification metric does not apply to spans."""

        def __init__(self, *args, qa_metrics=None, **kwargs):
            super().__init__(*args, **kwargs)
            if qa_metrics is not None:
                self.compute_metrics = qa_metrics

    return QATrainer


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


def run_qa_stage(model, tokenizer, train_features, eval_examples, eval_features, stage: str, output_dir,
                 args, resume: bool = False) -> dict:
    """One LTP stage (finetune, soft, hard) on QA features through ``training.run_stage``."""
    from .training import run_stage

    if "start_positions" not in train_features.column_names:
        raise DataError("QA training features need start_positions / end_positions (prepare_features)")
    return run_stage(model, tokenizer, train_features, eval_features, qa_info(), stage, output_dir, args, resume,
                     trainer_cls=_qa_trainer_cls(),
                     trainer_kwargs={"qa_metrics": _trainer_metrics(eval_examples, eval_features)})


class _QAData:
    """Examples, features and tokenizer shared by the runs of a QA job."""

    def __init__(self, model, data_file, dev_file, max_length, doc_stride, max_train_examples,
                 max_eval_examples, need_train: bool = True):
        from .training import load_tokenizer

        self.tokenizer = load_tokenizer(str(model))
        self.examples = load_squad(data_file, dev_file, max_train_examples=max_train_examples,
                                   max_eval_examples=max_eval_examples)
        if "validation" not in self.examples:
            raise DataError("question answering needs dev questions (--dev-file)")
        if need_train and "train" not in self.examples:
            raise DataError("training needs training questions (--data-file)")
        self.features = tokenize_squad(self.examples, self.tokenizer, max_length, doc_stride)
        self.pad_id = self.tokenizer.pad_token_id

    def evaluate(self, model, output_dir=None, **decode) -> dict:
        result = evaluate_qa(model, self.examples["validation"], self.features["validation"], self.pad_id, **decode)
        if output_dir is not None and int(os.environ.get("RANK", "0")) == 0:
            write_qa_metrics(result, output_dir)
        return result

    def stage(self, model, stage, run_dir: Path, args, resume: bool = False):
        from .checkpoint import from_pretrained
        from .training import DONE, complete_checkpoints, subsample

        if (run_dir / "final" / DONE).is_file():
            log.warning("qa: %s already done in %s, loading it", stage, run_dir)
            return from_pretrained(run_dir / "final")
        eval_idx = subsample(self.examples["validation"], args.max_eval_examples_during_training, args.seed)
        eval_features = self.features["validation"]
        if len(eval_idx) < len(self.examples["validation"]):
            ids = set(eval_idx["id"])
            eval_features = eval_features.filter(lambda r: r["example_id"] in ids)
        resume = resume or (bool(complete_checkpoints(run_dir)) if run_dir.is_dir() else False)
        run_qa_stage(model, self.tokenizer, self.features["train"], eval_idx, eval_features, stage, run_dir,
                     args, resume)
        return model


def _summary(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def train_qa(model_name_or_path, output_dir, *, data_file=None, dev_file=None, stages=("soft", "hard"),
             ltp: LTPConfig | None = None, stage_args: dict | None = None, max_length: int = 384,
             doc_stride: int = 128, max_train_examples: int | None = None, max_eval_examples: int | None = None,
             resume: bool = False) -> dict:
    """The LTP recipe on SQuAD 2.0: ``stages`` in order, each evaluated on dev (SQuAD v2 metrics
    and FLOPs in ``output_dir/<stage>/metrics.json``). Returns {stage: dev metrics}."""
    from .patch import reset_thresholds, set_mode
    from .training import STAGES, StageArgs

    if not stages or any(s not in STAGES for s in stages):
        raise ConfigError(f"stages must be a non-empty list of {', '.join(STAGES)}; got {list(stages)}")
    output_dir = Path(output_dir)
    data = _QAData(model_name_or_path, data_file, dev_file, max_length, doc_stride, max_train_examples,
                   max_eval_examples)
    model = load_qa_model(model_name_or_path, ltp)
    if "soft" in stages:  # a new soft stage starts from the initial schedule, not saved thresholds
        reset_thresholds(model)
    results = {}
    for stage in stages:
        args = (stage_args or {}).get(stage, StageArgs())
        model = data.stage(model, stage, output_dir / stage, args, resume)
        if stage == "finetune":
            set_mode(model, "off")
        results[stage] = _summary(data.evaluate(model, output_dir / stage))
        log.warning("qa %s: dev F1 %.4f (HasAns %s, NoAns %s), relative FLOPs %.3f", stage, results[stage]["f1"],
                    results[stage].get("HasAns_f1"), results[stage].get("NoAns_f1"), results[stage]["relative_flops"])
    return results


# --------------------------------------------------------------------------------------------
# Fig. 5: F1 (overall, HasAns, NoAns) vs relative FLOPs over lambda
# --------------------------------------------------------------------------------------------


def _load_points(output_dir) -> list[dict]:
    path = Path(output_dir) / POINTS
    return json.loads(path.read_text()).get("points", []) if path.is_file() else []


def _save_point(output_dir, point: dict) -> None:
    points = [p for p in _load_points(output_dir)
              if not (p["method"] == point["method"] and p.get("knob") == point.get("knob"))]
    points.append(point)
    write_json_atomic(Path(output_dir) / POINTS, {"points": points})


def _point(method: str, knob, result: dict, run_dir: Path) -> dict:
    keys = ("metric_name", "metric", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
            "HasAns_total", "NoAns_total", "relative_flops", "gflops", "baseline_gflops")
    return {"task": TASK_NAME, "method": method, "knob": None if knob is None else float(knob),
            **{k: result[k] for k in keys if k in result}, "run_dir": str(run_dir)}


def run_qa_experiment(model, output_dir, lambdas=(0.01, 0.05, 0.1, 0.2), *, finetune: bool = False,
                      data_file=None, dev_file=None, ltp: LTPConfig | None = None, stage_args: dict | None = None,
                      max_length: int = 384, doc_stride: int = 128, max_train_examples: int | None = None,
                      max_eval_examples: int | None = None) -> list[dict]:
    """Paper Fig. 5: one LTP model per lambda (soft + hard from the QA-fine-tuned ``model``, or
    from ``output_dir/finetune`` with ``finetune=True``), plus the unpruned model. Points go to
    ``output_dir/points.json`` as they finish (the sweep's format: ``ltprune sweep --table``
    reads it) and are reused on a rerun; ``qa_curve.png`` is drawn at the end."""
    from .patch import get_thresholds, set_mode, set_thresholds
    from .pruning import init_thresholds
    from .training import DONE, StageArgs

    lambdas = [float(v) for v in lambdas]
    if not lambdas or not all(math.isfinite(v) and v >= 0 for v in lambdas):
        raise ConfigError(f"lambdas must be a non-empty list of numbers >= 0, got {lambdas}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ltp = ltp or LTPConfig()
    stage_args = {s: StageArgs() for s in ("finetune", "soft", "hard")} | dict(stage_args or {})
    data = _QAData(model, data_file, dev_file, max_length, doc_stride, max_train_examples, max_eval_examples)
    start = str(model)
    if finetune:
        run_dir = output_dir / "finetune"
        if not (run_dir / "final" / DONE).is_file():
            data.stage(load_qa_model(start, ltp), "finetune", run_dir, stage_args["finetune"])
        start = str(run_dir / "final")

    def fresh(lambda_=None):
        cfg = ltp if lambda_ is None else ltp.replace(lambda_=lambda_)
        m = load_qa_model(start, cfg)
        set_thresholds(m, init_thresholds(get_thresholds(m).numel(), cfg.final_threshold))
        return m

    done = {(p["method"], p.get("knob")) for p in _load_points(output_dir)}
    if ("unpruned", None) not in done:
        m = set_mode(fresh(), "off")
        _save_point(output_dir, _point("unpruned", None, data.evaluate(m, output_dir / "unpruned"),
                                       output_dir / "unpruned"))
    for lam in lambdas:
        if ("ltp", lam) in done:
            log.warning("qa experiment: lambda %g already in %s, reusing it", lam, POINTS)
            continue
        run_dir = output_dir / "ltp" / f"{lam:g}"
        m = fresh(lam)
        m = data.stage(m, "soft", run_dir / "soft", stage_args["soft"])
        m = data.stage(m, "hard", run_dir / "hard", stage_args["hard"])
        point = _point("ltp", lam, data.evaluate(m, run_dir), run_dir)
        _save_point(output_dir, point)
        log.warning("qa experiment: lambda %g: F1 %.4f at %.3f relative FLOPs", lam, point["f1"],
                    point["relative_flops"])
    plot_qa(output_dir)
    return [p for p in _load_points(output_dir) if p["method"] == "unpruned" or p.get("knob") in lambdas]


def plot_qa(output_dir, path=None) -> Path:
    """``qa_curve.png``: F1 vs relative FLOPs (left), HasAns (black) / NoAns (red) F1 (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    points = _load_points(output_dir)
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points to plot")
    ltp = sorted((p for p in points if p["method"] == "ltp"), key=lambda p: p["relative_flops"])
    ref = next((p for p in points if p["method"] == "unpruned"), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [p["relative_flops"] for p in ltp]
    left.plot(x, [p["f1"] for p in ltp], "o-", color="tab:blue", label="LTP")
    for ax, keys in ((left, (("f1", "gray", "unpruned"),)),
                     (right, (("HasAns_f1", "black", "HasAns"), ("NoAns_f1", "red", "NoAns")))):
        for key, color, label in keys:
            if ax is right:
                ax.plot(x, [p.get(key, math.nan) for p in ltp], "o-", color=color, label=f"LTP {label}")
            if ref is not None and ref.get(key) is not None:
                ax.axhline(ref[key], color=color, linestyle="--", linewidth=0.9, label=f"unpruned {label}")
        ax.set_xlabel("relative FLOPs (encoder layers)")
        ax.set_ylabel("dev F1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title("SQuAD 2.0: F1 vs FLOPs")
    right.set_title("answerable (HasAns) vs unanswerable (NoAns)")
    fig.tight_layout()
    path = Path(path) if path is not None else output_dir / "qa_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def add_qa_data_options(p) -> None:
    g = p.add_argument_group("SQuAD 2.0 data (default: rajpurkar/squad_v2 from the hub)")
    g.add_argument("--data-file", help="training questions, SQuAD v2 JSON")
    g.add_argument("--dev-file", help="dev questions, SQuAD v2 JSON")
    g.add_argument("--max-train-examples", type=int)
    g.add_argument("--max-eval-examples", type=int)
    g.add_argument("--max-length", type=int, default=384, help="tokens per feature (question + context window)")
    g.add_argument("--doc-stride", type=int, default=128, help="tokens shared by consecutive windows")


def _print_result(name: str, r: dict) -> None:
    print(f"{name:>9}: F1 {r['f1']:.4f}  EM {r['exact']:.4f}  HasAns F1 {r.get('HasAns_f1', float('nan')):.4f}  "
          f"NoAns F1 {r.get('NoAns_f1', float('nan')):.4f}  relative FLOPs {r['relative_flops']:.3f}")


def cmd_qa_train(a) -> int:
    from .training import set_threads

    set_threads(a.threads)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    results = train_qa(a.model, a.output_dir, data_file=a.data_file, dev_file=a.dev_file, stages=stages,
                       ltp=ltp_from_args(a), stage_args=stage_args_from_args(a, QA_STAGES), max_length=a.max_length,
                       doc_stride=a.doc_stride, max_train_examples=a.max_train_examples,
                       max_eval_examples=a.max_eval_examples, resume=a.resume)
    for stage, r in results.items():
        _print_result(stage, r)
    return 0


def cmd_qa_eval(a) -> int:
    from .patch import set_mode
    from .training import set_threads

    set_threads(a.threads)
    model = load_qa_model(a.model)
    if a.mode:
        set_mode(model, a.mode)
    data = _QAData(a.model, None, a.dev_file, a.max_length, a.doc_stride, None, a.max_eval_examples,
                   need_train=False)
    result = data.evaluate(model, a.output_dir, batch_size=a.batch_size, null_threshold=a.null_threshold)
    print(json.dumps(_summary(result), indent=1))
    print(f"wrote {Path(a.output_dir) / 'metrics.json'} and predictions.json")
    return 0


def register(subparsers) -> None:
    """Add ``ltprune qa train`` and ``ltprune qa eval`` to the CLI's subparsers."""
    p = subparsers.add_parser("qa", help="question answering (SQuAD 2.0) with LTP: train / eval",
                              description="Extractive QA on SQuAD 2.0 (hub) or local SQuAD-v2 JSON files. "
                                          "No real QA data ships offline.")
    sub = p.add_subparsers(dest="qa_command", required=True)
    t = sub.add_parser("train", help="finetune / soft / hard stages on SQuAD 2.0",
                       description="Train a ...ForQuestionAnswering model with the LTP stages; each stage is "
                                   "evaluated on dev (exact, F1, HasAns, NoAns, FLOPs).")
    t.add_argument("--model", required=True, help="QA checkpoint (or a base one with --stages finetune,soft,hard)")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--stages", default="soft,hard")
    t.add_argument("--resume", action="store_true")
    add_qa_data_options(t)
    add_ltp_options(t)
    add_stage_options(t, QA_STAGES, batch_size=16)
    t.set_defaults(func=cmd_qa_train)
    e = sub.add_parser("eval", help="SQuAD v2 metrics + FLOPs of a QA checkpoint",
                       description="Writes metrics.json, predictions.json ({id: answer}) and examples.jsonl.")
    e.add_argument("--model", required=True)
    e.add_argument("--output-dir", required=True)
    e.add_argument("--mode", choices=["off", "hard"])
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--null-threshold", type=float, default=0.0, help="predict no answer when null - best > this")
    e.add_argument("--threads", type=int)
    add_qa_data_options(e)
    e.set_defaults(func=cmd_qa_eval)


def cmd_experiment_qa(a) -> int:
    from .training import set_threads

    set_threads(a.threads)
    output_dir = Path(a.output_dir)
    if not a.plot_only:
        if not a.model:
            raise ConfigError("ltprune experiment qa needs --model (or --plot-only)")
        run_qa_experiment(a.model, output_dir, parse_floats(a.lambdas, "--lambdas"), finetune=a.finetune,
                          data_file=a.data_file, dev_file=a.dev_file, ltp=ltp_from_args(a),
                          stage_args=stage_args_from_args(a, QA_STAGES), max_length=a.max_length,
                          doc_stride=a.doc_stride, max_train_examples=a.max_train_examples,
                          max_eval_examples=a.max_eval_examples)
    points = sorted(_load_points(output_dir), key=lambda p: (p["method"] != "unpruned", -p["relative_flops"]))
    if not points:
        raise LTPError(f"{output_dir / POINTS}: no points yet; run the experiment first")
    for p in points:
        _print_result("unpruned" if p["knob"] is None else f"lam {p['knob']:g}", p)
    print(f"wrote {plot_qa(output_dir)}")
    return 0


def register_experiment(subparsers) -> None:
    """Add ``qa`` (paper Fig. 5) to the subparsers of ``ltprune experiment``."""
    p = subparsers.add_parser(
        "qa", help="Fig. 5: SQuAD 2.0 F1 (overall, HasAns, NoAns) vs relative FLOPs over lambda",
        description="One LTP model per lambda (soft + hard stages) plus the unpruned model; points.json "
                    "(resumable: rerun to continue) and qa_curve.png. No real QA data ships offline: "
                    "without --data-file/--dev-file the data come from the hub (rajpurkar/squad_v2).")
    p.add_argument("--model", help="a QA checkpoint fine-tuned on SQuAD 2.0 (or a base one with --finetune)")
    p.add_argument("--finetune", action="store_true", help="fine-tune --model first (once, OUTPUT_DIR/finetune)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lambdas", default="0.01,0.05,0.1,0.2", help="comma list of lambda values")
    p.add_argument("--plot-only", action="store_true", help="only redraw qa_curve.png from points.json")
    add_qa_data_options(p)
    add_ltp_options(p, with_lambda=False)
    add_stage_options(p, QA_STAGES, batch_size=16)
    p.set_defaults(func=cmd_experiment_qa)
