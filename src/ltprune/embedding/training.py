"""Label-free LTP for embedding models: the soft and hard stages, distilled from the unpruned model.

The target of every text is the unpruned model's own embedding (a frozen copy made before
training), so any unlabeled text trains. The loss per batch is::

    loss = (1 - cos(e_pruned, e_unpruned)).mean() + mse_weight * ||e_pruned - e_unpruned||^2 / D
           + token_weight * sum_kept ||h_pruned - h_unpruned||^2 / sum_kept ||h_unpruned||^2
           + lambda * L_reg                      (soft stage only, METHOD §3)
           + lambda_flops * (E[relative FLOPs] - target)^2   (soft stage, with a FLOPs target)

The token-state term compares the last-layer states of the tokens that survive (the ones mean
pooling averages) with the unpruned model's states at the same positions, relative to the
latter's size so its weight is scale-free.

Cosine, because sentence-transformers models are compared by cosine (and MiniLM's embeddings
are L2-normalised, where MSE is 2 - 2 cos anyway). The stages are ltprune's own
(``training.run_stage`` on transformers' Trainer: resumable checkpoints, DDP, the thresholds'
optimizer group); only the loss and the dev score differ: the dev "metric" is the mean cosine
to the unpruned embeddings on held-out texts, so the hard stage keeps its best checkpoint by it.

A FLOPs target (``LTPConfig.target_flops``) works as for classification (issue 19): the soft
stage's penalty above, then ``run_stage`` calibrates the thresholds to the target on training
texts before the hard stage and holds them there at each held-out evaluation. Without it a
hard stage for fixed thresholds drifts off its budget as the weights learn (Rotten Tomatoes,
1,600 steps: 0.48 -> 0.56 relative FLOPs, docs/RESULTS.md).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from contextlib import nullcontext
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding, TrainingArguments

from .. import runs
from ..config import LTPConfig, StageArgs
from ..errors import ConfigError, LTPError
from ..evaluation import write_metrics
from ..patch import reset_thresholds, set_mode, set_thresholds
from ..pruning import add_pruning_terms
from ..training import LTPTrainer, run_stage
from .pooling import PoolingSpec, pool, pooling_mask
from .st import load, parts, patch_sentence_transformer, pooling_spec, save

log = logging.getLogger("ltprune")


def check_weights(**weights) -> None:
    """Loss weights are numbers >= 0 (a one-line error before any run folder is touched)."""
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")


def token_state_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Relative squared error of (B, n, D) last-layer states over the (B, n) ``mask`` positions
    (the survivors): sum ||s - t||^2 / sum ||t||^2; the teacher gets no gradient."""
    teacher = teacher.detach().to(student.dtype)
    m = mask.to(student.dtype)[..., None]
    return ((student - teacher) ** 2 * m).sum() / ((teacher ** 2) * m).sum().clamp_min(1e-12)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, mse_weight: float = 0.0) -> tuple:
    """(loss, cosine part, mse part) between (B, D) embeddings; the teacher gets no gradient."""
    teacher = teacher.detach().to(student.dtype)
    cos = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    mse = F.mse_loss(student, teacher) if mse_weight else student.new_zeros(())
    return cos + mse_weight * mse, cos.detach(), mse.detach()


