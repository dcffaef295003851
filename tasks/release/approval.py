"""Model release approval (seed 7.2.1): the input a person gives in the Prefect UI and the recorded decision."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefect.input import RunInput

from tasks.measure.loadgen import auth_headers
from tasks.release.gate import GateVerdict

DecidedBy = Literal["human", "policy", "timeout"]


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
    return ApprovalDecision(model, version, verdict.passed, verdict.weighted_score, verdict.passed, "policy", reason, time.time())


def from_input(model: str, version: str | None, verdict: GateVerdict, given: ApprovalInput) -> ApprovalDecision:
    """The reviewer's answer, as a decision record."""
    return ApprovalDecision(
        model, version, verdict.passed, verdict.weighted_score, bool(given.approve), "human", given.comment, time.time()
    )


def timed_out(model: str, version: str | None, verdict: GateVerdict, timeout_s: float) -> ApprovalDecision:
    """Nobody answered in time: the candidate is not promoted (silence is not consent)."""
    comment = f"no answer within {timeout_s:.0f} s; not promoted"
    return ApprovalDecision(model, version, verdict.passed, verdict.weighted_score, False, "timeout", comment, time.time())


def request_text(model: str, version: str | None, verdict: GateVerdict, report_md: str) -> str:
    """What the reviewer reads in the Prefect UI before answering."""
    head = (
        f"## Release approval: `{model}` version {version or '?'}\n\n"
        f"Gate verdict: **{'PASS' if verdict.passed else 'FAIL'}** (weighted score {verdict.weighted_score:.2%}). "
    )
    if not verdict.passed:
        head += "A failed gate is never promoted, whatever you answer; approving only records your comment.\n\n"
    else:
        head += "Set `approve` to true to promote this candidate to `champion`, false to keep the current one.\n\n"
    return head + report_md


def record(decision: ApprovalDecision, run_id: str) -> None:
    """Write the decision on an MLflow run: tags to filter by and a JSON artifact with the details."""
    from mlflow import MlflowClient

    from tasks.records.store import configure

    client = MlflowClient(configure())
    tags = {
        "inferops.approval.approved": str(decision.approved).lower(),
        "inferops.approval.decided_by": decision.decided_by,
        "inferops.approval.promote": str(decision.promote).lower(),
        "inferops.approval.comment": decision.comment[:4000],
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_dict(run_id, decision.as_dict(), "approval_decision.json")


# ---- change freeze (SPEC §2 medium risk: "stop further changes") ------------------------------------------------

FREEZE_TAG = "inferops.frozen"


def freeze(model: str, reason: str, run_id: str | None = None) -> dict[str, Any]:
    """Mark a registered model frozen: the optimization cycle and the gate make no change until it is lifted."""
    import json

    from mlflow import MlflowClient

    from tasks.records.store import configure

    record = {"reason": reason, "at": time.time(), "run_id": run_id}
    MlflowClient(configure()).set_registered_model_tag(model, FREEZE_TAG, json.dumps(record))
    return record


def frozen_reason(model: str) -> str | None:
    """Why `model` is frozen, or None when changes are allowed (also None for an unregistered model)."""
    import json

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.records.store import configure

    try:
        tags = MlflowClient(configure()).get_registered_model(model).tags
    except MlflowException:
        return None
    raw = tags.get(FREEZE_TAG)
    if not raw:
        return None
    try:
        return str(json.loads(raw).get("reason", raw))
    except ValueError:
        return raw


def unfreeze(model: str) -> None:
    """Lift a freeze once the urgent fix is in (a person decides this, never the software)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.records.store import configure

    try:
        MlflowClient(configure()).delete_registered_model_tag(model, FREEZE_TAG)
    except MlflowException:
        pass


# ---- risk actions while the new champion takes traffic (SPEC §2) ------------------------------------------------


def switch_endpoint_back(url: str, api_key: str | None, model: str, version: str) -> dict[str, Any]:
    """Point the live endpoint at `models:/model/version`; fall back to the server's own rollback route."""
    import httpx

    headers = auth_headers(api_key)
    base = url.rstrip("/")
    attempts = [
        ("switch", f"{base}/admin/models/{model}/switch", {"uri": f"models:/{model}/{version}"}),
        ("rollback", f"{base}/admin/models/{model}/rollback", None),
    ]
    tried = []
    for how, route, body in attempts:
        try:
            response = httpx.post(route, json=body, headers=headers, timeout=120.0)
        except httpx.HTTPError as exc:
            tried.append(f"{how}: {type(exc).__name__}")
            continue
        if response.status_code == 200:
            return {"switched": True, "how": how, "status": 200, "detail": response.text[:500]}
        tried.append(f"{how}: HTTP {response.status_code} {response.text[:200]}")
    return {"switched": False, "how": None, "detail": "; ".join(tried)}


def scale_out_recommendation(observed: float, target_utilisation: float) -> dict[str, Any]:
    """How many times the current replicas bring utilisation back to the capacity plan's target."""
    factor = observed / target_utilisation if target_utilisation > 0 else float("inf")
    return {
        "observed_utilisation": observed,
        "target_utilisation": target_utilisation,
        "replica_factor": round(factor, 2),
        "advice": f"scale replicas by x{factor:.2f} (round up) to bring utilisation from {observed:.0%} "
        f"to the {target_utilisation:.0%} planning target",
    }


def apply_risk_action(
    action: Any, *, model: str, url: str, api_key: str | None, run_id: str | None, target_utilisation: float
) -> dict[str, Any]:
    """Carry out one `RiskAction` and return the record of what was done."""
    from tasks.records import registry

    record: dict[str, Any] = {
        "level": action.level,
        "action": action.action,
        "observed": action.observed,
        "threshold": action.threshold,
        "reason": action.reason,
        "at": time.time(),
    }
    if action.action == "rollback":
        try:
            back = registry.rollback(model, action.reason)
        except registry.RegistryError as exc:
            record["done"] = False
            record["detail"] = str(exc)
            return record
        record["registry"] = asdict(back)
        record["endpoint"] = switch_endpoint_back(url, api_key, model, back.to_version)
        record["done"] = bool(record["endpoint"]["switched"])
    elif action.action == "alert_and_freeze":
        record["freeze"] = freeze(model, action.reason, run_id)
        record["alert"] = {"level": "medium", "type": "threshold", "message": action.reason}
        record["done"] = True
    elif action.action == "scale_out":
        record["recommendation"] = scale_out_recommendation(float(action.observed), target_utilisation)
        record["done"] = True
    return record
