"""Benchmarks (METHOD §6, paper Fig. 6 and A.1): is pruning as fast as its FLOPs say?

1. throughput vs batch size: stock ``sdpa`` model (same weights, length-sorted batches: the
   fastest honest baseline) vs LTP ``padded`` vs LTP ``packed``, with the FLOPs reduction of the
   very same batches and realised / theoretical = speed-up / FLOPs reduction;
2. decision cost: top-k vs threshold on (32, n) scores, alone and with the compaction after;
3. overhead at zero pruning, and the cost of the attention probabilities the scores need.

Every comparison interleaves its variants and reports the median of repeats (``timing``); the
report of a run (``bench.json``, ``bench.png``, the markdown tables) is ``bench_report``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import transformers

from . import attention
from .batching import as_rows, length_sorted_tensors
from .bench_report import environment, markdown, plot, save  # noqa: F401 (markdown, plot: re-exported)
from .checkpoint import from_pretrained
from .config import LTPConfig
from .data import load_task, tokenize_task
from .engine import STATIC_RERUNS
from .errors import ConfigError
from .evaluation import flops_reduction
from .fastpath import GraphRunner, plan_capacity
from .int8 import int8_throughput
from .loading import load_tokenizer
from .patch import configure, get_config, get_thresholds, patch, set_mode, set_thresholds
from .resources import offline_model_dir
from .timing import time_variants, time_variants_per_item


def random_images(count: int, image_size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """A fixed-seed set of random pixel inputs (images have no dev set offline; speed needs none)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, channels, image_size, image_size, generator=gen)


def _image_batches(pixels: torch.Tensor, batch_size: int) -> list[dict]:
    """Images in order (every image has the same number of tokens: nothing to sort or pad)."""
    return [{"pixel_values": pixels[i:i + batch_size]} for i in range(0, len(pixels), batch_size)]


def to_device(batches: list[dict], device=None) -> list[dict]:
    """Batches moved to ``device`` once, before timing (the timings leave host-device copies out)."""
    if device is None:
        return batches
    return [{k: v.to(device) for k, v in batch.items()} for batch in batches]


def bench_batches(data, pad_id, batch_size: int, limit: int | None = None, device=None) -> tuple[list[dict], int]:
    """(batches, count) of at most ``limit`` inputs: a tokenized split (length-sorted, padded) or
    a (N, C, H, W) tensor of images."""
    if torch.is_tensor(data):
        data = data[:limit] if limit else data
        return to_device(_image_batches(data, batch_size), device), len(data)
    rows = as_rows(data)
    rows = rows[:limit] if limit else rows
    return to_device(length_sorted_tensors(rows, pad_id, batch_size), device), len(rows)


def timed_pass(model, batches):
    """A callable running ``model`` over all ``batches`` (what the timings measure)."""
    def run():
        with torch.no_grad():
            for batch in batches:
                model(**batch)
    return run


def calibrate_thresholds(model, batches, target: float, iters: int = 18) -> float:
    """Scale a linear threshold ramp until relative FLOPs on ``batches`` is about ``target``.

    For benchmarking a model that was not trained with LTP (random init, or the offline model):
    the thresholds then set a realistic, input-dependent amount of pruning.
    """
    layers = get_thresholds(model).numel()
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        set_thresholds(model, torch.linspace(0, mid, layers))
        if 1.0 / flops_reduction(model, batches) > target:
            lo = mid
        else:
            hi = mid
    set_thresholds(model, torch.linspace(0, hi, layers))
    return hi


def _one(model):
    """A callable running ``model`` (or a GraphRunner) on one batch, without autograd."""
    def run(batch):
        with torch.no_grad():
            model(**batch)
    return run


