"""The prepared GPU check: inferops' PyTorch engine on CUDA in FP32 / FP16 / BF16, then behind the serving batcher.

    .venv/bin/python benchmarks/gpu.py --prepare     # here, once: writes the bundle .gpu/ the check carries
    python3 benchmarks/gpu.py --out "$OUT"           # on the GPU box (device tool: carry [".gpu"])

The GPU box has torch (CUDA), transformers, tokenizers, numpy and nvidia-ml-py, but no Ray, Prefect, MLflow, pydantic
or the minilm wheel, and at most 64 MiB travels with the check. So `--prepare` writes what the box lacks into
`.gpu/`: the minilm folder with its weights stored as FP16 (45 MB; the FP32 file is 87 MiB), the trained digits-cnn
state dict, the inputs, and the reference outputs computed here on the CPU in FP32 from the original FP32 weights.
Fidelity on the box is measured against those references, so it counts both the FP16 storage of the weights (the
`fp32` rows show that alone) and the arithmetic of each precision.

On the box, for minilm and digits-cnn and each precision: a PyTorch artifact with its manifest and sha256, opened
with `serving.engines.load_engine(device="cuda", precision=...)` (SDPA attention for the transformer), then items/s
and P50/P99 per call at batch 1/8/32/128 (tokenizing included: what a replica pays per batch), mean and minimum
cosine to the CPU FP32 reference, peak GPU memory, and an NVML sample (utilisation, memory, temperature, power)
taken during the timing; FP16 also through `torch.compile(dynamic=True)` beside eager, to see whether compiling
helps (`--no-compile` leaves it out); ONNX Runtime's CUDA / TensorRT providers where that onnxruntime build has
them. Then the
fastest faithful minilm engine behind the serving app's batching code (`serving.batching`: length buckets and one
engine call per bucket) with an in-process batcher (max batch, wait window) under open-loop Poisson load at three
rates set from its measured batch-32 throughput. One table is printed; it and a JSON copy go to `--out` (or $OUT).
Without a GPU the script prints what it would run and why it does not, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
    sys.path[0] = str(ROOT)

from serving.artifacts import sha256_file  # noqa: E402 (after the path fix above)

BUNDLE = ROOT / ".gpu"
BUNDLE_FORMAT = 1
CARRY_LIMIT_BYTES = 64 * 2**20  # what the device tool lets travel with the working tree
MODELS = ("minilm", "digits-cnn")
PRECISIONS = ("fp32", "fp16", "bf16")
COMPILED = (
    "fp16+compile",
)  # torch.compile(dynamic=True) of the FP16 engine, measured beside eager, CUDA only
BATCHES = (1, 8, 32, 128)
SENTENCES = 512  # inputs per model in the bundle: fidelity is measured on all of them
CELL_S = 2.0  # timing per (model, precision, batch): at least MIN_CALLS calls, then until CELL_S has passed
MIN_CALLS, MAX_CALLS = 20, 2000
WARMUP_CALLS = 5
FIDELITY_FLOOR = 0.99  # mean cosine to the FP32 reference that a precision must keep to be served
BATCHER_SHARES = (0.25, 0.5, 0.9)  # offered load as shares of the engine's batch-32 throughput
BATCHER_S = 4.0
BATCHER_MAX_BATCH, BATCHER_WAIT_S = 32, 0.002
NVML_PERIOD_S = 0.2


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs: the check's figures, or a short rehearsal of every step."""

    cell_s: float = CELL_S
    min_calls: int = MIN_CALLS
    warmup_calls: int = WARMUP_CALLS
    fidelity_inputs: int | None = None  # None: every input of the bundle
    batcher_s: float = BATCHER_S
    batches: tuple[int, ...] = BATCHES


QUICK = Budget(cell_s=0.2, min_calls=3, warmup_calls=1, fidelity_inputs=64, batcher_s=0.5)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def bundle_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- --prepare: here, on the CPU machine -------------------------------------------------------------------


