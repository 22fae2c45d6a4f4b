"""The report of a benchmark run: the environment it ran in, ``bench.json``, ``bench.png`` and the
markdown tables of docs/BENCHMARKS.md. Plain values in, files and text out: no model is loaded
here, so a saved ``bench.json`` is re-reported without rerunning anything (``ltprune bench``
measures in ``ltprune.bench``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def environment(device=None) -> dict:
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "processor": platform.processor() or platform.machine(), "python": platform.python_version()}
    if device is not None and torch.device(device).type == "cuda":
        env["device"] = torch.cuda.get_device_name(torch.device(device))
    return env


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model_name, rows in results.get("throughput", {}).items():
        bs = [r["batch_size"] for r in rows]
        for layout, style in (("packed", "-o"), ("padded", "--s")):
            axes[0].plot(bs, [r[layout]["speedup"] for r in rows], style, label=f"{model_name} {layout}")
        axes[0].plot(bs, [r["flops_reduction"] for r in rows], ":", color="gray")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("batch size")
    axes[0].set_ylabel("speed-up over stock sdpa (dotted: FLOPs reduction)")
    axes[0].legend(fontsize=7)
    axes[0].set_title("Throughput gain vs batch size")
    dec = results.get("decision_cost", [])
    for ratio in sorted({r["keep"] for r in dec}):
        sub = [r for r in dec if r["keep"] == ratio]
        axes[1].plot([r["n"] for r in sub], [r["topk_over_threshold"] for r in sub], "-o", label=f"keep {ratio:.0%}")
    if dec:
        axes[1].plot([r["n"] for r in dec if r["keep"] == dec[0]["keep"]],
                     [r["with_gather_ratio"] for r in dec if r["keep"] == dec[0]["keep"]], "k--",
                     label=f"with gather, keep {dec[0]['keep']:.0%}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("sequence length n (batch 32)")
    axes[1].set_ylabel("top-k time / threshold time")
    axes[1].set_title("Decision cost")
    if dec:
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(results: dict, output_dir) -> Path:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "bench.json"
    path.write_text(json.dumps(results, indent=1))
    plot(results, output_dir / "bench.png")
    return path


def markdown(results: dict) -> str:
    """The tables of docs/BENCHMARKS.md, from a bench.json."""
    out = []
    env = results["environment"]
    text = (f"; task {results['task']} dev, {results['num_sequences']} sequences, mean "
            f"{results['mean_length']:.1f} tokens") if results.get("task") else ""
    where = f"{env['device']} (CPU: {env['processor']})" if env.get("device") else env["processor"]
    out.append(f"torch {env['torch']}, {env['threads']} threads, {where}{text}.\n")
    for name, rows in results.get("throughput", {}).items():
        m = results["models"][name]
        inputs = f"; {m['inputs']}" if m.get("inputs") else ""
        out.append(f"### Throughput vs batch size: {name} ({m['layers']} layers, hidden {m['hidden']}{inputs})\n")
        out.append("| batch | FLOPs reduction | stock seq/s | padded seq/s | padded speed-up | padded realised/theoretical "
                   "| packed seq/s | packed speed-up | packed realised/theoretical |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            out.append(f"| {r['batch_size']} | {r['flops_reduction']:.2f}x | {r['unpruned']['sequences_per_s']:.1f} | "
                       f"{r['padded']['sequences_per_s']:.1f} | {r['padded']['speedup']:.2f}x | "
                       f"{r['padded']['realised_over_theoretical']:.2f} | {r['packed']['sequences_per_s']:.1f} | "
                       f"{r['packed']['speedup']:.2f}x | {r['packed']['realised_over_theoretical']:.2f} |")
        out.append("")
        if rows and "packed+graphs" in rows[0]:
            out.append("With CUDA graphs (both through the same runner; speed-up against the graphed stock model):\n")
            out.append("| batch | stock+graphs seq/s | packed+graphs seq/s | speed-up | realised/theoretical | static reruns |")
            out.append("|---|---|---|---|---|---|")
            for r in rows:
                g = r["packed+graphs"]
                out.append(f"| {r['batch_size']} | {r['unpruned+graphs']['sequences_per_s']:.1f} | "
                           f"{g['sequences_per_s']:.1f} | {g['speedup']:.2f}x | {g['realised_over_theoretical']:.2f} | "
                           f"{r.get('static_reruns')} |")
            out.append("")
    if results.get("overhead"):
        out.append("### Overhead at zero pruning (time / stock sdpa time)\n")
        keys = [k for k in results["overhead"][0] if k != "batch_size"]
        out.append("| batch | " + " | ".join(keys) + " |")
        out.append("|---|" + "---|" * len(keys))
        for r in results["overhead"]:
            out.append(f"| {r['batch_size']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
        out.append("")
    if results.get("int8"):
        out.append("### int8 (dynamic quantization of the linear layers) + LTP vs fp32\n")
        out.append("| batch | FLOPs reduction | stock fp32 seq/s | LTP fp32 seq/s | LTP int8 seq/s | LTP int8 / stock fp32 "
                   "| LTP int8 / LTP fp32 | stock int8 / stock fp32 |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in results["int8"]:
            q = r["ratios"]
            out.append(f"| {r['batch_size']} | {r['flops_reduction']:.2f}x | {r['stock_fp32']['sequences_per_s']:.1f} | "
                       f"{r['ltp_fp32']['sequences_per_s']:.1f} | {r['ltp_int8']['sequences_per_s']:.1f} | "
                       f"{q['ltp_int8_over_stock_fp32']:.2f}x | {q['ltp_int8_over_ltp_fp32']:.2f}x | "
                       f"{q.get('stock_int8_over_stock_fp32', float('nan')):.2f}x |")
        out.append("")
    if results.get("decision_cost"):
        out.append("### Decision cost, batch 32 (microseconds per call; ratios top-k / threshold)\n")
        out.append("| n | keep | threshold | top-k | top-k / threshold | threshold+gather | top-k+gather | ratio with gather |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in results["decision_cost"]:
            u = r["us"]
            out.append(f"| {r['n']} | {r['keep']:.0%} | {u['threshold']:.1f} | {u['topk']:.1f} | "
                       f"{r['topk_over_threshold']:.1f}x | {u['threshold+gather']:.1f} | {u['topk+gather']:.1f} | "
                       f"{r['with_gather_ratio']:.2f}x |")
        out.append("")
    if results.get("probability_cost"):
        out.append("### Cost of the scores (BERT-base layer, batch 32)\n")
        out.append("| n | fused sdpa ms | explicit + scores ms | two-call ms | layer ms | explicit extra, share of a layer "
                   "| two-call extra | engine picks | its extra |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in results["probability_cost"]:
            out.append(f"| {r['n']} | {r['sdpa_ms']:.2f} | {r['explicit_ms']:.2f} | {r.get('two_call_ms', float('nan')):.2f} | "
                       f"{r['layer_ms']:.2f} | {r['extra_fraction_of_layer']:.1%} | "
                       f"{r.get('two_call_extra_fraction_of_layer', float('nan')):.1%} | {r.get('auto_kernel', '')} | "
                       f"{r.get('auto_extra_fraction_of_layer', r['extra_fraction_of_layer']):.1%} |")
        out.append("")
    return "\n".join(out)