def throughput_vs_batch(stock, pruned, dataset, pad_id, batch_sizes=(1, 8, 32, 64), repeats=5,
                        max_examples_batch1: int = 128, device=None, graphs: bool = False,
                        plan_batches=None, warmup_items: int | None = None) -> list[dict]:
    """Fig. 6: sequences/s of the stock model and both LTP layouts, per batch size.

    ``dataset``: a tokenized split or a (N, C, H, W) tensor of images (``pad_id`` unused then).
    With ``graphs`` (CUDA, text), the stock model and the packed LTP model also run through the
    same CUDA-graph runner, and the graphed LTP model is compared with the graphed stock model,
    so that no gain is credited to the graphs alone. Where the packed model uses the static step
    (CUDA), its capacities are planned on ``plan_batches`` re-batched to each batch size.
    """
    padded = copy.deepcopy(pruned)
    configure(padded, get_config(pruned), layout="padded", mode="hard")
    packed = pruned
    configure(packed, get_config(pruned), layout="packed", mode="hard")
    static = device is not None and torch.device(device).type == "cuda" and get_config(packed).step != "exact"
    rows = []
    for bs in batch_sizes:
        batches, n = bench_batches(dataset, pad_id, bs, max_examples_batch1 if bs == 1 else None, device)
        if static:
            plan = bench_batches(plan_batches, pad_id, bs, None, device)[0] if plan_batches is not None else batches
            plan_capacity(packed, plan)
        reduction = flops_reduction(packed, batches)
        variants = {"unpruned": _one(stock), "padded": _one(padded), "packed": _one(packed)}
        if graphs:
            variants["unpruned+graphs"] = _one(GraphRunner(stock))
            variants["packed+graphs"] = _one(GraphRunner(packed))
        reruns = STATIC_RERUNS[0]
        if device is not None and torch.device(device).type == "cuda":  # whole passes: launches overlap
            t = time_variants({k: (lambda f=f: [f(b) for b in batches]) for k, f in variants.items()}, repeats=repeats)
        else:  # the CPU's timings drift: interleave the variants batch by batch
            t = time_variants_per_item(variants, batches, repeats=repeats, warmup_items=warmup_items)
        row = {"batch_size": bs, "num_sequences": n, "flops_reduction": reduction,
               "static_reruns": STATIC_RERUNS[0] - reruns if static else None}
        for name in variants:
            row[name] = {"sequences_per_s": n / t[name]["median"], "median_s": t[name]["median"],
                         "min_s": t[name]["min"], "max_s": t[name]["max"]}
            base = "unpruned+graphs" if name.endswith("+graphs") else "unpruned"
            if not name.startswith("unpruned"):
                speedup = t[base]["median"] / t[name]["median"]
                row[name]["speedup"] = speedup
                row[name]["realised_over_theoretical"] = speedup / reduction
        rows.append(row)
    return rows


def decision_cost(batch=32, lengths=(128, 256, 512, 1024), keep=(0.1, 0.2, 0.3, 0.4, 0.5), hidden=768,
                  repeats=7, inner=20) -> list[dict]:
    """Fig. A.1: top-k vs threshold on (batch, n) scores, alone and with the compaction after.

    Compaction = the gather of the kept rows of the (batch * n, hidden) states that follows
    either decision (threshold: nonzero + index_select; top-k: index_select of its indices).
    """
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in lengths:
        scores = torch.rand(batch, n, generator=gen).softmax(-1)
        states = torch.randn(batch * n, hidden, generator=gen)
        offsets = (torch.arange(batch) * n)[:, None]
        for ratio in keep:
            k = max(1, int(round(ratio * n)))
            theta = scores.kthvalue(n - k + 1, dim=-1, keepdim=True).values  # keeps about k per row

            def threshold():
                for _ in range(inner):
                    scores >= theta

            def topk():
                for _ in range(inner):
                    torch.topk(scores, k, dim=-1)

            def threshold_gather():
                for _ in range(inner):
                    idx = (scores >= theta).flatten().nonzero().squeeze(1)
                    states.index_select(0, idx)

            def topk_gather():
                for _ in range(inner):
                    idx = torch.topk(scores, k, dim=-1).indices.sort(-1).values
                    states.index_select(0, (idx + offsets).flatten())

            t = time_variants({"threshold": threshold, "topk": topk, "threshold+gather": threshold_gather,
                               "topk+gather": topk_gather}, repeats=repeats)
            us = {name: v["median"] / inner * 1e6 for name, v in t.items()}
            rows.append({"n": n, "keep": ratio, "us": us,
                         "topk_over_threshold": us["topk"] / us["threshold"],
                         "with_gather_ratio": us["topk+gather"] / us["threshold+gather"]})
    return rows


