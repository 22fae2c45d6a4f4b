"""Tasks: what is particular to one kind of problem on the pruned encoder.

``squad`` (extractive QA) is the first room here; see docs/DECISIONS.md ("The task seam") for the
protocol a task module follows and how classification and an embedding task fit it.
"""
