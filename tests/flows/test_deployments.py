"""Every deployment of prefect.yaml, registered with `prefect --no-prompt deploy --all` and run by a real process
worker against real servers on loopback: a Prefect server, an MLflow server over HTTP, `inferops serve` as
production (its own Ray, exporting metrics) and Prometheus scraping it. `benchmarks/rehearsal.py` starts and
stops them all; this test runs it as a user would and checks what each deployment did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.rehearsal import REHEARSAL_POLICY
from tasks.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL_TIMEOUT_S = 1500
STOP_TIMEOUT_S = 90  # what the rehearsal's `finally` takes to stop its servers
# pytest-timeout's 900 s (pyproject) covers a test's fixture setup too: the rehearsal's own limit above must be the one
# that ends it, with its logs in the failure (CI once killed a rehearsal at 900 s, seconds before it would have ended).
pytestmark = pytest.mark.timeout(REHEARSAL_TIMEOUT_S + STOP_TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def rehearsal(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("rehearsal")
    env = {**os.environ, "PATH": f"{Path(prometheus_binary).parent}:{os.environ.get('PATH', '')}"}
    for key in ("PREFECT_API_URL", "INFEROPS_POLICY_FILE", "INFEROPS_DATA_DIR"):
        env.pop(key, None)  # the rehearsal sets its own; nothing of this session's leaks in
    process = subprocess.Popen(
        [sys.executable, "benchmarks/rehearsal.py", "--json", "--workdir", str(work)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        stdout, stderr = process.communicate(timeout=REHEARSAL_TIMEOUT_S)
        late = ""
    except subprocess.TimeoutExpired:
        # SIGTERM, as CI's own timeout would: the rehearsal stops every server it started, then says where it was
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        late = f"the rehearsal ran past {REHEARSAL_TIMEOUT_S} s and was stopped\n"
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in work.glob("*.log"))
    assert process.returncode == 0 and not late, f"{late}{stderr[-4000:]}\n{logs}"
    out = json.loads(stdout)
    out["logs"] = logs
    return dict(out)


def test_every_deployment_is_registered_and_a_run_of_each_completes(rehearsal: dict) -> None:
    import yaml

    declared = {d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    registered = {name.split("/", 1)[1] for name in rehearsal["deployments"]}
    assert registered == declared
    ran = {name.split("/", 1)[1]: run for name, run in rehearsal["runs"].items()}
    assert set(ran) == declared
    not_done = {n: r for n, r in ran.items() if r["state"] != "Completed"}
    assert not not_done, f"{not_done}\n{rehearsal['logs']}"
    assert all(r["from_deploy_s"] > rehearsal["deploy_s"] > 0 for r in ran.values())


def test_the_weekly_cycle_gates_releases_to_production_and_watches_it_there(rehearsal: dict) -> None:
    gate = rehearsal["cycle"]["gate"]
    assert gate["passed"], gate["reason"]
    assert {"phase-gate", "release", "measurement-suite"} <= set(rehearsal["cycle_subflows"])
    production = rehearsal["urls"]["serve"]
    # gated on its own temporary app, decided by the policy (the weekly cycle needs no approval), then released
    assert gate["gated_at"].startswith(production + "/gate-") and gate["decided_by"] == "policy"
    assert gate["passed"] and gate["promoted"] and gate["released_to"] == production
    window = gate["risk_window"]
    assert window["throughput_rps"] > 0 and window["error_rate"] == 0.0 and not gate["rolled_back"]
    assert gate["benchmark_run"]  # the release's benchmark, production's new baseline
    # the completion criterion "monitoring coverage > 95%", measured on production for the release that stays
    assert gate["monitoring"]["meets"], gate["monitoring"]
    # before changing anything the cycle measured that Prometheus holds every series the policy requires
    assert rehearsal["cycle"]["monitoring_checked"].startswith("monitoring coverage of inferops is 100%")
    # the release wrote production's alert rules, and the rehearsal's Prometheus loaded them, every one healthy
    rules = rehearsal["prometheus_rules"]
    assert rules["files"] == [rehearsal["cycle"]["monitoring_rules"]]
    assert {"ServeP99OverSLA", "ServeP99OffBaseline", "ServiceUnavailable", "AccuracyFidelityLow"} <= set(
        rules["alerts"]
    )
    assert "inferops:serve_p99_ms:5m" in rules["recording"] and rules["unhealthy"] == []


def rehearsal_policy(folder: Path) -> Policy:
    """The policy the rehearsal's runs read: its file over the packaged defaults."""
    path = folder / "policy.yaml"
    path.write_text(REHEARSAL_POLICY)
    return load_policy(path)


def test_the_weekly_cycle_run_again_measures_the_champion_it_served_like_for_like(
    rehearsal: dict, tmp_path: Path
) -> None:
    """The next Monday, through the same worker, against the champion the first run promoted and served: that champion,
    named as a candidate, is measured again beside the baseline (what serves now) within the run-to-run spread, and
    nothing is promoted."""
    again = rehearsal["cycle_again"]
    assert again["state"] == "Completed", again
    promoted = rehearsal["cycle"]["champion"]
    assert again["named"] == promoted == again["baseline"], again
    (control,) = again["candidates"]
    assert control["candidate"] == promoted and control["verdict"] == "A/A control", control
    # within the run-to-run spread, or under the smallest gain the search acts on when the repeats agree closer
    floor = rehearsal_policy(tmp_path).optimization.marginal_gain_stop
    assert abs(control["gain"]) <= max(control["spread"], floor), control
    assert control["reason"].endswith("like for like"), control
    assert again["champion"] is None and again["final_champion"] == f"unchanged ({promoted})"


