"""The manifests under infra/ validate: compose against the compose spec, Kubernetes objects against their
vendored schemas, Prometheus and Alertmanager configs with promtool and amtool; broken ones are refused by name."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.checks import (
    ALERTMANAGER,
    COMPOSE,
    ENV_EXAMPLE,
    INFRA,
    PROMETHEUS,
    RAYSERVICE,
    ROOT,
    SCHEMAS,
    SECRET,
    WORKER,
    compose_cli,
    compose_doc,
    compose_problems,
    containers,
    env_file,
    find_tool,
    interpolate,
    interpolation_names,
    kubernetes_errors,
    load_yaml,
    schema,
    schema_errors,
    tool_env,
    without,
)

# Every file under infra/ and the test that validates it (test_every_infra_file_is_validated holds this to the tree).
VALIDATED_BY = {
    "alertmanager/alertmanager.yml": "test_manifests::test_alertmanager_config_passes_amtool",
    "compose/docker-compose.yaml": "test_manifests::test_compose_file_matches_the_compose_spec",
    "compose/.env.example": "test_manifests::test_compose_variables_all_come_from_the_env_example",
    "compose/.gitignore": "test_manifests::test_the_filled_in_env_file_is_never_committed",
    "docker/Dockerfile": "test_images::test_hadolint_passes_on_every_dockerfile",
    "docker/Dockerfile.gpu": "test_images::test_hadolint_passes_on_every_dockerfile",
    "docker/Dockerfile.mlflow": "test_images::test_hadolint_passes_on_every_dockerfile",
    "kuberay/rayservice.yaml": "test_manifests::test_kubernetes_manifests_match_their_schemas",
    "kuberay/secret.example.yaml": "test_manifests::test_kubernetes_manifests_match_their_schemas",
    "prefect/worker.yaml": "test_manifests::test_kubernetes_manifests_match_their_schemas",
    "prometheus/prometheus.yml": "test_manifests::test_prometheus_config_passes_promtool",
    "schemas/README.md": "test_manifests::test_vendored_schemas_are_schemas_with_their_source_noted",
    "schemas/compose-spec.json": "test_manifests::test_vendored_schemas_are_schemas_with_their_source_noted",
    "schemas/deployment-apps-v1.json": "test_manifests::test_vendored_schemas_are_schemas_with_their_source_noted",
    "schemas/rayservice-ray.io-v1.json": "test_manifests::test_vendored_schemas_are_schemas_with_their_source_noted",
    "schemas/secret-v1.json": "test_manifests::test_vendored_schemas_are_schemas_with_their_source_noted",
}
PROMETHEUS_MISSING = (
    "promtool not installed (Debian package `prometheus`; `make test-tools` installs it as root)"
)
AMTOOL_MISSING = (
    "amtool not installed (Debian package `prometheus-alertmanager`; `make test-tools` installs it as root)"
)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=tool_env())


def _tool(name: str, missing: str) -> str:
    found = find_tool(name)
    if found is None:
        pytest.skip(missing)
    return found


def test_every_infra_file_is_validated() -> None:
    files = {
        str(p.relative_to(INFRA)) for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert files - set(VALIDATED_BY) == set(), "files under infra/ no test validates: add a check and list it"
    assert set(VALIDATED_BY) - files == set(), "VALIDATED_BY names files that are gone"
    for path, test in VALIDATED_BY.items():
        module, function = test.split("::")
        assert callable(getattr(importlib.import_module(f"tests.infra.{module}"), function, None)), (
            path,
            test,
        )


def test_no_python_under_infra() -> None:
    """infra/ holds manifests only (STYLE.md): the checks live in tests/infra."""
    assert not list(INFRA.rglob("*.py"))


# --- compose ---------------------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    doc = compose_doc()
    assert schema_errors(doc, schema("compose-spec.json")) == []
    assert compose_problems(doc) == []


def test_compose_runs_the_whole_stack_with_healthchecks() -> None:
    services = compose_doc()["services"]
    expected = {"prefect-db", "prefect-server", "prefect-worker", "mlflow-db", "mlflow", "prometheus"}
    assert expected | {"alertmanager", "ray-head", "ray-worker"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
    assert " ".join(services["ray-head"]["command"]).startswith("ray start --head --block")
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    assert "--block" in services["ray-worker"]["command"]
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    worker = services["prefect-worker"]
    pool = worker["command"][worker["command"].index("--pool") + 1]
    prefect_pools = {d["work_pool"]["name"] for d in load_yaml(ROOT / "prefect.yaml")["deployments"]}
    k8s_command = next(c for _, c in containers(load_yaml(WORKER)))["command"]
    assert {pool} == prefect_pools == {k8s_command[k8s_command.index("--pool") + 1]} == {"inferops-pool"}
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert prefect_db.startswith("postgresql+asyncpg://") and "@prefect-db:" in prefect_db


def test_mlflow_has_a_postgres_backend_and_its_driver() -> None:
    mlflow = compose_doc()["services"]["mlflow"]
    backend = next(a for a in mlflow["command"] if a.startswith("--backend-store-uri="))
    assert backend.split("=", 1)[1].startswith("postgresql+psycopg2://") and "@mlflow-db:" in backend
    dockerfile = (COMPOSE.parent / mlflow["build"]["context"] / mlflow["build"]["dockerfile"]).resolve()
    assert "psycopg2-binary==" in dockerfile.read_text()


def test_compose_variables_all_come_from_the_env_example() -> None:
    names = interpolation_names(COMPOSE.read_text())
    example = env_file(ENV_EXAMPLE)
    required = {name for name, defaulted in names.items() if not defaulted}
    assert required - set(example) == set(), "variables the compose file needs that .env.example lacks"
    assert set(example) - set(names) == set(), ".env.example sets variables the compose file never reads"
    for name, value in example.items():
        if name.endswith(("PASSWORD", "KEYS", "KEY")):
            assert value.startswith("change-me"), f"{name} in .env.example must be a change-me placeholder"


def test_compose_hard_codes_no_credentials() -> None:
    raw = load_yaml(COMPOSE)
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if key.endswith(("PASSWORD", "_KEYS", "_KEY")):
                assert str(value).startswith("${"), f"{name}.{key} is hard-coded; take it from .env"
    assert "change-me" not in yaml.safe_dump(raw)


def test_the_filled_in_env_file_is_never_committed() -> None:
    probe = subprocess.run(
        ["git", "check-ignore", "-q", str(ENV_EXAMPLE.with_name(".env"))],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert probe.returncode == 0, "infra/compose/.env must be git-ignored (infra/compose/.gitignore)"


def test_compose_without_a_required_variable_is_refused() -> None:
    env = env_file(ENV_EXAMPLE)
    del env["MLFLOW_DB_PASSWORD"]
    with pytest.raises(ValueError, match="MLFLOW_DB_PASSWORD"):
        interpolate(load_yaml(COMPOSE), env)


def test_compose_service_without_image_or_build_is_refused() -> None:
    doc = compose_doc()
    broken = without(without(doc, "services", "ray-worker", "image"), "services", "ray-worker", "build")
    assert schema_errors(broken, schema("compose-spec.json")) == []  # the spec allows it; compose does not
    assert compose_problems(broken) == ["services.ray-worker: neither `image` nor `build` is set"]
    unhealthy = without(doc, "services", "ray-head", "healthcheck")
    assert any("ray-head has no healthcheck" in p for p in compose_problems(unhealthy))


def test_compose_with_a_misspelt_key_is_refused() -> None:
    doc = compose_doc()
    doc["services"]["mlflow"]["helthcheck"] = doc["services"]["mlflow"].pop("healthcheck")
    errors = schema_errors(doc, schema("compose-spec.json"))
    assert errors and errors[0].startswith("services.mlflow:") and "'helthcheck'" in errors[0]


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    command, why = compose_cli()
    if command is None:
        pytest.skip(why)
    result = _run(
        [*command, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "--profile", "gpu", "config", "-q"]
    )
    assert result.returncode == 0, result.stderr


# --- Kubernetes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [RAYSERVICE, SECRET, WORKER], ids=lambda p: p.name)
def test_kubernetes_manifests_match_their_schemas(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(docs)
    for doc in docs:
        assert kubernetes_errors(doc) == []


def _rayservice() -> dict[str, Any]:
    return load_yaml(RAYSERVICE)


def test_rayservice_serve_config_is_valid_for_ray_serve() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(_rayservice()["spec"]["serveConfigV2"]))
    assert [app.name for app in config.applications] == ["inferops"]


def test_rayservice_requests_a_gpu_per_replica_from_the_gpu_group() -> None:
    spec = _rayservice()["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    app = serve["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "InferenceIngress")
    assert ingress["ray_actor_options"]["num_gpus"] >= 1 and app["args"]["num_gpus"] >= 1
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replica lands on the head
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        for c in g["template"]["spec"]["containers"]
        if int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
    ]
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert all(
        g["template"]["spec"]["containers"][0]["image"].startswith("ghcr.io/inferops/inferops-gpu:")
        for g in gpu_groups
    )


def test_keys_come_from_the_secret_on_every_serving_container() -> None:
    secret = load_yaml(SECRET)
    keys = set(secret["stringData"])
    # server (Ray nodes) and client (the Prefect worker's flows) read the same two variables from the same keys
    for where, container in [*containers(_rayservice()), *containers(load_yaml(WORKER))]:
        env = {e["name"]: e for e in container.get("env", [])}
        for name, key in (("INFEROPS_API_KEYS", "api-keys"), ("INFEROPS_ADMIN_KEYS", "admin-keys")):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": secret["metadata"]["name"], "key": key} and key in keys, (where, name)
    assert all(v.startswith("change-me") for v in secret["stringData"].values())
    assert "kubectl create secret generic inferops-keys" in SECRET.read_text()


def test_rayservice_without_cluster_config_is_refused() -> None:
    errors = kubernetes_errors(without(_rayservice(), "spec", "rayClusterConfig"))
    assert errors == ["spec: 'rayClusterConfig' is a required property"]


def test_rayservice_with_a_misspelt_field_or_bad_quantity_is_refused() -> None:
    doc = _rayservice()
    head = doc["spec"]["rayClusterConfig"]["headGroupSpec"]
    head["rayStartParam"] = head.pop("rayStartParams")
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"][
        "limits"
    ]["nvidia.com/gpu"] = "one"
    errors = kubernetes_errors(doc)
    assert any(
        e.startswith("spec.rayClusterConfig.headGroupSpec:") and "'rayStartParam'" in e for e in errors
    )
    assert any("limits.nvidia.com/gpu" in e for e in errors), errors


def test_deployment_without_containers_or_with_unknown_fields_is_refused() -> None:
    errors = kubernetes_errors(without(load_yaml(WORKER), "spec", "template", "spec", "containers"))
    assert errors == ["spec.template.spec: 'containers' is a required property"]
    doc = load_yaml(WORKER)
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert any("'imagePullPolicyy'" in e for e in kubernetes_errors(doc))


def test_secret_with_a_non_string_value_is_refused() -> None:
    doc = load_yaml(SECRET)
    doc["stringData"]["api-keys"] = 42
    assert kubernetes_errors(doc) == ["stringData.api-keys: 42 is not of type 'string', 'null'"]


# --- Prometheus and Alertmanager -------------------------------------------------------------------------------


def test_prometheus_config_passes_promtool() -> None:
    promtool = _tool("promtool", PROMETHEUS_MISSING)
    result = _run([promtool, "check", "config", str(PROMETHEUS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_loads_the_rules_the_worker_writes_where_compose_mounts_them() -> None:
    """The rules are not a hand-kept file: the cycle writes <app>-<model>.rules.yml into the worker's data dir (its
    `monitoring/` folder), and compose mounts that volume into Prometheus where prometheus.yml looks for them."""
    config = load_yaml(PROMETHEUS)
    services = compose_doc()["services"]
    worker, prometheus = services["prefect-worker"], services["prometheus"]
    data_dir = worker["environment"]["INFEROPS_DATA_DIR"]
    volume = next(v.split(":")[0] for v in worker["volumes"] if v.split(":")[1] == data_dir)
    mounted = next(v.split(":")[1] for v in prometheus["volumes"] if v.split(":")[0] == volume)
    assert config["rule_files"] == [f"{mounted}/monitoring/*.rules.yml"]
    assert "--web.enable-lifecycle" in prometheus["command"]  # the cycle reloads it after writing the rules
    hosts = {
        t.split(":")[0]
        for job in config["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
    }
    assert hosts <= set(services)  # no exporter outside the stack: the replicas export their GPU series
    am_hosts = {
        t.split(":")[0]
        for am in config["alerting"]["alertmanagers"]
        for t in am["static_configs"][0]["targets"]
    }
    assert am_hosts <= set(services)


def test_prometheus_config_with_a_missing_rule_file_is_refused(tmp_path: Path) -> None:
    promtool = _tool("promtool", PROMETHEUS_MISSING)
    config = load_yaml(PROMETHEUS)
    config["rule_files"] = ["/etc/prometheus/alerts.yml"]  # the old absolute path: absent where promtool runs
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump(config))
    result = _run([promtool, "check", "config", str(broken)])
    assert result.returncode != 0 and "/etc/prometheus/alerts.yml" in result.stdout + result.stderr


def test_alertmanager_config_passes_amtool() -> None:
    amtool = _tool("amtool", AMTOOL_MISSING)
    result = _run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_yaml(ALERTMANAGER)
    services = compose_doc()["services"]
    for receiver in config["receivers"]:
        webhook = receiver["webhook_configs"][0]
        assert webhook["url"] == "http://alert-receiver:9095/alerts"
        assert (
            webhook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/alert_receiver_token"
        )
    assert "alert_receiver_token" in services["alertmanager"]["secrets"]
    assert "/run/secrets/alert_receiver_token" in services["alert-receiver"]["command"]
    assert config["inhibit_rules"] and config["route"]["group_by"]


def test_the_alertmanager_config_is_the_one_inferops_renders_from_the_policy() -> None:
    """Kept in sync: regenerate with `inferops alerts config --webhook-url http://alert-receiver:9095/alerts
    --credentials-path /run/secrets/alert_receiver_token --out infra/alertmanager/alertmanager.yml`."""
    from tasks.monitoring.alertmanager import alertmanager_yaml, render_alertmanager
    from tasks.policy import load_policy

    policy = load_policy()
    rendered = render_alertmanager(
        policy,
        webhook_url="http://alert-receiver:9095/alerts",
        bearer_token_file="/run/secrets/alert_receiver_token",
    )
    assert ALERTMANAGER.read_text() == alertmanager_yaml(rendered, policy), self_doc()


def self_doc() -> str:
    return test_the_alertmanager_config_is_the_one_inferops_renders_from_the_policy.__doc__ or ""


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=emergency", "type=business"], "inferops-emergency"),
        (["severity=critical", "type=threshold"], "inferops-critical"),
        (["severity=warning", "type=trend"], "inferops-warning"),
        (["alertname=FromAnotherRulesFile"], "inferops-warning"),  # no known severity: still reaches someone
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    amtool = _tool("amtool", AMTOOL_MISSING)
    result = _run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
    assert result.returncode == 0 and result.stdout.split() == [receiver], result.stdout + result.stderr


def test_alertmanager_route_to_an_undefined_receiver_is_refused(tmp_path: Path) -> None:
    amtool = _tool("amtool", AMTOOL_MISSING)
    config = load_yaml(ALERTMANAGER)
    config["route"]["routes"][0]["receiver"] = "pager-duty"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config))
    result = _run([amtool, "check-config", str(broken)])
    assert result.returncode != 0 and 'undefined receiver "pager-duty"' in result.stdout + result.stderr


# --- the vendored schemas --------------------------------------------------------------------------------------


def test_vendored_schemas_are_schemas_with_their_source_noted() -> None:
    import jsonschema

    readme = (SCHEMAS / "README.md").read_text()
    for path in sorted(SCHEMAS.glob("*.json")):
        doc = schema(path.name)
        jsonschema.validators.validator_for(doc).check_schema(doc)
        assert f"`{path.name}`" in readme, f"infra/schemas/README.md must say where {path.name} comes from"
    for version in ("KubeRay v1.7.0", "Kubernetes v1.37.0", "commit 170098ba"):
        assert version in readme