def prepare(bundle: Path, inputs_n: int = SENTENCES) -> dict[str, Any]:
    """Write the bundle the GPU box needs (atomically: a failed prepare leaves the old bundle as it was)."""
    import safetensors.torch
    import torch

    from serving.engines import load_engine
    from serving.variants import ensure_variant
    from serving.zoo import get_model, minilm_dir

    tmp = Path(tempfile.mkdtemp(prefix=".gpu-", dir=bundle.parent))
    try:
        source = minilm_dir()
        folder = tmp / "minilm"
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
        weights = safetensors.torch.load_file(str(source / "model.safetensors"))
        half = {k: (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
        safetensors.torch.save_file(half, str(folder / "model.safetensors"), metadata={"format": "pt"})
        log(f"minilm weights stored as FP16: {bundle_size(folder) / 2**20:.1f} MiB")

        sentences = list(get_model("minilm").example_inputs(inputs_n))
        (tmp / "minilm-inputs.json").write_text(json.dumps(sentences), encoding="utf-8")
        reference = load_engine(ensure_variant("minilm", "torch-fp32").path).infer(sentences)
        np.save(tmp / "minilm-reference.npy", reference.astype(np.float32))

        digits = ensure_variant("digits-cnn", "torch-fp32")
        shutil.copyfile(digits.path, tmp / "digits-cnn.pt")
        inputs = np.asarray(get_model("digits-cnn").example_inputs(inputs_n), dtype=np.float32)
        np.save(tmp / "digits-cnn-inputs.npy", inputs)
        np.save(tmp / "digits-cnn-reference.npy", load_engine(digits.path).infer(inputs).astype(np.float32))

        info = {
            "format": BUNDLE_FORMAT,
            "made_on": platform.node(),
            "torch": torch.__version__,
            "minilm_source_sha256": sha256_file(source / "model.safetensors"),
            "minilm_weights": "fp16 (cast from the FP32 file above)",
            "reference": "CPU FP32 PyTorch outputs from the original FP32 weights",
            "files": {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        size = bundle_size(tmp)
        repo = tracked_bytes()
        if size + repo > CARRY_LIMIT_BYTES:
            raise SystemExit(
                f"the bundle ({size / 2**20:.1f} MiB) and the repository ({repo / 2**20:.1f} MiB) exceed the "
                f"{CARRY_LIMIT_BYTES / 2**20:.0f} MiB that travel with a device call; trim the bundle"
            )
        if bundle.exists():
            shutil.rmtree(bundle)
        tmp.rename(bundle)
        info["bytes"] = size
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tracked_bytes() -> int:
    """Bytes of the files git tracks (what travels beside the bundle)."""
    import subprocess

    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def load_bundle(bundle: Path) -> dict[str, Any]:
    """The bundle's index, each file checked against its sha256; a missing or stale bundle says how to make it."""
    index = bundle / "bundle.json"
    if not index.is_file():
        raise SystemExit(
            f"{index} is missing: run `.venv/bin/python benchmarks/gpu.py --prepare` on the CPU machine first, "
            "then carry .gpu with the device call"
        )
    info = json.loads(index.read_text(encoding="utf-8"))
    if info.get("format") != BUNDLE_FORMAT:
        raise SystemExit(
            f"{index} has format {info.get('format')}, this script reads {BUNDLE_FORMAT}: --prepare again"
        )
    for name, sha in info["files"].items():
        if sha256_file(bundle / name) != sha:
            raise SystemExit(f"{bundle / name} does not match its sha256 in {index}: --prepare again")
    return info


# ---- on the GPU box ------------------------------------------------------------------------------------------


@dataclass
class NvmlWatch:
    """NVML readings of the GPU every NVML_PERIOD_S in a thread, while a block of work runs."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> NvmlWatch:
        from serving.gpu import gpu_status, sample_gpus

        available, why = gpu_status()
        if not available:
            self.reason = why
            return self

        def run() -> None:
            while not self._stop.is_set():
                self.samples += [asdict(s) for s in sample_gpus()[:1]]
                self._stop.wait(NVML_PERIOD_S)

        self._thread = threading.Thread(target=run, name="nvml", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"reason": self.reason or "no NVML sample taken"}

        def peak(key: str) -> float | None:
            values = [s[key] for s in self.samples if s.get(key) is not None]
            return max(values) if values else None

        return {
            "gpu": self.samples[0]["name"],
            "samples": len(self.samples),
            "util_max_percent": peak("utilisation_percent"),
            "memory_used_max_mib": (peak("memory_used_bytes") or 0) / 2**20,
            "temperature_max_c": peak("temperature_c"),
            "power_max_w": peak("power_w"),
        }


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def write_torch_artifact(folder: Path, model: str, state: dict[str, Any]) -> Path:
    """The state dict as an inferops artifact (manifest + sha256), as the variant builder writes one."""
    import torch

    from serving.artifacts import write_artifact

    path = folder / f"{model}-torch.pt"
    write_artifact(
        path,
        lambda tmp: torch.save(state, tmp),
        {
            "model": model,
            "variant": "torch-fp32",
            "transform": "torch-state-dict",
            "source": "benchmarks/gpu.py",
        },
    )
    return path


def time_calls(
    infer: Callable[[Any], np.ndarray], batch: Any, n_items: int, budget: Budget
) -> dict[str, float]:
    """Per-call latency of `infer(batch)` (the engine returns host arrays: the device has finished)."""
    for _ in range(budget.warmup_calls):
        infer(batch)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < MAX_CALLS and (
        len(times) < budget.min_calls or time.perf_counter() - started < budget.cell_s
    ):
        t0 = time.perf_counter()
        infer(batch)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000.0
    return {
        "items_per_s": n_items * len(times) / float(np.sum(times)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": len(times),
    }


def measure_engine(engine: Any, inputs: Any, reference: np.ndarray, budget: Budget) -> dict[str, Any]:
    """Fidelity on every input, then the timing at each batch size, NVML watching, peak memory counted."""
    import torch

    cuda = engine.torch_device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(engine.torch_device)
    n = len(inputs) if budget.fidelity_inputs is None else budget.fidelity_inputs
    inputs, reference = inputs[:n], reference[:n]
    started = time.perf_counter()  # the first pass over the inputs: a compiled engine compiles here
    outputs = np.concatenate([engine.infer(inputs[i : i + 128]) for i in range(0, len(inputs), 128)])
    fidelity_pass_s = time.perf_counter() - started
    cos = cosine(outputs, reference)
    row: dict[str, Any] = {
        "describe": engine.describe(),
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "first_pass_s": fidelity_pass_s,
        "batches": {},
    }
    if engine.kind == "tensor":
        row["argmax_agreement"] = float((outputs.argmax(1) == reference.argmax(1)).mean())
    with NvmlWatch() as watch:
        for b in budget.batches:
            row["batches"][b] = time_calls(engine.infer, inputs[:b], b, budget)
    row["nvml"] = watch.summary()
    row["peak_memory_mib"] = torch.cuda.max_memory_allocated(engine.torch_device) / 2**20 if cuda else None
    return row


def ort_gpu_rows() -> list[dict[str, Any]]:
    """ONNX Runtime's GPU providers, where this onnxruntime build has them (the box's is the CPU build)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [{"provider": "onnxruntime", "skipped": "onnxruntime is not installed"}]
    have = ort.get_available_providers()
    return [
        {"provider": p, "skipped": f"this onnxruntime {ort.__version__} build has only {', '.join(have)}"}
        for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        if p not in have
    ]


@dataclass
class _Request:
    text: str
    length: int
    arrived: float
    done: asyncio.Future[float]


def batcher_run(engine: Any, sentences: list[str], rate: float, seconds: float, seed: int) -> dict[str, Any]:
    """Open-loop Poisson arrivals into an in-process batcher (up to BATCHER_MAX_BATCH requests or BATCHER_WAIT_S
    of waiting), each batch split by `serving.batching.plan_buckets` and run with `run_buckets`, as a replica's
    batch handler does; latency from arrival to answer."""
    from serving.batching import plan_buckets, run_buckets

    lengths = engine.token_lengths(sentences)
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 16)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < seconds]

    async def go() -> tuple[list[float], list[int], float]:
        queue: asyncio.Queue[_Request] = asyncio.Queue()
        sizes: list[int] = []
        loop = asyncio.get_running_loop()

        async def batcher() -> None:
            while True:
                first = await queue.get()
                items = [first]
                deadline = loop.time() + BATCHER_WAIT_S
                while len(items) < BATCHER_MAX_BATCH:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        items.append(await asyncio.wait_for(queue.get(), left))
                    except TimeoutError:
                        break
                plan = plan_buckets([it.length for it in items], call_overhead_tokens=32)
                await asyncio.to_thread(run_buckets, engine.infer_timed, [it.text for it in items], plan)
                now = time.perf_counter()
                sizes.append(len(items))
                for it in items:
                    it.done.set_result(now - it.arrived)

        worker = asyncio.create_task(batcher())
        start = time.perf_counter()
        waiting = []
        for i, offset in enumerate(offsets):
            delay = start + float(offset) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(sentences)
            request = _Request(sentences[k], lengths[k], start + float(offset), loop.create_future())
            queue.put_nowait(request)
            waiting.append(request.done)
        latencies = list(await asyncio.gather(*waiting))
        elapsed = time.perf_counter() - start
        worker.cancel()
        return latencies, sizes, elapsed

    latencies, sizes, elapsed = asyncio.run(go())
    ms = np.asarray(latencies) * 1000.0
    return {
        "offered_rps": rate,
        "requests": len(latencies),
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_batch": float(np.mean(sizes)),
    }


def ceiling_batch(batches: tuple[int, ...]) -> int:
    """The batch size whose throughput sets the batcher's load: the largest timed one the batcher can form."""
    formable = [b for b in batches if b <= BATCHER_MAX_BATCH]
    return max(formable) if formable else min(batches)


def run_check(
    bundle: Path,
    device: str = "cuda",
    budget: Budget = Budget(),
    models: tuple[str, ...] = MODELS,
    compiled: bool = True,
) -> dict[str, Any]:
    """Everything measured on the GPU, as plain data (the table and the JSON both come from it). `device="cpu"`
    with the QUICK budget rehearses every step on a machine without a GPU (its figures are no GPU figures)."""
    import torch

    info = load_bundle(bundle)
    os.environ["INFEROPS_MINILM_DIR"] = str(bundle / "minilm")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from serving.engines import load_engine
    from serving.zoo import get_model

    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"{device} (a rehearsal)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bundle_made_with_torch": info["torch"],
        "models": {},
        "ort": ort_gpu_rows(),
    }
    work = Path(tempfile.mkdtemp(prefix="inferops-gpu-"))
    try:
        sentences = json.loads((bundle / "minilm-inputs.json").read_text(encoding="utf-8"))
        inputs_of: dict[str, Any] = {
            "minilm": sentences,
            "digits-cnn": np.load(bundle / "digits-cnn-inputs.npy"),
        }
        states = {
            "minilm": lambda: get_model("minilm").torch_module().float().state_dict(),
            "digits-cnn": lambda: torch.load(bundle / "digits-cnn.pt", weights_only=True, map_location="cpu"),
        }
        engines = {}
        for model in models:
            artifact = write_torch_artifact(work, model, states[model]())
            reference = np.load(bundle / f"{model}-reference.npy")
            rows = {}
            # torch.compile beside eager on CUDA, where it may help (a CPU rehearsal would only pay the compile)
            labels = [*PRECISIONS, *(COMPILED if compiled and device.startswith("cuda") else ())]
            for label in labels:
                precision, _, how = label.partition("+")
                log(f"{model} {label} on {result['gpu']}")
                try:
                    engine = load_engine(
                        artifact, device=device, precision=precision, compile=how == "compile"
                    )
                    rows[label] = measure_engine(engine, inputs_of[model], reference, budget)
                except Exception as exc:  # one precision failing is a finding; the others still run
                    log(f"{model} {label} failed: {type(exc).__name__}: {exc}")
                    rows[label] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                    continue
                engines[(model, label)] = engine
            result["models"][model] = rows
        if "minilm" not in models:
            return result
        minilm = result["models"]["minilm"]
        batch = ceiling_batch(budget.batches)
        faithful = [p for p in minilm if minilm[p].get("cosine_mean", 0.0) >= FIDELITY_FLOOR]
        if not faithful:
            return result
        best = max(faithful, key=lambda p: minilm[p]["batches"][batch]["items_per_s"], default="fp32")
        engine = engines[("minilm", best)]
        ceiling = minilm[best]["batches"][batch]["items_per_s"]
        log(f"batcher: minilm {best}, batch-{batch} ceiling {ceiling:.0f} items/s")
        result["batcher"] = {
            "precision": best,
            "max_batch": BATCHER_MAX_BATCH,
            "wait_ms": BATCHER_WAIT_S * 1000,
            "ceiling_batch": batch,
            "ceiling_items_per_s": ceiling,
            "runs": [
                batcher_run(engine, sentences, share * ceiling, budget.batcher_s, seed=i)
                for i, share in enumerate(BATCHER_SHARES)
            ],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# ---- output ------------------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    lines = [
        f"inferops GPU check on {result['gpu']} (torch {result['torch']}, CUDA {result['cuda']}); "
        "engine: serving.engines.TorchEngine, tokenizing included; fidelity vs CPU FP32 from the FP32 weights",
        "",
        f"{'model':10} {'prec':12} {'batch':>5} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cos mean':>9} {'cos min':>8} {'mem MiB':>8} {'x fp32':>7}  nvml (max util / mem / temp / power)",
    ]
    for model, rows in result["models"].items():
        for precision, row in rows.items():
            if "error" in row:
                lines.append(f"{model:10} {precision:12} failed: {row['error']}")
                continue
            nvml = row["nvml"]
            sample = (
                f"{nvml['util_max_percent']:.0f}% / {nvml['memory_used_max_mib']:.0f} MiB / "
                f"{nvml['temperature_max_c']} C / {nvml['power_max_w']} W"
                if "gpu" in nvml
                else nvml["reason"]
            )
            for i, (b, t) in enumerate(row["batches"].items()):
                fp32 = rows["fp32"]["batches"][b]["items_per_s"] if "batches" in rows["fp32"] else math.nan
                first = i == 0
                lines.append(
                    f"{model if first else '':10} {precision if first else '':12} {b:>5} {t['items_per_s']:>10.0f} "
                    f"{t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f} "
                    + (
                        f"{row['cosine_mean']:>9.5f} {row['cosine_min']:>8.5f} {_mib(row['peak_memory_mib']):>8}"
                        if first
                        else " " * 27
                    )
                    + f" {t['items_per_s'] / fp32:>6.2f}x"
                    + (f"  {sample}" if first else "")
                )
    for row in result["ort"]:
        lines.append(f"onnxruntime {row['provider']}: skipped ({row['skipped']})")
    batcher = result.get("batcher")
    if batcher is None:
        return "\n".join(lines)
    lines += [
        "",
        f"minilm {batcher['precision']} behind serving.batching (in-process batcher, max batch "
        f"{batcher['max_batch']}, wait {batcher['wait_ms']:g} ms), open-loop Poisson at shares of its "
        f"batch-{batcher['ceiling_batch']} throughput ({batcher['ceiling_items_per_s']:.0f} items/s):",
        f"{'offered req/s':>14} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>11}",
    ]
    for run in batcher["runs"]:
        lines.append(
            f"{run['offered_rps']:>14.0f} {run['achieved_rps']:>9.0f} {run['p50_ms']:>8.2f} "
            f"{run['p99_ms']:>8.2f} {run['mean_batch']:>11.1f}"
        )
    minilm, b = result["models"]["minilm"], batcher["ceiling_batch"]
    fp16 = minilm["fp16"]
    if "error" in fp16 or "error" in minilm["fp32"]:
        return "\n".join([*lines, "minilm FP16 vs FP32: not compared (a run failed, above)"])
    speedup = fp16["batches"][b]["items_per_s"] / minilm["fp32"]["batches"][b]["items_per_s"]
    verdict = "meets" if fp16["cosine_mean"] >= FIDELITY_FLOOR else "MISSES"
    lines.append(
        f"minilm FP16: mean cosine {fp16['cosine_mean']:.5f} ({verdict} the {FIDELITY_FLOOR} floor), "
        f"{speedup:.2f}x FP32's items/s at batch {b} on the same device"
    )
    compiled = minilm.get("fp16+compile")
    if compiled is not None and "batches" in compiled:
        gain = compiled["batches"][b]["items_per_s"] / fp16["batches"][b]["items_per_s"]
        lines.append(
            f"minilm FP16 with torch.compile: {gain:.2f}x eager FP16's items/s at batch {b}; first pass over the "
            f"inputs {compiled['first_pass_s']:.1f} s (eager {fp16['first_pass_s']:.1f} s): "
            + ("compiling helps" if gain > 1.05 else "compiling does not help here")
        )
    return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def plan_text(reason: str) -> str:
    return "\n".join(
        [
            f"no GPU check run: {reason}",
            "on a machine with a CUDA GPU this script would run, with the bundle from --prepare:",
            f"  - {', '.join(MODELS)} through serving.engines.TorchEngine on cuda in {', '.join(PRECISIONS)}:",
            f"    items/s and P50/P99 per call at batch {', '.join(map(str, BATCHES))}, mean/min cosine to the CPU "
            "FP32 reference, peak GPU memory, an NVML sample (util, memory, temperature, power);",
            "    FP16 through torch.compile(dynamic=True) beside eager (--no-compile leaves it out)",
            "  - ONNX Runtime's CUDA and TensorRT providers where that onnxruntime build has them",
            f"  - the fastest minilm precision with mean cosine >= {FIDELITY_FLOOR} behind serving.batching at "
            f"{', '.join(f'{s:.0%}' for s in BATCHER_SHARES)} of its batch-32 throughput, open-loop",
        ]
    )