def overhead_at_zero_pruning(stock, pruned, dataset, pad_id, batch_sizes=(1, 32), repeats=5,
                             max_examples_batch1: int = 128, device=None) -> list[dict]:
    """The patched model removing nothing vs the stock sdpa model (what patching itself costs)."""
    zero = copy.deepcopy(pruned)
    set_thresholds(zero, torch.zeros_like(get_thresholds(zero)))
    variants = {}
    for layout in ("packed", "padded"):
        variants[layout] = copy.deepcopy(zero)
        configure(variants[layout], get_config(zero), layout=layout, mode="hard")
        # thresholds of 1e-30: every layer computes its attention probabilities and scores (the
        # cost a real LTP model pays) but nothing scores below them, so nothing is removed
        variants[f"{layout}-scored"] = copy.deepcopy(variants[layout])
        set_thresholds(variants[f"{layout}-scored"], torch.full_like(get_thresholds(zero), 1e-30))
    off = copy.deepcopy(zero)
    set_mode(off, "off")
    rows = []
    for bs in batch_sizes:
        batches, _ = bench_batches(dataset, pad_id, bs, max_examples_batch1 if bs == 1 else None, device)
        t = time_variants({"stock": timed_pass(stock, batches), "off": timed_pass(off, batches),
                           **{f"hard-{k}": timed_pass(v, batches) for k, v in variants.items()}}, repeats=repeats)
        rows.append({"batch_size": bs, **{f"{name}_over_stock": t[name]["median"] / t["stock"]["median"]
                                          for name in t if name != "stock"}})
    return rows


