"""Tasks: what is particular to one kind of problem on the pruned encoder.

``base`` holds the protocol (``Task``: load model, prepare data, trainer metrics, predict ->
outputs + records, score, write) and the one prediction pass every task shares;
``classification`` (sequences, GLUE-style) and ``squad`` (extractive QA) follow it.
``training.run_stage`` and ``evaluation.evaluate`` take a task. docs/DECISIONS.md ("The task
seam") says why this shape and how the embedding task relates to it.
"""