def gpu_unavailable() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prepare", action="store_true", help="write the bundle (on the CPU machine)")
    parser.add_argument(
        "--inputs", type=int, default=SENTENCES, help="with --prepare: inputs per model (default %(default)s)"
    )
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the bundle folder (default .gpu/)")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for gpu.txt and gpu.json (default: $OUT)"
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    parser.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes to time"
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument(
        "--rehearse-on-cpu",
        action="store_true",
        help="run every step on the CPU with short timings, to check the script where there is no GPU",
    )
    args = parser.parse_args()
    models = tuple(m for m in args.models.split(",") if m)
    if unknown := [m for m in models if m not in MODELS]:
        parser.error(f"--models {','.join(unknown)}: the check knows {', '.join(MODELS)}")
    try:
        batches = tuple(int(b) for b in args.batches.split(",") if b)
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        parser.error(f"--batches {args.batches!r}: give positive integers separated by commas, e.g. 1,8,32")
    if args.prepare:
        info = prepare(args.bundle.resolve(), args.inputs)
        print(
            f"bundle written to {args.bundle} ({info['bytes'] / 2**20:.1f} MiB, {len(info['files'])} files); "
            'carry it with the device call: carry [".gpu"], command `python3 benchmarks/gpu.py --out $OUT`'
        )
        return
    reason = None if args.rehearse_on_cpu else gpu_unavailable()
    if reason is not None:
        print(plan_text(reason))
        return
    budget = replace(QUICK if args.rehearse_on_cpu else Budget(), batches=batches)
    device = "cpu" if args.rehearse_on_cpu else "cuda"
    result = run_check(args.bundle, device, budget, models, compiled=not args.no_compile)
    table = render(result)
    print(table, flush=True)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu.txt").write_text(table + "\n", encoding="utf-8")
        (out / "gpu.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
