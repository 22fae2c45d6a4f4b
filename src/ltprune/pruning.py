"""The method itself (METHOD.md §1-3, §7): scores, keep decisions, soft masks, thresholds, L_reg.

Pure tensor functions. Tokens are handled "flat": one entry per token of the batch, with
``seq_id`` saying which sequence it belongs to, so the same code serves the padded layout
(flattened, dead slots marked not alive) and the packed layout.
"""

from __future__ import annotations

import math

import torch

from .config import LTPConfig


def init_thresholds(num_layers: int, final_threshold: float, shape=None) -> torch.Tensor:
    """Linearly rising thresholds: 0 at the first layer, ``final_threshold`` at the last.

    The first layer starts at 0 and learns like the others (METHOD §3); the last layer gets the
    final threshold itself, as its name and the original code (theta_l = theta_final * l / L) say.
    ``shape`` (``LTPConfig.threshold_shape``: one weight >= 0 per layer) replaces the ramp:
    theta_l = final_threshold * shape_l / max(shape).
    """
    if shape is not None:
        if len(shape) != num_layers:
            raise ValueError(f"threshold shape has {len(shape)} entries; the model has {num_layers} layers")
        values = torch.tensor([float(v) for v in shape])
        return values * (float(final_threshold) / float(values.max()))
    if num_layers == 1:
        return torch.tensor([float(final_threshold)])
    return torch.linspace(0.0, float(final_threshold), num_layers)


def manual_thresholds(num_layers: int, final_threshold: float) -> torch.Tensor:
    """The manual baseline's schedule theta_l = theta_L * l / L (METHOD §7)."""
    return torch.arange(1, num_layers + 1, dtype=torch.float32) * (final_threshold / num_layers)


def score_normalizer(config: LTPConfig, num_heads: int, n_alive: torch.Tensor) -> torch.Tensor | float:
    """What the summed attention is divided by (Eq. 7), per sequence (or one number).

    ``reference``: H * N_ref, so the mean score of a sequence is 1 / N_ref at any length (what the
    original code gets by padding to 128). ``length``: H * n_l, the paper taken literally.
    """
    if config.score_normalization == "length":
        return n_alive.to(torch.float32) * num_heads
    return float(num_heads * config.n_ref)


def normalize_scores(raw: torch.Tensor, config: LTPConfig, num_heads: int, n_alive: torch.Tensor,
                     seq_id: torch.Tensor) -> torch.Tensor:
    """Flat (T,) summed attention -> scores s_i (Eq. 7)."""
    norm = score_normalizer(config, num_heads, n_alive)
    return raw / (norm if isinstance(norm, float) else norm.index_select(0, seq_id))


def importance_scores(probs: torch.Tensor, query_alive: torch.Tensor | None = None) -> torch.Tensor:
    """Attention received per key, summed over heads and alive queries (Eq. 7, unnormalised).

    ``probs`` is (..., H, n_query, n_key), taken before dropout; ``query_alive`` is (..., n_query).
    Returns (..., n_key).
    """
    probs = probs.float()
    if query_alive is None:
        return probs.sum(dim=(-3, -2))
    return torch.einsum("...hqk,...q->...k", probs, query_alive.to(probs.dtype))


def soft_mask(scores: torch.Tensor, threshold: torch.Tensor, temperature: float) -> torch.Tensor:
    """m = sigmoid((s - theta) / T) (Eq. 9): differentiable in both the scores and theta."""
    return torch.sigmoid((scores - threshold) / temperature)


def regularizer(masks: list[torch.Tensor], alive: torch.Tensor, n_ref: int) -> torch.Tensor:
    """L_reg = sum_l sum_b sum_{i real} m_{b,i}^(l) / (B * N_ref)  (METHOD §3).

    Computed over real tokens only (no padding), so the original code's lambda range carries over.
    """
    batch = alive.shape[0]
    total = sum((m * alive).sum() for m in masks)
    return total / (batch * n_ref)


