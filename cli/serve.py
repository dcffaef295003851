"""`inferops serve`: start the Ray Serve application locally."""

import typer


def serve(model: str = typer.Option("minilm")) -> None:
    """Serve a model over HTTP."""
    raise typer.Exit(code=2)
