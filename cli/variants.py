"""`inferops variants`: build every variant of a model and print the comparison table."""

from __future__ import annotations

from pathlib import Path

import typer


def variants(
    model: str = typer.Option("minilm", help="model zoo name or onnx:PATH[::module:function]"),
    variant: list[str] = typer.Option(None, "--variant", "-v", help="only these variants (repeatable)"),
    quick: bool = typer.Option(
        False, "--quick", help="fewer timed calls per batch size (a rough table fast)"
    ),
    batch_sizes: str = typer.Option("1,8,32", help="comma-separated batch sizes to time"),
    stsb: Path | None = typer.Option(None, help="STS-B file (sts-dev.csv) to report Spearman retention"),
    threads: int | None = typer.Option(None, help="intra-op threads (default: all cores)"),
    no_spin: bool = typer.Option(False, "--no-spin", help="disable ORT thread spinning (co-located proxies)"),
    as_json: bool = typer.Option(False, "--json", help="print the table rows as JSON (for scripts)"),
) -> None:
    """Build and measure every variant of a model."""
    from rich.console import Console

    from cli.render import print_json, render_table
    from serving.artifacts import ArtifactError
    from serving.zoo import EvaluatorError, UnknownModelError
    from tasks.optimize.evaluation import compare_variants, table_rows
    from tasks.policy import default_policy

    console = Console() if Console().is_terminal else Console(width=200)  # logs and pipes get the full table
    sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    try:
        reports = compare_variants(
            model,
            variant or None,
            retention_threshold=default_policy().optimization.accuracy_retention_threshold,
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
    rows = table_rows(reports, sizes)
    if as_json:
        print_json(rows)
        return
    console.print(render_table(f"{model}: variants (in-process, {'quick' if quick else 'full'})", rows))
    failed = [r.variant for r in reports if r.decision and r.decision.passed is False]
    if failed:
        console.print(f"below the retention threshold: {', '.join(failed)}", highlight=False)