def probability_cost(hidden=768, heads=12, batch=32, lengths=(64, 128, 256, 512), repeats=7) -> list[dict]:
    """Extra cost of the scores over fused sdpa, as a fraction of one full encoder layer's time at
    that length: explicit probabilities (written out, summed, multiplied by V) and the two-call
    identity (two fused calls, probabilities never written out), and which one the engine picks
    (``score_kernel="auto"``)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    dh = hidden // heads
    ffn = torch.nn.Sequential(torch.nn.Linear(hidden, 4 * hidden), torch.nn.GELU(), torch.nn.Linear(4 * hidden, hidden))
    proj = torch.nn.Linear(hidden, 4 * hidden)  # Q, K, V and the output projection: 4 D x D
    for n in lengths:
        x = torch.randn(batch, n, hidden, generator=gen)
        q, k, v = (torch.randn(batch, heads, n, dh, generator=gen) for _ in range(3))

        def sdpa():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v)

        def explicit():
            with torch.no_grad():
                attention.explicit(q, k, v)

        def two_call():
            with torch.no_grad():
                attention.two_call(q, k, v)

        def dense():
            with torch.no_grad():
                proj(x)
                ffn(x)

        t = time_variants({"sdpa": sdpa, "explicit": explicit, "two_call": two_call, "dense": dense},
                          repeats=repeats)
        layer = t["dense"]["median"] + t["sdpa"]["median"]
        extra = {name: (t[name]["median"] - t["sdpa"]["median"]) / layer for name in ("explicit", "two_call")}
        chosen = attention.choose_kernel("auto", n, torch.device("cpu"))
        rows.append({"n": n, "extra_fraction_of_layer": extra["explicit"],
                     "two_call_extra_fraction_of_layer": extra["two_call"],
                     "auto_kernel": chosen,
                     "auto_extra_fraction_of_layer": extra["two_call" if chosen == "lse" else "explicit"],
                     "sdpa_ms": t["sdpa"]["median"] * 1e3, "explicit_ms": t["explicit"]["median"] * 1e3,
                     "two_call_ms": t["two_call"]["median"] * 1e3, "layer_ms": layer * 1e3})
    return rows


# Random-init image configs. initializer_range 0.2 (not 0.02) makes random attention peaked
# enough for thresholds to select tokens, as in "bert-base"; 224 / 16 -> 196 patches + [CLS].
IMAGE_CONFIGS = {
    "vit-base": dict(image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072, num_labels=1000, initializer_range=0.2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_IMAGES = 128
CALIBRATION_IMAGES = 32  # calibration runs ~18 passes: a subset keeps base-size ViT affordable on CPU


def _image_data(config_name: str, limit: int | None = None) -> torch.Tensor:
    cfg = IMAGE_CONFIGS[config_name]
    count = min(NUM_IMAGES, limit) if limit else NUM_IMAGES
    return random_images(count, cfg["image_size"], cfg.get("num_channels", 3), seed=0)


def _bench_models(model_path, config_name: str, target: float, batches_for_calibration, device=None):
    """(stock, pruned) with the same weights. A given ltprune checkpoint keeps its learned
    thresholds; otherwise thresholds are calibrated to ``target`` relative FLOPs."""
    if model_path is not None:
        pruned = from_pretrained(model_path, mode="hard")
        stock = transformers.AutoModelForSequenceClassification.from_pretrained(
            model_path, attn_implementation="sdpa").eval()
        return stock.to(device), pruned.eval().to(device), None
    if config_name == "bert-base":
        torch.manual_seed(0)
        cfg = transformers.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                      intermediate_size=3072, num_labels=2, initializer_range=0.2)
        cfg._attn_implementation = "sdpa"
        stock = transformers.BertForSequenceClassification(cfg).eval()
    elif config_name in IMAGE_CONFIGS:
        torch.manual_seed(0)
        cfg = transformers.ViTConfig(**IMAGE_CONFIGS[config_name])
        cfg._attn_implementation = "sdpa"
        stock = transformers.ViTForImageClassification(cfg).eval()
    else:
        stock = transformers.AutoModelForSequenceClassification.from_pretrained(
            offline_model_dir(), num_labels=2, attn_implementation="sdpa").eval()
    stock = stock.to(device)
    pruned = patch(copy.deepcopy(stock), LTPConfig(mode="hard"))
    ramp = calibrate_thresholds(pruned, batches_for_calibration, target)
    return stock, pruned, ramp


def run_bench(output_dir="runs/bench", model_path=None, task="rotten_tomatoes", configs=("minilm",),
              batch_sizes=(1, 8, 32, 64), target=0.5, repeats=5, max_examples=None, threads=2,
              parts=("throughput", "decision", "overhead", "probs"), device=None, dtypes=("fp32",),
              graphs: bool = False) -> dict:
    """``device``: where the throughput and overhead parts run (default CPU); the decision and
    probability micro-benchmarks and int8 (CPU kernels) stay on the CPU. ``dtypes``: fp32, bf16,
    fp16 (thresholds calibrated in fp32, then the models converted). ``graphs``: also time stock
    and LTP through the same CUDA-graph runner (CUDA only)."""
    torch.set_num_threads(threads)
    names = ["checkpoint"] if model_path else list(configs)
    unknown = [n for n in names if n not in ("checkpoint", "minilm", "bert-base", *IMAGE_CONFIGS)]
    if unknown:
        raise ConfigError(f"unknown bench config {unknown[0]!r}; choose from minilm, bert-base, "
                          + ", ".join(IMAGE_CONFIGS))
    if device is not None:
        try:
            device = torch.device(device)
        except RuntimeError as err:
            raise ConfigError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine")
        if device.type != "cpu" and "int8" in parts:
            raise ConfigError("--parts int8 runs on the CPU only: leave --device out")
    unknown_dtypes = [d for d in dtypes if d not in DTYPES]
    if unknown_dtypes:
        raise ConfigError(f"unknown dtype {unknown_dtypes[0]!r}; choose from {', '.join(DTYPES)}")
    if graphs and (device is None or device.type != "cuda"):
        raise ConfigError("--graphs needs --device cuda (CUDA graphs)")
    results = {"environment": environment(device), "throughput": {}, "models": {}}
    dev = tokenizer = calibration = None
    if model_path or "int8" in parts or any(n not in IMAGE_CONFIGS for n in names):
        tokenizer = load_tokenizer(str(model_path or offline_model_dir()))
        dsd, info = load_task(task, max_eval_examples=max_examples)
        dev = tokenize_task({"validation": dsd["validation"]}, tokenizer, info)["validation"]
        results.update({"task": task, "num_sequences": len(dev),
                        "mean_length": sum(len(x) for x in dev["input_ids"]) / len(dev)})
        calibration = to_device(length_sorted_tensors(dev.select(range(min(len(dev), 256))),
                                                      tokenizer.pad_token_id, 32), device)
    for name in names:
        base_size = name == "bert-base" or name in IMAGE_CONFIGS
        if name in IMAGE_CONFIGS:
            data, pad_id = _image_data(name, max_examples), None
            stock, pruned, ramp = _bench_models(None, name, target,
                                                to_device(_image_batches(data[:CALIBRATION_IMAGES], 32), device),
                                                device)
            cfg = IMAGE_CONFIGS[name]
            tokens = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
            inputs = f"{len(data)} random {cfg['image_size']}x{cfg['image_size']} images, {tokens} tokens each"
        else:
            data, pad_id = (dev if name != "bert-base" else dev.select(range(min(len(dev), 128)))), tokenizer.pad_token_id
            stock, pruned, ramp = _bench_models(model_path, name, target, calibration, device)
            inputs = f"{task} dev, {len(data)} sequences"
        results["models"][name] = {"layers": stock.config.num_hidden_layers, "hidden": stock.config.hidden_size,
                                   "inputs": inputs, "calibrated_final_threshold": ramp,
                                   "thresholds": get_thresholds(pruned).tolist()}
        if "throughput" in parts:
            for dtype in dtypes:
                key = name if dtype == "fp32" else f"{name}-{dtype}"
                print(f"[bench] throughput vs batch size: {key}", flush=True)
                results["models"][key] = results["models"][name]
                results["throughput"][key] = throughput_vs_batch(
                    stock.to(DTYPES[dtype]), pruned.to(DTYPES[dtype]), data, pad_id, batch_sizes,
                    repeats=repeats if not base_size else max(3, repeats // 2), device=device,
                    graphs=graphs and name not in IMAGE_CONFIGS,
                    plan_batches=dev.select(range(min(len(dev), 256))) if dev is not None and name not in IMAGE_CONFIGS
                    else None)
            stock, pruned = stock.float(), pruned.float()
        if "overhead" in parts and not base_size:
            print(f"[bench] overhead at zero pruning: {name}", flush=True)
            # six variants: fewer repeats keep the default run within ten minutes
            results["overhead"] = overhead_at_zero_pruning(stock, pruned, data, pad_id, repeats=max(3, repeats - 2),
                                                           device=device)
    if "int8" in parts:
        if model_path is None:
            raise ConfigError("--parts int8 needs --model (a trained, possibly quantization-aware, checkpoint)")
        print("[bench] int8 + LTP vs fp32", flush=True)
        results["int8"] = int8_throughput(pruned, dev, tokenizer.pad_token_id,
                                          stock=stock, batch_sizes=tuple(b for b in batch_sizes if b <= 32),
                                          repeats=repeats)
    if "decision" in parts:
        print("[bench] decision cost", flush=True)
        results["decision_cost"] = decision_cost()
    if "probs" in parts:
        print("[bench] attention-probability cost", flush=True)
        results["probability_cost"] = probability_cost()
    save(results, output_dir)
    return results
