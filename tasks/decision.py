"""One decision record for every check the software makes, and one renderer for it.

A gate item's checks, a candidate's validation, the pre-implementation checklist, data-quality expectations and
suite verdicts are all the same thing: a name, the threshold it was held to, what was observed, whether it passed
(None where the check cannot apply here, such as GPU utilisation on a CPU host) and why. They are written as
`Decision`s and rendered by the same two functions, as table rows and as markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

VERDICT_LABELS = {True: "pass", False: "fail", None: "n/a"}


@dataclass(frozen=True)
class Decision:
    """What was checked, against what, what was seen, the verdict and its reason."""

    name: str
    threshold: Any
    observed: Any
    passed: bool | None  # None: not applicable here, left out of shares
    reason: str
    # further columns of one kind of check (e.g. severity)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return VERDICT_LABELS[self.passed]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def applicable(decisions: Sequence[Decision]) -> list[Decision]:
    return [d for d in decisions if d.passed is not None]


def share_passed(decisions: Sequence[Decision]) -> float:
    """Share of applicable decisions that passed; 0 when none applied (an item that measured nothing fails)."""
    judged = applicable(decisions)
    return sum(1 for d in judged if d.passed) / len(judged) if judged else 0.0


def all_passed(decisions: Sequence[Decision]) -> bool:
    """Every applicable decision passed (an empty list passes: nothing failed)."""
    return all(d.passed is not False for d in decisions)


def failed(decisions: Sequence[Decision]) -> list[Decision]:
    return [d for d in decisions if d.passed is False]


def reasons(decisions: Sequence[Decision], limit: int | None = None) -> str:
    """The failed decisions' reasons, joined (the first `limit` of them)."""
    return "; ".join(d.reason for d in failed(decisions)[:limit])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def decision_rows(decisions: Sequence[Decision]) -> list[dict[str, str]]:
    """Table rows (Prefect table artifacts, MLflow tables, the CLI): check, threshold, observed, verdict, reason."""
    rows = []
    for d in decisions:
        row = {"check": d.name, "threshold": _cell(d.threshold), "observed": _cell(d.observed)}
        row.update({k: _cell(v) for k, v in d.extra.items()})
        row.update({"verdict": d.verdict, "reason": d.reason})
        rows.append(row)
    return rows


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def decisions_markdown(decisions: Sequence[Decision], title: str | None = None) -> str:
    """The decisions as a markdown table (under a `## title` when given)."""
    rows = decision_rows(decisions)
    columns = list(rows[0]) if rows else ["check", "threshold", "observed", "verdict", "reason"]
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_escape(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Any list of flat rows as a markdown table (columns from the first row)."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_escape(_cell(row.get(c))) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
