"""Real int8 inference on CPU (paper §4.6): a copy of a model whose Linear layers run int8 kernels
(PyTorch dynamic quantization on our own weight grid), what this CPU's kernels can do, and
timings of int8 LTP against the fp32 models, side by side."""

from __future__ import annotations

import copy
import os
import platform
import warnings
from contextlib import contextmanager

import torch
from torch import nn

from .batching import length_sorted_tensors
from .errors import ConfigError
from .evaluation import flops_reduction
from .patch import THRESHOLDS, configure, get_config, is_patched
from .quantization import _construct, baked_copy, baked_state_dict, quantizable_linears, quantization_info
from .timing import time_variants


@contextmanager
def _quiet_ao():
    """torch.ao.quantization warns at import and per tensor that it is deprecated (the eager
    API moves to torchao); it still works in torch 2.13 and is what runs int8 on CPU without an
    extra dependency."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao.*")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        yield


def int8_qconfig(per_channel: bool = True):
    """Dynamic-quantization qconfig whose weight grid is ours: symmetric, levels ±127 (the default
    observers use -128..127 and scale max/127.5, which would round already-quantized weights a
    second time)."""
    with _quiet_ao():
        from torch.ao.quantization import QConfig
        from torch.ao.quantization.observer import (
            MinMaxObserver,
            PerChannelMinMaxObserver,
            default_dynamic_quant_observer,
        )
    if per_channel:
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                    quant_min=-127, quant_max=127)
    else:
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                          quant_min=-127, quant_max=127)
    return QConfig(activation=default_dynamic_quant_observer, weight=weight)


CPU_KIND_ENV = "LTPRUNE_INT8_VNNI"  # "1" / "0": take this CPU as one with / without AVX512-VNNI


def cpu_int8_kind() -> str:
    """What this CPU's int8 GEMMs (fbgemm, PyTorch's x86 quantized engine) run on.

    ``"avx512_vnni"``: VPDPBUSD accumulates u8 x s8 products in 32 bits (Cascade Lake and later
    Xeons, AMX CPUs, AMD Zen 4); ``"avx512"`` / ``"avx2"``: VPMADDUBSW sums pairs of products into
    16 bits with saturation, which full 8-bit activations overflow; ``"other"``: not x86.
    ``LTPRUNE_INT8_VNNI=0`` (or ``1``) overrides the detection, to simulate the other CPU kind.
    """
    forced = os.environ.get(CPU_KIND_ENV)
    if forced in ("0", "1"):
        return "avx512_vnni" if forced == "1" else "avx2"
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return "other"
    try:
        caps = torch._C._cpu._get_cpu_capability()  # torch's own cpuinfo reading
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch: read the kernel's flags
        caps = {}
        try:
            flags = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
        except OSError:
            flags = ""
        caps = {"avx512_vnni": "avx512_vnni" in flags, "avx512_f": "avx512f" in flags,
                "avx2": " avx2" in flags}
    if caps.get("avx512_vnni"):
        return "avx512_vnni"
    return "avx512" if caps.get("avx512_f") else ("avx2" if caps.get("avx2", True) else "other")


def int8_full_range_supported() -> bool:
    """Whether full-range (8-bit) dynamic int8 activations give correct results on this CPU."""
    return cpu_int8_kind() == "avx512_vnni"


def check_full_range() -> None:
    """A one-line error on a CPU whose int8 kernels would saturate with full-range activations."""
    kind = cpu_int8_kind()
    if kind != "avx512_vnni":
        raise ConfigError(
            f"full-range int8 activations need a CPU with AVX512-VNNI; this one has {kind} int8 kernels, "
            "whose 16-bit sums saturate (logits would be noise): use the default 7-bit activations")


def export_int8(model: nn.Module, per_channel: bool | None = None, full_range: bool = False) -> nn.Module:
    """A copy of ``model`` whose Linear layers (outside the embeddings) run int8 kernels on CPU.

    PyTorch dynamic quantization: int8 weights (the model's own grid when it was trained with
    :func:`quantize_model` at 8 bits, so they are not rounded twice), activations quantized per
    tensor and per call by the kernel. The copy is patched like the original (the engine calls
    the swapped modules), in eval mode, on CPU. ``model`` is left as it is.

    PyTorch's dynamic Linear quantizes activations to 7 bits (``reduce_range``) so that AVX2
    kernels cannot saturate their 16-bit intermediate sums. ``full_range=True`` uses all 8 bits
    (up to 3x smaller logit error in our tests); it needs AVX512-VNNI (:func:`cpu_int8_kind`), whose
    kernels accumulate in 32 bits, and raises a ConfigError on any other CPU.
    """
    if full_range:
        check_full_range()
    info = quantization_info(model) or {}
    if info.get("weight_bits") not in (None, 8):
        warnings.warn(f"the model was trained with {info['weight_bits']}-bit weights; int8 kernels re-quantize "
                      "them to 8 bits", stacklevel=2)
    if per_channel is None:
        per_channel = info.get("granularity", "per_channel") == "per_channel"
    if "x86" in torch.backends.quantized.supported_engines and torch.backends.quantized.engine == "none":
        torch.backends.quantized.engine = "x86"
    clone = baked_copy(model).to("cpu").float().eval()
    qconfig = int8_qconfig(per_channel)
    spec = {name: qconfig for name, _ in quantizable_linears(clone)}
    with _quiet_ao():
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(clone, spec, dtype=torch.qint8, inplace=True)
    if full_range:
        for module in clone.modules():
            if module._get_name() == "DynamicQuantizedLinear":
                module.version = 3  # its forward then calls linear_dynamic without reduce_range
    clone.config.ltp_quantization = {**info, "int8_export": "dynamic",
                                     "int8_activations": "8-bit" if full_range else "7-bit"}
    return clone


def _quiet_forward(model):
    def run(**batch):
        with _quiet_ao(), torch.no_grad():
            return model(**batch)
    return run


def logits_agreement(reference: nn.Module, other: nn.Module, batches) -> dict:
    """Max |logit difference| and argmax agreement of two models over the same batches."""
    diff, same, total = 0.0, 0, 0
    for batch in batches:
        a = _quiet_forward(reference)(**batch).logits.float()
        b = _quiet_forward(other)(**batch).logits.float()
        diff = max(diff, float((a - b).abs().max()))
        same += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0]
    return {"max_abs_logit_diff": diff, "argmax_agreement": same / max(total, 1)}


def stock_copy(model: nn.Module) -> nn.Module:
    """The same weights in the unpatched transformers class (the fp32 "stock" baseline)."""
    stock = _construct(type(model), copy.deepcopy(model.config))
    state = {k: v for k, v in baked_state_dict(model).items() if not k.endswith(THRESHOLDS)}
    stock.load_state_dict(state, strict=True)
    return stock.eval()


def int8_throughput(pruned: nn.Module, dataset, pad_id: int, stock: nn.Module | None = None,
                    batch_sizes=(1, 8, 32), repeats: int = 5, max_examples_batch1: int = 128,
                    layout: str | None = None, full_range: bool = False) -> list[dict]:
    """Sequences/s of int8 LTP vs fp32 LTP vs the fp32 stock model (and the int8 stock model, to
    separate what each method gives), interleaved, medians of ``repeats``; ratios per batch size.

    ``pruned``: a patched model (fake-quantized or baked); it runs in ``hard`` mode. ``stock``:
    the unpruned fp32 model (default: ``pruned``'s weights in the unpatched class).
    """
    config = get_config(pruned).replace(mode="hard", **({"layout": layout} if layout else {}))
    fp32 = configure(baked_copy(pruned).eval(), config)
    int8 = configure(export_int8(pruned, full_range=full_range), config)
    stock = stock_copy(pruned) if stock is None else stock.eval()
    stock_int8 = None if is_patched(stock) else export_int8(stock, full_range=full_range)
    variants = {"stock_fp32": stock, "ltp_fp32": fp32, "ltp_int8": int8}
    if stock_int8 is not None:
        variants["stock_int8"] = stock_int8
    rows = []
    for bs in batch_sizes:
        data = dataset.select(range(min(len(dataset), max_examples_batch1))) if bs == 1 else dataset
        batches = length_sorted_tensors(data, pad_id, bs)
        reduction = flops_reduction(fp32, batches)

        def timed(model, batches=batches):
            forward = _quiet_forward(model)
            return lambda: [forward(**b) for b in batches]

        t = time_variants({name: timed(m) for name, m in variants.items()}, repeats=repeats)
        n = len(data)
        row = {"batch_size": bs, "num_sequences": n, "flops_reduction": reduction,
               **{name: {"sequences_per_s": n / t[name]["median"], "median_s": t[name]["median"],
                         "min_s": t[name]["min"], "max_s": t[name]["max"]} for name in variants}}
        med = {name: t[name]["median"] for name in variants}
        row["ratios"] = {"ltp_int8_over_stock_fp32": med["stock_fp32"] / med["ltp_int8"],
                         "ltp_int8_over_ltp_fp32": med["ltp_fp32"] / med["ltp_int8"],
                         "ltp_fp32_over_stock_fp32": med["stock_fp32"] / med["ltp_fp32"]}
        if "stock_int8" in med:
            row["ratios"]["stock_int8_over_stock_fp32"] = med["stock_fp32"] / med["stock_int8"]
        row["int8_vs_fp32_ltp"] = logits_agreement(fp32, int8, batches)
        rows.append(row)
    return rows
