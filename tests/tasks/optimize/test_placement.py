"""Where the model level is timed: as a Ray task beside production's replica when a serving cluster is connected,
else in this process; the figures name the host, node and device; the plan follows the GPUs the placement holds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serving.app import PRODUCTION_APP
from tasks.optimize.candidates import Candidate, plan_candidates
from tasks.optimize.placement import Placement, artifact_here, measure_at, place_timing
from tasks.optimize.serving_search import remove_app
from tasks.policy import default_policy

SERVED = Candidate("onnx-fp32", "onnx-fp32", "baseline", "baseline", 1, 8)


def test_without_a_ray_cluster_the_model_level_is_timed_in_this_process() -> None:
    import subprocess
    import sys

    code = (
        "from tasks.optimize.placement import place_timing; w = place_timing(); "
        "print(w.on_cluster, w.on_gpu, '|', w.reason)"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == (
        "False None | no Ray cluster is connected (RAY_ADDRESS unset): timed in this process"
    )
    measured = measure_at(Placement.here("test"), "digits-cnn", SERVED, 1, default_policy().optimization)
    assert measured.details["timed_in_pid"] == os.getpid()
    assert measured.details["measured_on"].endswith("(CPUExecutionProvider on CPU)")


@pytest.mark.usefixtures("ray_session")
def test_beside_production_the_model_level_is_a_ray_task_on_the_replicas_node() -> None:
    import ray

    from serving.app import run_local

    args = default_policy().app_args(model="digits-cnn", allow_anonymous=True, num_cpus=0)
    run_local(args, name=PRODUCTION_APP, timeout_s=120)
    try:
        where = place_timing()
        node = ray.get_runtime_context().get_node_id()
        assert where.on_cluster and where.node_id == node and where.num_gpus == 0 and where.on_gpu is False
        assert "beside inferops's InferenceIngress replica" in where.reason and "on its CPUs" in where.reason
        measured = measure_at(where, "digits-cnn", SERVED, 2, default_policy().optimization)
    finally:
        remove_app(PRODUCTION_APP)
    assert measured.details["timed_in_pid"] != os.getpid()  # a Ray worker timed it, not this process
    assert f"Ray node {node[:12]}, CPUExecutionProvider on CPU" in measured.details["measured_on"]
    assert len(measured.trial.throughput) == 2 and measured.trial.median_throughput > 0
    assert artifact_here(measured, where) is measured  # the node shares this host's data dir: the same file


def test_the_app_stood_beside_is_the_one_serving_the_url() -> None:
    from tasks.optimize.placement import served_app

    apps = {
        "inferops": {"route_prefix": "/"},
        "knobs": {"route_prefix": "/knobs"},
        "gate-x": {"route_prefix": "/gate-x"},
    }
    assert served_app(apps, "http://127.0.0.1:8000/knobs/") == "knobs"
    assert served_app(apps, "http://127.0.0.1:8000") == "inferops"
    assert served_app({"prod": {"route_prefix": "/"}}, "http://h:8000/") == "prod"
    assert served_app({}, None) == PRODUCTION_APP


def test_the_plan_holds_gpu_variants_when_the_placement_holds_a_gpu_whatever_this_process_has() -> None:
    gpu_variants = {"torch-fp16-cuda", "torch-bf16-cuda", "onnx-fp16", "trt-fp16"}
    on_gpu = {c.variant for c in plan_candidates("digits-cnn", SERVED, on_gpu=True)}
    on_cpu = {c.variant for c in plan_candidates("digits-cnn", SERVED, on_gpu=False)}
    assert gpu_variants <= on_gpu and not gpu_variants & on_cpu
    assert on_gpu - gpu_variants == on_cpu and "onnx-int8-dynamic" in on_cpu


@pytest.mark.usefixtures("ray_session")
def test_an_artifact_that_is_not_what_was_timed_is_refused_and_nothing_half_written_stays(
    tmp_path: Path,
) -> None:
    """The registry uploads the file timed on the node; bytes that are not the ones timed (a file changed under the
    cycle) are refused naming the fix, and no partial copy is left in the models dir."""
    import ray

    from serving.settings import get_settings

    measured = measure_at(Placement.here("test"), "digits-cnn", SERVED, 1, default_policy().optimization)
    changed = tmp_path / measured.path.name
    shutil.copy(measured.path, changed)
    changed.write_bytes(changed.read_bytes() + b"\0")
    node = ray.get_runtime_context().get_node_id()
    where = Placement(True, "test", node, "127.0.0.1")
    stale = type(measured)(**{**measured.__dict__, "path": changed})
    with pytest.raises(RuntimeError, match="is not the artifact timed there .* run the cycle again"):
        artifact_here(stale, where)
    fetched = get_settings().models_dir / "from-cluster" / measured.sha256[:16]
    assert not list(fetched.glob("*")), list(fetched.glob("*"))


def test_the_device_a_figure_came_from_is_named_for_people() -> None:
    from tasks.optimize.placement import device_of

    assert device_of("CPUExecutionProvider") == "CPUExecutionProvider on CPU"
    assert device_of("torch-cpu") == "torch-cpu on CPU"
    for gpu in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "torch-cuda"):
        assert device_of(gpu).startswith(gpu) and not device_of(gpu).endswith("on CPU")
