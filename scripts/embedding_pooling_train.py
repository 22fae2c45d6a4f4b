"""Issue 17 A/B: does the pooling the label-free hard stage is *trained* with change where it ends?

The diagnosis (docs/RESULTS.md, "alternatives") found that with one pruning step after layer 0
the unpruned states over the kept tokens give 0.954, and 0.972 when each survivor is also
weighted by the removed tokens that resemble it at layer 0 (``softsim``): a higher ceiling. But a
model trained with survivors-only pooling lost with that weighting applied afterwards (0.901 ->
0.893). This trains the same hard stage (fixed threshold after layer 0, cosine to the unpruned
embedding, AdamW with 10% warm-up) with each pooling, so the weighting is learned with, not
bolted on:

* ``drop``: LTP's removal, survivors' mean (the library's default);
* ``softsim``: LTP's removal, survivors weighted by 1 + the removed tokens' softmax over their
  layer-0 cosine to the survivors (temperature 0.05);
* ``merge``: each removed token averaged into its most similar survivor (ToMe-style), with
  proportional attention and size-weighted pooling.

Forward passes are the masked reference of ``embedding_diagnostics._layer0_run`` (same score,
same threshold as the library, N_ref 128). Held-out cosine on the first ``--eval`` IMDb
validation reviews at every ``--every`` steps, for every pooling the arm can score. Under the CPU
lock (about 10 minutes an arm of 200 steps on 2 cores):

    flock /tmp/cpu.lock env PYTHONPATH=src python scripts/embedding_pooling_train.py --arms drop,softsim,merge
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))
from embedding_diagnostics import MODEL, _layer0_run, batches, meanpool  # noqa: E402

from ltprune.embedding.texts import load_texts  # noqa: E402


def pooled(arm, x, alive, size, info):
    """{pooling name: (B, D) normalised embedding} the arm's forward supports."""
    if arm == "merge":
        return {"merge": meanpool(x, size), "merge_unweighted": meanpool(x, alive)}
    return {"drop": meanpool(x, info["keep"]), "softsim": meanpool(x, info["softsim"])}


def evaluate(model, arm, eval_batches, refs, theta):
    model.eval()
    acc, cost, full = {}, 0.0, 0.0
    with torch.no_grad():
        for b, ref in zip(eval_batches, refs):
            x, alive, size, c, f, info = _layer0_run(model, b["input_ids"], b["attention_mask"].bool(), arm_variant(arm),
                                                     theta=theta)
            cost, full = cost + float(c.sum()), full + float(f.sum())
            for name, e in pooled(arm, x, alive, size, info).items():
                acc.setdefault(name, []).append((e * ref).sum(-1))
    model.train()
    return {"relative_flops": cost / full, **{k: float(torch.cat(v).mean()) for k, v in acc.items()}}


def arm_variant(arm):
    return "merge" if arm == "merge" else "drop"


def stock():
    return transformers.AutoModel.from_pretrained(MODEL, attn_implementation="eager").eval()


def run_arm(arm, a, tok, train, eval_batches, ref_model, refs):
    """Train one arm from the stock weights; ``ref_model`` (frozen, unpruned) gives the targets."""
    torch.manual_seed(a.seed)
    model = stock()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(a.seed)).tolist()
    steps_per_epoch = len(train) // a.batch
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(a.warmup * a.steps), a.steps)
    history = [{"step": 0, **evaluate(model, arm, eval_batches, refs, a.theta)}]
    print(arm, json.dumps(history[-1]), flush=True)
    start = time.time()
    for step in range(1, a.steps + 1):
        i = (step - 1) % steps_per_epoch
        if i == 0 and step > 1:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(a.seed + step)).tolist()
        b = tok([train[j] for j in order[i * a.batch:(i + 1) * a.batch]], truncation=True, max_length=256,
                padding=True, return_tensors="pt")
        am = b["attention_mask"].bool()
        with torch.no_grad():
            target = meanpool(ref_model(**b).last_hidden_state, am)
        x, alive, size, _, _, info = _layer0_run(model, b["input_ids"], am, arm_variant(arm), theta=a.theta)
        e = pooled(arm, x, alive, size, info)[arm]
        loss = (1 - (e * target).sum(-1)).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % a.every == 0 or step == a.steps:
            history.append({"step": step, "loss": loss.item(), "seconds": time.time() - start,
                            **evaluate(model, arm, eval_batches, refs, a.theta)})
            print(arm, json.dumps(history[-1]), flush=True)
    return history


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arms", default="drop,softsim,merge")
    p.add_argument("--theta", type=float, default=0.0075)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--eval", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="results/embedding/pooling_train.json")
    a = p.parse_args()
    torch.set_num_threads(2)
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    train = load_texts("imdb", split="train", limit=a.train_size)
    eval_batches = batches(tok, load_texts("imdb", split="validation", limit=a.eval))
    ref_model = stock()
    with torch.no_grad():  # the held-out targets, the same for every arm
        refs = [meanpool(ref_model(**b).last_hidden_state, b["attention_mask"].bool()) for b in eval_batches]
    out = Path(a.output)
    result = json.loads(out.read_text()) if out.exists() else {"arms": {}}
    result["settings"] = {k: v for k, v in vars(a).items() if k not in ("arms", "output")}
    for arm in a.arms.split(","):
        if arm not in ("drop", "softsim", "merge"):
            raise SystemExit(f"unknown arm {arm!r}: drop, softsim or merge")
        result["arms"][arm] = run_arm(arm, a, tok, train, eval_batches, ref_model, refs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
