"""The paper's experiments beyond the accuracy-FLOPs sweep (``ltprune.sweep``), one module each:

* ``robustness``: Table 3, trained on short inputs, evaluated by length bucket (LTP vs LAT);
* ``lengths``: Table 2 / Fig. 1, train vs dev length histograms and their KL divergence;
* ``per_example``: Fig. A.2 / A.3, from an eval folder's ``examples.jsonl``;
* ``qa`` (in ``ltprune.qa``): Fig. 5, SQuAD 2.0 F1 vs FLOPs.

Submodules are imported when used, so building the CLI stays cheap.
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add ``ltprune experiment {robustness,lengths,per-example,qa}`` to the CLI's subparsers."""
    from .. import qa
    from . import lengths, per_example, robustness

    p = subparsers.add_parser("experiment", help="the paper's experiments: robustness, lengths, per-example, qa",
                              description="Reproduce the paper's experiments (METHOD.md section 8).")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    robustness.register(sub)
    lengths.register(sub)
    per_example.register(sub)
    qa.register_experiment(sub)


__all__ = ["register"]