class EmbeddingDistillTrainer(LTPTrainer):
    """LTPTrainer with the label-free distillation loss and a cosine dev score."""

    def __init__(self, *args, teacher, spec: PoolingSpec, mse_weight: float = 0.0, token_weight: float = 0.0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        check_weights(mse_weight=mse_weight, token_weight=token_weight)
        self.token_weight = float(token_weight)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.spec = spec
        self.mse_weight = float(mse_weight)
        self._parts: dict[str, float] = {}
        self._parts_n = 0

    def _embed(self, model, inputs, states: bool = False):
        out = model(**{k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
        records = getattr(out, "ltp", None)
        pooled = pool(out.last_hidden_state, inputs["attention_mask"], self.spec, records)
        return (pooled, records, out.last_hidden_state) if states else (pooled, records)

    def _teacher(self, inputs, states: bool = False):
        with torch.no_grad():
            out = self.teacher(**{k: v for k, v in inputs.items()
                                  if k in ("input_ids", "attention_mask", "token_type_ids")})
        pooled = pool(out.last_hidden_state, inputs["attention_mask"], PoolingSpec(self.spec.strategy, "restored",
                                                                                 self.spec.normalize))
        return (pooled, out.last_hidden_state) if states else pooled

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student, records, hidden = self._embed(model, inputs, states=True)
        target, target_hidden = self._teacher(inputs, states=True)
        loss, cos, mse = distillation_loss(student, target, self.mse_weight)
        tokens = 0.0
        if self.token_weight:
            tokens = token_state_loss(hidden, target_hidden, pooling_mask(inputs["attention_mask"], records))
            loss = loss + self.token_weight * tokens
            tokens = tokens.detach()
        cfg = self.accelerator.unwrap_model(model)._ltp.config
        reg = records.reg_loss if records is not None else None
        if records is not None:
            loss = add_pruning_terms(loss, records, cfg)
        for key, value in (("cosine_loss", cos), ("mse", mse), ("token_loss", tokens),
                           ("reg", reg.detach() if reg is not None else 0.0)):
            self._parts[key] = self._parts.get(key, 0.0) + float(value)
        self._parts_n += 1
        return (loss, {"embedding": student}) if return_outputs else loss

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self._parts_n and "loss" in logs:
            logs.update({k: round(v / self._parts_n, 6) for k, v in self._parts.items()})
            self._parts, self._parts_n = {}, 0
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """Mean cosine to the unpruned embeddings and relative FLOPs on the held-out texts
        (``eval_metric`` is the cosine: the hard stage keeps its best checkpoint by it)."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        model = self.model
        was_training = model.training
        model.eval()
        total_cos, count, macs, base = 0.0, 0, 0.0, 0.0
        try:
            for batch in self.get_eval_dataloader(dataset):
                batch = self._prepare_inputs(batch)
                student, records = self._embed(model, batch)
                cos = F.cosine_similarity(student.float(), self._teacher(batch).float(), dim=-1)
                total_cos += float(cos.sum())
                count += cos.numel()
                if records is not None:
                    macs += float(records.macs().sum())
                    base += float(records.baseline_macs().sum())
        finally:
            model.train(was_training)
        metrics = {f"{metric_key_prefix}_metric": total_cos / max(count, 1),
                   f"{metric_key_prefix}_relative_flops": macs / base if base else 1.0}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
        return metrics


def tokenize_texts(texts: list[str], tokenizer, max_length: int):
    """A ``datasets.Dataset`` of input_ids / attention_mask (and token_type_ids) for the Trainer."""

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    ds = datasets.Dataset.from_dict({"text": list(texts)})
    return ds.map(encode, batched=True, remove_columns=["text"])


def train_embedding(model_path, output_dir, *, train_texts: list[str], eval_texts: list[str],
                    stages=("soft", "hard"), ltp: LTPConfig | None = None, stage_args: dict | None = None,
                    pooling: str | None = None, mse_weight: float = 0.0, token_weight: float = 0.0,
                    thresholds=None, resume: bool = False, overwrite: bool = False,
                    data_description: dict | None = None) -> dict:
    """Prune a sentence-transformers model without labels: ``stages`` of soft/hard in order.

    Each stage writes ``output_dir/<stage>/final``: a sentence-transformers folder (load it with
    :func:`ltprune.embedding.load`) that is also the stage's resumable checkpoint. The run folder
    follows ``ltprune.runs`` (``ltprune_run.json``, ``--resume`` continues only the same run,
    ``--overwrite`` replaces it). Returns {stage: held-out metrics}.

    ``thresholds``: the per-layer thresholds to start from (default: the linear initial schedule
    of ``ltp.final_threshold`` for a soft stage, the model's own otherwise); with ``stages=("hard",)``
    they are the fixed thresholds the weights are fine-tuned for. ``token_weight``: the
    token-state term (module docstring).
    """


    stages = tuple(stages)
    bad = [s for s in stages if s not in ("soft", "hard")]
    if not stages or bad:
        raise ConfigError(f"embedding stages are soft and hard; got {', '.join(bad) or 'none'}")
    if not train_texts or not eval_texts:
        raise LTPError("label-free training needs training texts and held-out texts")
    check_weights(mse_weight=mse_weight, token_weight=token_weight)
    stage_args = {s: (stage_args or {}).get(s) or StageArgs() for s in stages}
    ltp = ltp or LTPConfig()
    output_dir = Path(output_dir)
    record = runs.make_record(task="embedding", model=str(model_path), stages=stages, ltp=ltp,
                              stage_args=stage_args, data_kwargs=data_description or {}, max_length=None,
                              quantization=None)
    record["data_fingerprint"] = _fingerprint(train_texts, eval_texts)
    record["objective"] = {"mse_weight": float(mse_weight), "token_weight": float(token_weight),
                           "thresholds": None if thresholds is None else [float(t) for t in thresholds]}
    main = runs.is_main_process()
    with runs.RunLock(output_dir) if main else nullcontext():
        previous = runs.check_folder(output_dir, resume, overwrite)
        if resume:
            runs.check_same_run(output_dir, record)
        st = load(model_path, mode="off")  # a stock folder or a pruned one: its weights, LTP off
        transformer, hf, _, _ = parts(st)
        teacher = copy.deepcopy(hf)  # the unpruned model: the distillation target, frozen
        patch_sentence_transformer(st, ltp.replace(mode="soft" if "soft" in stages else "hard"), pooling=pooling)
        if thresholds is not None:
            set_thresholds(hf, thresholds)
        elif "soft" in stages:
            reset_thresholds(hf)
        spec = pooling_spec(st)
        tokenizer = st.tokenizer
        max_length = st.max_seq_length or 512
        train_ds, eval_ds = tokenize_texts(train_texts, tokenizer, max_length), tokenize_texts(eval_texts, tokenizer,
                                                                                                max_length)
        if main:
            if overwrite and previous:
                runs.remove_previous_run(output_dir)
            runs.write_record(output_dir, record)
        results = {}
        for stage in stages:
            summary = run_stage(hf, tokenizer, train_ds, eval_ds, None, stage, output_dir / stage, stage_args[stage],
                                resume, trainer_cls=EmbeddingDistillTrainer,
                                trainer_kwargs={"teacher": teacher, "spec": spec, "mse_weight": mse_weight,
                                                "token_weight": token_weight})
            set_mode(hf, "hard")
            final = output_dir / stage / "final"
            if main:
                save(st, final)  # the same weights, now also a sentence-transformers folder
            trainer = EmbeddingDistillTrainer(model=hf, args=_eval_args(output_dir / stage), teacher=teacher,
                                              spec=pooling_spec(st), eval_dataset=eval_ds,
                                              data_collator=_collator(tokenizer))
            metrics = trainer.evaluate()
            results[stage] = {"mean_cosine": metrics["eval_metric"], "relative_flops": metrics["eval_relative_flops"],
                              "thresholds": summary.get("thresholds"), "global_step": summary.get("global_step")}
            if main:

                write_metrics(results[stage], output_dir / stage)
                runs.update_summary(output_dir, stage, results[stage], task="embedding", model=str(model_path),
                                    stages=stages)
            log.warning("stage %s: held-out mean cosine %.4f, relative FLOPs %.3f", stage,
                        results[stage]["mean_cosine"], results[stage]["relative_flops"])
    return results


def _collator(tokenizer):

    return DataCollatorWithPadding(tokenizer)


def _eval_args(folder):

    return TrainingArguments(output_dir=str(folder), per_device_eval_batch_size=64, report_to=[],
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True)


def _fingerprint(train_texts, eval_texts) -> str:

    digest = hashlib.sha256()
    for text in (*train_texts, "\0", *eval_texts):
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]
