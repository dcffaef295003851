"""`inferops variants`: build every variant of a model and print the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def render_table(title: str, rows: list[dict[str, str]], wrap: frozenset[str] = frozenset({"accuracy"})) -> Any:
    """A rich Table from `table_rows` output (columns in first-seen order)."""
    from rich.table import Table

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col not in wrap, ratio=1 if col in wrap else None)
    for row in rows:
        table.add_row(*(row.get(c, "") for c in columns))
    return table


def variants(
    model: str = typer.Option("minilm", help="model zoo name or onnx:PATH[::module:function]"),
    variant: list[str] = typer.Option(None, "--variant", "-v", help="only these variants (repeatable)"),
    quick: bool = typer.Option(False, "--quick", help="fewer timed calls per batch size (a rough table fast)"),
    batch_sizes: str = typer.Option("1,8,32", help="comma-separated batch sizes to time"),
    stsb: Path | None = typer.Option(None, help="STS-B file (sts-dev.csv) to report Spearman retention"),
    threads: int | None = typer.Option(None, help="intra-op threads (default: all cores)"),
    no_spin: bool = typer.Option(False, "--no-spin", help="disable ORT thread spinning (co-located proxies)"),
) -> None:
    """Build and measure every variant of a model."""
    from rich.console import Console

    from serving.artifacts import ArtifactError
    from serving.zoo import EvaluatorError, UnknownModelError
    from tasks.optimize.evaluation import compare_variants, table_rows

    console = Console() if Console().is_terminal else Console(width=200)  # logs and pipes get the full table
    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    try:
        reports = compare_variants(
            model,
            variant or None,
            batch_sizes=sizes,
            quick=quick,
            stsb_path=stsb,
            intra_op_threads=threads,
            allow_spinning=not no_spin,
            progress=lambda msg: console.print(msg, highlight=False),
        )
    except (UnknownModelError, ArtifactError, EvaluatorError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
    console.print(render_table(f"{model}: variants (in-process, {'quick' if quick else 'full'})", table_rows(reports, sizes)))
    failed = [r.variant for r in reports if r.decision and r.decision.verdict == "fail"]
    if failed:
        console.print(f"below the retention threshold: {', '.join(failed)}", highlight=False)
