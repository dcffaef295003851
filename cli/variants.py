"""`inferops variants`: build every variant of a model and print the comparison table."""

import typer


def variants(model: str = typer.Option("minilm", help="model zoo name or onnx:PATH")) -> None:
    """Build and measure every variant of a model."""
    raise typer.Exit(code=2)
