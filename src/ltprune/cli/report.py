"""``ltprune report``: one HTML page for a run folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import LTPError


def register(subparsers) -> None:
    """Add ``ltprune report RUN_DIR`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "report", help="one self-contained HTML page with a run folder's plots, tables and pruned tokens",
        description="Gather a run folder's plots (embedded as data URIs), tables and metrics into one HTML "
                    "page, and show for a few dev texts where each token was pruned.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--output", help="the HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--model", help="checkpoint to shade tokens with (default: RUN_DIR/**/hard/final)")
    p.add_argument("--texts-file", help="texts to shade, one per line (a tab separates a text pair)")
    p.add_argument("--squad-file", help="for a QA checkpoint: questions and contexts from a SQuAD v2 JSON file")
    p.add_argument("--num-examples", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--title")
    g = p.add_argument_group("dev texts from a task")
    g.add_argument("--task", help="rotten_tomatoes, a GLUE task, a CSV/JSONL file or folder")
    g.add_argument("--data-dir")
    g.add_argument("--text-column")
    g.add_argument("--text-pair-column")
    g.add_argument("--label-column")
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    from ..report import build_report

    texts = None
    if a.texts_file:
        try:
            lines = Path(a.texts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LTPError(f"cannot read {a.texts_file}: {exc}") from None
        texts = [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines if line.strip()]
    data_kwargs = dict(data_dir=a.data_dir, text_column=a.text_column, text_pair_column=a.text_pair_column,
                       label_column=a.label_column, seed=a.seed)
    path = build_report(a.run_dir, a.output, model=a.model, texts=texts, task=a.task, data_kwargs=data_kwargs,
                        squad_file=a.squad_file, num_examples=a.num_examples, max_length=a.max_length,
                        title=a.title)
    print(f"wrote {path}")
    return 0
