"""Project promises: prefect.yaml deployments point at real flows (infra/ is validated in tests/infra)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_every_deployment_entrypoint_is_a_flow_with_those_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        names.add(deployment["name"])
        path, func = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        assert hasattr(flow, "fn"), f"{deployment['entrypoint']} is not a Prefect flow"
        accepted = set(flow.parameters.properties)
        unknown = set(deployment.get("parameters", {})) - accepted
        assert not unknown, f"{deployment['name']}: parameters {unknown} not accepted by {func}"
    assert {"optimization-cycle-weekly", "phase-gate"} <= names
    # the seed's capacity cadence: trends quarterly, the capacity model half-yearly, the plan yearly
    by_name = {d["name"]: d for d in spec["deployments"]}
    cadence = {
        "capacity-trends-quarterly": ("trends", "0 6 1 1,4,7,10 *"),
        "capacity-model-half-yearly": ("capacity-model", "0 7 1 1,7 *"),
        "capacity-plan-yearly": ("plan", "0 8 1 1 *"),
    }
    for name, (stage, cron) in cadence.items():
        assert by_name[name]["parameters"]["stage"] == stage
        assert by_name[name]["schedules"][0]["cron"] == cron and by_name[name]["schedules"][0]["timezone"]
    assert by_name["capacity-plan-yearly"]["parameters"]["apply"] is True


def test_deployments_take_where_production_is_from_prefect_variables_and_gate_what_they_change() -> None:
    """No host-only URL is baked into a deployment; the weekly cycle gates before it changes production, and the
    on-demand gate serves its candidate itself (no `url`) and releases to production."""
    text = (ROOT / "prefect.yaml").read_text()
    spec = yaml.safe_load(text)
    params = {d["name"]: d.get("parameters", {}) for d in spec["deployments"]}
    flat = yaml.safe_dump(params)
    assert "127.0.0.1" not in flat and "localhost" not in flat
    assert params["optimization-cycle-weekly"]["gate"] is True
    assert params["optimization-cycle-weekly"]["url"] == "{{ prefect.variables.inferops_endpoint_url }}"
    assert (
        params["optimization-cycle-weekly"]["prometheus"] == "{{ prefect.variables.inferops_prometheus_url }}"
    )
    gate = params["phase-gate"]
    assert "url" not in gate and gate["production_url"] == "{{ prefect.variables.inferops_endpoint_url }}"
    assert gate["require_approval"] is True
    assert (
        params["stability-test-quarterly"]["metrics_url"] == "{{ prefect.variables.inferops_prometheus_url }}"
    )
    for name in ("capacity-trends-quarterly", "capacity-model-half-yearly", "capacity-plan-yearly"):
        assert params[name]["prometheus"]["url"] == "{{ prefect.variables.inferops_prometheus_url }}"
    assert params["capacity-plan-yearly"]["url"] == "{{ prefect.variables.inferops_endpoint_url }}"
    assert params["monitoring-5min"]["prometheus"] == "{{ prefect.variables.inferops_prometheus_url }}"
    for variable in ("inferops_endpoint_url", "inferops_prometheus_url"):
        assert f"prefect variable set {variable}" in text  # how to set it is documented beside its use


def test_tests_never_use_the_users_prefect_home() -> None:
    """Flow runs in tests (and in the subprocesses they start) land in a temporary Prefect home, never ~/.prefect."""
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value()).resolve()
    assert home != (Path.home() / ".prefect").resolve() and "inferops-test-prefect-home" in home.name


def _requirements(name: str) -> list[Any]:
    """The installed distribution's own requirements that apply here with no extra asked for."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    try:
        listed = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    reqs = [Requirement(r) for r in listed]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def test_onnx_runtime_comes_from_exactly_one_extra() -> None:
    """The CPU and GPU wheels of ONNX Runtime install the same module: the `gpu` extra must not find the CPU one
    already there, from inferops' base requirements or anything they pull in."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [Requirement(r) for r in project["dependencies"]]
    extras = {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}
    assert [r.name for r in extras["cpu"]] == ["onnxruntime"]
    gpu = {r.name: r for r in extras["gpu"]}
    assert "onnxruntime" not in gpu and set(gpu) == {"onnxruntime-gpu", "tensorrt-cu12"}
    assert all(str(r.specifier).startswith("==") for r in gpu.values()), "the ORT/TensorRT pair is pinned"
    # nothing the base requirements pull in (as installed here) requires the CPU build either
    seen: set[str] = set()
    todo = [r.name for r in base if r.marker is None or r.marker.evaluate({"extra": ""})]
    pulls_cpu_ort = []
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for req in _requirements(name):
            if canonicalize_name(req.name) == "onnxruntime":
                pulls_cpu_ort.append(name)
            todo.append(req.name)
    assert "onnxruntime" not in {canonicalize_name(r.name) for r in base}
    assert pulls_cpu_ort == [], f"these base requirements pull in the CPU onnxruntime: {pulls_cpu_ort}"
    assert len(seen) > 50  # the walk did reach the installed tree (torch, ray, prefect, mlflow, ...)
