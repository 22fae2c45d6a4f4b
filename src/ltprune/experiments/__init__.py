"""The paper's experiments beyond the accuracy-FLOPs sweep (``ltprune.sweep``), one module each:

* ``robustness``: Table 3, trained on short inputs, evaluated by length bucket (LTP vs LAT);
* ``lengths``: Table 2 / Fig. 1, train vs dev length histograms and their KL divergence;
* ``per_example``: Fig. A.2 / A.3, from an eval folder's ``examples.jsonl``;
* ``qa`` (in ``ltprune.qa``): Fig. 5, SQuAD 2.0 F1 vs FLOPs.

Their command line is ``ltprune.cli.experiments``; ``ltprune.sweep`` is the Fig. 4 / Table 1 sweep.
"""

from __future__ import annotations
