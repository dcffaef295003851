"""`inferops status`: one screen with what serves now and what the last cycle, gate and capacity plan decided."""

from __future__ import annotations

import typer

from cli.pipelines import API_KEY, JSON


def status(
    model: list[str] = typer.Option(
        [], "--model", "-m", help="models to show (default: every registered model)"
    ),
    url: str | None = typer.Option(
        None, help="endpoint to check: what it serves, and whether that is the champion"
    ),
    api_key: str | None = API_KEY,
    as_json: bool = JSON,
) -> None:
    """Per model: champion, previous champion, knobs, the endpoint's view, and the latest runs with links."""
    from cli.render import print_json, print_status
    from tasks.policy import default_policy
    from tasks.records.status import model_status, registered_models

    defaults = default_policy().serving.default_knobs()
    statuses = [model_status(m, defaults, url, api_key).as_dict() for m in (model or registered_models())]
    if as_json:
        print_json(statuses)
    else:
        print_status(statuses)