def expected_tokens(survivals: list[torch.Tensor], alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) expected tokens entering / kept by each layer, from ``survival(masks)``: the
    probability that each real token is alive after each layer. Layer 0 receives the whole input;
    layer l receives what layer l - 1 kept.
    """
    alive = alive.to(survivals[0].dtype)
    kept = torch.stack([(p * alive).sum(-1) for p in survivals], dim=1)
    entering = torch.cat([alive.sum(-1, keepdim=True), kept[:, :-1]], dim=1)
    return entering, kept


def survival(masks: list[torch.Tensor], cumulative: bool) -> list[torch.Tensor]:
    """Per layer, the probability that a token is still alive after it: the running product of
    the soft masks (``cumulative`` masks already are one)."""
    if cumulative:
        return list(masks)
    out, running = [], None
    for m in masks:
        running = m if running is None else running * m
        out.append(running)
    return out


def add_pruning_terms(loss: torch.Tensor, records, config: LTPConfig) -> torch.Tensor:
    """``loss`` + lambda * L_reg + the FLOPs-target penalty, each where it applies (a soft pass
    records them; lambda or lambda_flops 0 turns a term off). The one place the LTP objective is
    put together, so the classification loss (patch) and the label-free one
    (embedding.training) cannot drift apart."""
    if records.reg_loss is not None and config.lambda_ > 0:
        loss = loss + config.lambda_ * records.reg_loss
    if (config.target_flops is not None and records.expected_relative_flops is not None
            and config.lambda_flops > 0):
        loss = loss + flops_penalty(records.expected_relative_flops, config.target_flops, config.lambda_flops)
    return loss


def flops_penalty(expected_relative_flops: torch.Tensor, target: float, weight: float) -> torch.Tensor:
    """weight * (expected relative FLOPs - target)^2: two-sided, so the soft stage is pulled to
    the budget from either side (DiffRate's FLOPs loss; LTMP's budget loss), not only pushed
    below it; zero exactly at the target."""
    return weight * (expected_relative_flops.float() - float(target)) ** 2


def _rank_in_sequence(scores: torch.Tensor, seq_id: torch.Tensor, num_seqs: int) -> torch.Tensor:
    """Rank (0 = highest score) of every token within its own sequence."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(seq_id[order], stable=True)]
    counts = torch.zeros(num_seqs, dtype=torch.long, device=seq_id.device).index_add_(
        0, seq_id, torch.ones_like(seq_id))
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[seq_id[order]]
    return rank


def keep_count(config: LTPConfig, layer: int, n_input: torch.Tensor, n_alive: torch.Tensor) -> torch.Tensor:
    """Tokens to keep per sequence for the top-k (SpAtten) and length (LAT) baselines."""
    if config.method == "topk":
        ratio = float(config.keep_ratios[layer])
        k = torch.round(n_input.to(torch.float32) * ratio).to(torch.long)
    else:
        k = torch.full_like(n_alive, int(config.keep_lengths[layer]))
    return torch.minimum(k.clamp_min(1), n_alive)


def layer_prunes(config: LTPConfig, layer: int, threshold: float | None) -> bool:
    """Whether layer ``layer`` can remove anything (if not, it needs no attention probabilities)."""
    if config.method == "threshold":
        return threshold is not None and threshold > 0
    if config.method == "topk":
        return float(config.keep_ratios[layer]) < 1.0
    return True


def keep_decision(
    scores: torch.Tensor,
    alive: torch.Tensor,
    first: torch.Tensor,
    seq_id: torch.Tensor,
    num_seqs: int,
    *,
    config: LTPConfig,
    layer: int,
    threshold: torch.Tensor | None,
    n_input: torch.Tensor,
    n_alive: torch.Tensor,
) -> torch.Tensor:
    """Which tokens survive layer ``layer`` (Eq. 8, or the baselines' rules). Flat (T,) bool.

    LTP keeps ``s_i >= theta_l``: one comparison, no sort. The first token is kept when
    ``keep_first_token`` (the classifier reads it), and every sequence keeps at least one token.
    """
    if config.method == "threshold":
        keep = (scores >= threshold) & alive
    else:
        ranked = scores.masked_fill(~alive, -math.inf)
        if config.keep_first_token:
            ranked = ranked.masked_fill(first, math.inf)
        rank = _rank_in_sequence(ranked, seq_id, num_seqs)
        keep = (rank < keep_count(config, layer, n_input, n_alive)[seq_id]) & alive
    if config.keep_first_token:
        return keep | first  # every sequence has a first token: at least one survives
    return _at_least_one(keep, scores, alive, seq_id, num_seqs)


def _at_least_one(keep, scores, alive, seq_id, num_seqs):
    """Rescue each sequence's best token where nothing survived (no host read: always computed)."""
    kept = torch.zeros(num_seqs, dtype=torch.long, device=keep.device).index_add_(0, seq_id, keep.long())
    masked = scores.masked_fill(~alive, -math.inf)
    best = torch.full((num_seqs,), -math.inf, device=scores.device).scatter_reduce(
        0, seq_id, masked, reduce="amax")
    rescue = alive & (kept[seq_id] == 0) & (masked == best[seq_id])
    return keep | rescue
