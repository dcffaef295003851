"""How the commands show results to a person: rich tables and short sentences, built from the flows' outputs."""

from __future__ import annotations

import json
from typing import Any


def render_table(
    title: str, rows: list[dict[str, str]], wrap: frozenset[str] = frozenset({"accuracy"})
) -> Any:
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


def print_cycle(out: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=200)
    # The stage is in the candidate's name (+threads=, +replicas=, +cache=): the type column would only repeat it.
    rows = [{k: "" if v is None else str(v) for k, v in r.items() if k != "type"} for r in out["results"]]
    title = f"optimization cycle: {out['model']} (baseline {out['baseline']['variant']})"
    console.print(render_table(title, rows, wrap=frozenset({"reason", "candidate"})))
    console.print(
        json.dumps(
            {
                "champion": out["champion"],
                "final": out["final"],
                "roi": out["roi"],
                "bottleneck": out["bottleneck"],
                "wall_s": out["wall_s"],
            },
            indent=2,
            default=str,
        )
    )


def print_gate(out: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=200)
    rows = [{k: str(v) for k, v in r.items()} for r in out["rows"]]
    title = f"phase gate: {out['model']} {'PASS' if out['passed'] else 'FAIL'} (weighted {out['weighted_score']:.2%})"
    console.print(render_table(title, rows, wrap=frozenset({"reason"})))
    console.print(
        f"decision: {out['decision']}; promotion: {out['promotion']}; risk actions: {out['risk_actions']}",
        highlight=False,
    )