def test_a_cycle_cancelled_from_the_ui_mid_trial_leaves_no_trial_app_and_production_untouched(
    rehearsal: dict,
) -> None:
    """Set to Cancelling, as the UI's Cancel does, while a serving trial's temporary app was RUNNING: the worker
    ends the run, its hooks remove what its cleanup did not reach and end its MLflow runs as KILLED."""
    cancelled = rehearsal["cancelled"]
    assert cancelled["trial_app_up"], cancelled  # a trial app was up when the run was cancelled
    assert cancelled["state"] == "Cancelled", cancelled
    assert not [a for a in cancelled["apps_after"] if a.startswith("trial-")], cancelled
    assert "inferops" in cancelled["apps_after"], cancelled
    statuses = cancelled["mlflow_runs"]
    assert "KILLED" in statuses.values() and "RUNNING" not in statuses.values(), statuses
    assert cancelled["production_after"] == cancelled["production_before"], cancelled


def test_a_release_waits_for_a_person_then_reaches_production(rehearsal: dict) -> None:
    release = rehearsal["release"]
    assert [a["deployment"] for a in rehearsal["approvals"]] == ["phase-gate/phase-gate"]
    assert release["decided_by"] == "human" and release["promoted"] and release["passed"]
    assert release["gated_at"].endswith("/gate-digits-cnn")  # never measured on production itself
    assert release["monitoring"]["meets"], release["monitoring"]  # its deployment passes Prometheus' address
    candidate = rehearsal["release_candidate"]
    assert release["served_version"] == candidate["version"]
    # what production answers with now is the approved candidate, by sha256
    assert rehearsal["production"]["sha256"] == candidate["sha256"]
    assert rehearsal["production"]["origin"] == f"models:/digits-cnn/{candidate['version']}"


def test_the_monitoring_deployment_finds_every_required_series_of_production(rehearsal: dict) -> None:
    """Read from the rehearsal's real Prometheus scraping production's Ray node: every series the policy requires
    of a CPU deployment exists (GPU series are not applicable here), the accuracy-fidelity gauge included."""
    monitoring = rehearsal["monitoring"]
    assert monitoring.get("missing") == [], monitoring
    assert monitoring["coverage"] == 1.0
    assert set(monitoring["by_layer"]) == {"business", "application", "system", "infrastructure"}


def test_a_slowed_champion_is_rolled_back_by_the_alert_chain_without_a_person(rehearsal: dict) -> None:
    """Prometheus fires ServeP99OffBaseline on the served latency of a slowed champion, Alertmanager notifies the
    receiver, the receiver starts a run of remediation-on-alert, the run rolls the registry and the endpoint back:
    the rehearsal itself only promoted the slowed version and sent requests."""
    fix = rehearsal["remediation"]
    slowed, before, after = fix["slowed"], fix["before"], fix["after"]
    assert slowed["call_ms"] > fix["threshold_ms"]  # the slowed version is really slower than the threshold
    assert slowed["previous_champion"] == before["registry_version"] and slowed["how"] == "switch"
    assert fix["run"]["state"] == "Completed", f"{fix}\n{rehearsal['logs']}"
    # in order: the alert fired, then the run started, then production was back on the release before
    assert (
        fix["firing_s"] is not None and fix["run_started_s"] is not None and fix["rolled_back_s"] is not None
    ), fix
    assert fix["firing_s"] <= fix["run_started_s"] <= fix["rolled_back_s"]
    assert after["sha256"] == before["sha256"] and after["registry_version"] == before["registry_version"]
    done = fix["result"]
    assert done["action"] == "rollback" and done["done"] and done["endpoint"]["switched"]
    assert done["registry"]["from_version"] == slowed["version"]
    assert done["registry"]["to_version"] == before["registry_version"]
    assert "ServeP99OffBaseline" in done["reason"] and done["mlflow_run"]
    assert (
        f"remediation run {fix['run']['flow_run']}" in fix["receiver_log"]
    )  # the receiver says what it started
    # recorded in MLflow with the alert that caused it, and the Prefect run that carried it out
    tags = fix["recorded"]["tags"]
    assert fix["recorded"]["status"] == "FINISHED"
    assert tags["inferops.kind"] == "remediation" and tags["inferops.alert"] == "ServeP99OffBaseline"
    assert tags["inferops.retention_class"] == "rollback_records"
    assert tags["inferops.prefect.flow_run_id"] == fix["run"]["flow_run"]
    # the alert opened its incident at its level (critical: L2), and inferops mitigated it: the automation rate and
    # MTTR are computed from these steps
    incident = fix["incident"]
    assert (
        incident["level"] == "L2"
        and incident["state"] == "mitigated"
        and incident["mitigated by"] == "inferops"
    )
    assert incident["source"].endswith(done["reason"].split("fired ", 1)[1].split(")", 1)[0])


def test_resolving_an_incident_triggers_a_risk_assessment_of_its_model(rehearsal: dict) -> None:
    risk = rehearsal["risk"]
    assert risk["resolved"]["state"] == "resolved", risk
    assert risk["run"]["state"] == "Completed", f"{risk}\n{rehearsal['logs']}"
    # the trigger passed the incident's model from the event; the deployment's variables gave the rest
    assert risk["parameters"]["model"] == risk["resolved"]["model"] == risk["model"]
    assert {r["risk"] for r in risk["table"]} >= {"inference performance decline", "model accuracy drift"}
    assert risk["mlflow_run_id"] and risk["triggered_after_s"] < 180
