"""The model card: the ``## Learned Token Pruning`` section of a checkpoint's ``README.md``.

Fed plain values (the LTP config, the thresholds, the metrics to claim), so it needs no model
and no torch; ``patch`` calls it from a patched model's ``save_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from .config import LTPConfig

CARD_HEADING = "## Learned Token Pruning"


def _scalars(result: dict) -> dict:
    """The public numbers and names of a metrics dict (not per-layer lists or predictions)."""
    return {k: v for k, v in result.items()
            if not k.startswith("_") and isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)


def card_section(config: LTPConfig, thresholds: list[float], metrics: dict | None = None) -> str:
    """The ``## Learned Token Pruning`` section: how to load, config, thresholds, metrics."""
    cfg = config
    lines = [CARD_HEADING, "",
             "This checkpoint prunes tokens with ltprune (Learned Token Pruning, Kim et al., KDD 2022, "
             "[arXiv:2107.00910](https://arxiv.org/abs/2107.00910)). Load it with `ltprune.from_pretrained(path)`; "
             "a plain `from_pretrained` gives the unpruned model.", "",
             "### LTP config", "", "| option | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in cfg.to_dict().items() if not (k == "extra" and not v)]
    lines += ["", "### Thresholds per layer", "",
              "| layer | " + " | ".join(str(i) for i in range(len(thresholds))) + " |",
              "|---|" + "---|" * len(thresholds),
              "| threshold | " + " | ".join(_fmt(t) for t in thresholds) + " |"]
    metrics = _scalars(metrics or {})
    if metrics:
        lines += ["", "### Evaluation when saved", "", "| quantity | value |", "|---|---|"]
        names = {"task": "task", "metric": f"metric ({metrics.get('metric_name', 'task metric')})",
                 "accuracy": "accuracy", "relative_flops": "relative FLOPs (vs unpruned)",
                 "gflops": "GFLOPs per example", "baseline_gflops": "unpruned GFLOPs per example",
                 "num_examples": "examples", "mode": "mode"}
        lines += [f"| {label} | {_fmt(metrics[key])} |" for key, label in names.items() if key in metrics]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in metrics.items()
                  if key not in names and key not in ("metric_name", "mean_length")]
    return "\n".join(lines) + "\n"


def write_card(path, arch: str, config: LTPConfig, thresholds: list[float], metrics: dict | None = None) -> Path:
    """Write or replace the LTP section of ``path/README.md``, keeping everything else in it;
    ``arch`` (the model's class name) titles a new card."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    card = path / "README.md"
    section = card_section(config, thresholds, metrics).splitlines()
    if card.is_file():
        lines = card.read_text(encoding="utf-8").splitlines()
    else:
        lines = ["---", "tags:", "- ltprune", "- token-pruning", "---", "", f"# {arch} with Learned Token Pruning"]
    start = next((i for i, line in enumerate(lines) if line.strip() == CARD_HEADING), None)
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + section
    else:  # the section ends at the next heading of level 1 or 2
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("# ", "## "))), len(lines))
        lines = lines[:start] + section + ([""] if end < len(lines) else []) + lines[end:]
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return card
