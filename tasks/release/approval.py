"""Model release approval (seed 7.2.1): the input a person gives in the Prefect UI and the recorded decision."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefect.input import RunInput

from tasks.release.gate import GateVerdict

DecidedBy = Literal["human", "policy", "timeout"]


class ApprovalUnavailable(RuntimeError):
    """An approval point was asked for where nobody can answer it (no Prefect server to pause the run on)."""


def require_pausable(model: str) -> None:
    """An approval pauses the flow run until a person answers in the Prefect UI: that needs a Prefect server.
    Without one (Prefect's ephemeral API in this process) the run would wait out the whole timeout unanswered."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ApprovalUnavailable(
            f"the release of {model!r} needs a person's approval (policy rollout_gate.require_approval), answered "
            "in the Prefect UI, but no Prefect server is configured: start one (`prefect server start`, then "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`), or pass --no-approval "
            "(require_approval=False) to let the gate's verdict decide"
        )


class ApprovalInput(RunInput):
    """What the reviewer fills in when the gate flow pauses: approve or reject, with a comment."""

    approve: bool = False
    comment: str = ""


@dataclass(frozen=True)
class ApprovalDecision:
    """Who decided whether the candidate may be promoted, what they decided and why."""

    model: str
    candidate_version: str | None
    gate_passed: bool
    weighted_score: float
    approved: bool
    decided_by: DecidedBy
    comment: str
    at: float

    @property
    def promote(self) -> bool:
        """Promotion needs both a passing gate and an approval; a human cannot wave a failed gate through."""
        return self.gate_passed and self.approved

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promote": self.promote}


def by_policy(model: str, version: str | None, verdict: GateVerdict) -> ApprovalDecision:
    """No approval point configured: the gate's verdict decides."""
    reason = "approval not required; gate verdict decides"
    return ApprovalDecision(
        model, version, verdict.passed, verdict.weighted_score, verdict.passed, "policy", reason, time.time()
    )


def from_input(
    model: str, version: str | None, verdict: GateVerdict, given: ApprovalInput
) -> ApprovalDecision:
    """The reviewer's answer, as a decision record."""
    return ApprovalDecision(
        model,
        version,
        verdict.passed,
        verdict.weighted_score,
        bool(given.approve),
        "human",
        given.comment,
        time.time(),
    )


def timed_out(model: str, version: str | None, verdict: GateVerdict, timeout_s: float) -> ApprovalDecision:
    """Nobody answered in time: the candidate is not promoted (silence is not consent)."""
    comment = f"no answer within {timeout_s:.0f} s; not promoted"
    return ApprovalDecision(
        model, version, verdict.passed, verdict.weighted_score, False, "timeout", comment, time.time()
    )


def request_text(model: str, version: str | None, verdict: GateVerdict, report_md: str) -> str:
    """What the reviewer reads in the Prefect UI before answering."""
    head = (
        f"## Release approval: `{model}` version {version or '?'}\n\n"
        f"Gate verdict: **{'PASS' if verdict.passed else 'FAIL'}** (weighted score {verdict.weighted_score:.2%}). "
    )
    if not verdict.passed:
        head += (
            "A failed gate is never promoted, whatever you answer; approving only records your comment.\n\n"
        )
    else:
        head += "Set `approve` to true to promote this candidate to `champion`, false to keep the current one.\n\n"
    return head + report_md


def preset_decision(
    model: str, version: str | None, verdict: GateVerdict, frozen: str | None, needs_human: bool
) -> ApprovalDecision | None:
    """The decision when nobody needs to be asked (a change freeze refuses; without an approval point, or for a
    failed gate, the verdict decides); None when a reviewer must answer."""
    if frozen:
        comment = f"changes frozen: {frozen}"
        return ApprovalDecision(
            model, version, verdict.passed, verdict.weighted_score, False, "policy", comment, time.time()
        )
    if needs_human and verdict.passed:
        return None
    return by_policy(model, version, verdict)


def kept_reason(decision: ApprovalDecision, verdict: GateVerdict) -> str:
    """Why a candidate was not promoted, as its registry version is tagged."""
    return decision.comment if decision.gate_passed else f"gate failed: {verdict.reason}"
