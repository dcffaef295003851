"""Inference engines: PyTorch eager and ONNX Runtime, each saying honestly which provider and threads ran."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.artifacts import ArtifactError, read_manifest, verify_artifact
from serving.zoo import TEXT_INPUTS, ModelSpec, encode_texts, get_model, load_tokenizer

log = logging.getLogger(__name__)

# Best first: an engine asks for every provider it can use and ONNX Runtime falls back down this list.
PROVIDER_PREFERENCE: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)
GRAPH_LEVELS = ("disabled", "basic", "extended", "all")


def ort_module() -> Any:
    """onnxruntime, or an error that says which extra installs it (inferops ships no ONNX Runtime of its own, so that
    the CPU and the GPU builds, which share one module name, are never installed side by side)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "onnxruntime is not installed: pip install 'inferops[cpu]', or 'inferops[gpu]' on an NVIDIA host "
            "(never both: they install the same module)"
        ) from exc
    return onnxruntime


def graph_optimization_level(level: str) -> Any:
    """ONNX Runtime's enum for a graph level name (the engine at load time, the variant builders when saving)."""
    ort = ort_module()

    if level not in GRAPH_LEVELS:
        raise ArtifactError(f"graph level {level!r} is not one of {GRAPH_LEVELS}")
    return {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]


def gpu_providers(variant: str) -> list[str]:
    """Execution providers for a GPU replica, best first; CPU stays as the last resort."""
    head = ["TensorrtExecutionProvider"] if variant.startswith("trt") else []
    return [*head, "CUDAExecutionProvider", "CPUExecutionProvider"]


def default_intra_op_threads() -> int:
    """All cores this process may use (2 here): ORT's default, stated explicitly so reports can show it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_providers(requested: list[str] | None) -> tuple[list[str], str | None]:
    """Providers to ask ONNX Runtime for, and the reason when some requested ones are not available."""
    ort = ort_module()

    available = set(ort.get_available_providers())
    wanted = list(requested) if requested else [p for p in PROVIDER_PREFERENCE if p in available]
    usable = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    reason = None
    if missing:
        reason = (
            f"{', '.join(missing)} not available in this onnxruntime build "
            f"(available: {', '.join(sorted(available))}); falling back to {usable or ['CPUExecutionProvider']}"
        )
        log.warning("execution provider fallback: %s", reason)
    if "CPUExecutionProvider" not in usable:
        usable.append("CPUExecutionProvider")  # always a last resort
    return usable, reason


class Engine:
    """Common surface: identity (model, variant, sha256), what ran (provider, info) and `infer`."""

    model: str
    variant: str
    sha256: str
    provider: str
    kind: str
    info: dict[str, Any]
    spec: ModelSpec
    max_tokens: int

    def __init__(self, path: Path, sha256: str, manifest: dict[str, Any], spec: ModelSpec) -> None:
        self.path = path
        self.sha256 = sha256
        self.manifest = manifest
        self.model = str(manifest.get("model", spec.name))
        self.variant = str(manifest.get("variant", path.stem))
        self.kind = spec.kind
        self.spec = spec
        self.info = {}
        if spec.kind == "text":
            assert spec.tokenizer_dir is not None and spec.max_tokens is not None
            self.max_tokens = spec.max_tokens
            self._tok = load_tokenizer(spec.tokenizer_dir, spec.max_tokens)
            self._tok_full = load_tokenizer(spec.tokenizer_dir, None)

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Untruncated token counts (special tokens included), for the server's max-token check."""
        return [len(e.ids) for e in self._tok_full.encode_batch(list(texts))]

    def _encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Token ids padded to the longest text in this batch (not to max length: far less compute)."""
        if isinstance(texts, str) or not texts:
            raise ValueError("text engines take a non-empty list of strings")
        return encode_texts(self._tok, texts)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def infer_timed(self, inputs: Any) -> tuple[np.ndarray, dict[str, float]]:
        """`infer`, plus seconds spent in `tokenize` and `compute`."""
        t0 = time.perf_counter()
        feeds = (
            self._encode(inputs)
            if self.kind == "text"
            else {"x": np.ascontiguousarray(inputs, dtype=np.float32)}
        )
        t1 = time.perf_counter()
        out = self._run(feeds)
        t2 = time.perf_counter()
        return out, {"tokenize": t1 - t0, "compute": t2 - t1}

    def infer(self, inputs: Any) -> np.ndarray:
        """text: list[str] -> (N, dim) L2-normalised float32; tensor: array -> array."""
        return self.infer_timed(inputs)[0]

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "variant": self.variant,
            "sha256": self.sha256,
            "provider": self.provider,
            **self.info,
        }


class OrtEngine(Engine):
    """An ONNX Runtime session over a variant file, with explicit providers and thread settings."""

    def __init__(
        self,
        path: Path,
        sha256: str,
        manifest: dict[str, Any],
        spec: ModelSpec,
        *,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        allow_spinning: bool = True,
        graph_level: str | None = None,
    ) -> None:
        ort = ort_module()

        super().__init__(path, sha256, manifest, spec)
        wanted = providers or manifest.get("providers")
        chosen, reason = choose_providers(wanted)
        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads or default_intra_op_threads()
        so.inter_op_num_threads = inter_op_threads or 1
        # spinning threads burn a core while idle, which starves a co-located HTTP proxy
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        level = graph_level or manifest.get("session_graph_level", "all")
        try:
            so.graph_optimization_level = graph_optimization_level(level)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from None
        provider_options = [dict(manifest.get("provider_options", {}).get(p, {})) for p in chosen]
        try:
            self.session = ort.InferenceSession(
                str(path), so, providers=chosen, provider_options=provider_options
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise ArtifactError(
                f"ONNX model {path} cannot be loaded by onnxruntime: {str(exc).strip()[:300]} "
                "(the file is corrupt or not ONNX; rebuild the variant)"
            ) from exc
        used = self.session.get_providers()
        self.provider = used[0]
        if wanted and used[0] != wanted[0] and reason is None:
            reason = f"{wanted[0]} failed to initialise; onnxruntime ran {used[0]}"
            log.warning("execution provider fallback: %s", reason)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.info = {
            "engine": "onnxruntime",
            "onnxruntime": ort.__version__,
            "providers_requested": wanted or list(PROVIDER_PREFERENCE),
            "providers_used": used,
            "fallback_reason": reason,
            "intra_op_threads": so.intra_op_num_threads,
            "inter_op_threads": so.inter_op_num_threads,
            "allow_spinning": allow_spinning,
            "graph_level": level,
        }

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.kind == "text":
            run_feeds = {k: feeds[k] for k in self.input_names}
        else:
            run_feeds = {self.input_names[0]: feeds["x"]}
        return np.asarray(self.session.run(None, run_feeds)[0])


# torch dtypes by the precision names variants use
TORCH_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_device_unavailable(device: str) -> str | None:
    """Why `device` cannot run torch here (None when it can): a CUDA device needs a CUDA build of torch and a GPU."""
    import torch

    if not device.startswith("cuda"):
        return None
    if torch.version.cuda is None:
        return (
            f"device {device}: this torch ({torch.__version__}) is a CPU build; install a CUDA build of torch"
        )
    if not torch.cuda.is_available():
        return f"device {device}: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
    return None


class TorchEngine(Engine):
    """PyTorch eager over a saved state dict, rebuilt with the zoo's architecture, on a device in a precision.

    The weights load in FP32 and are cast to `precision` (fp32, fp16, bf16) on `device` (cpu, cuda, cuda:N);
    both come from the arguments, else the manifest, else cpu/fp32. Transformers run with PyTorch's SDPA attention
    on CUDA (fused flash / memory-efficient kernels) and the export-friendly eager attention on CPU. `compile`
    (argument, else manifest): the module goes through `torch.compile(dynamic=True)`, which pays a compile on the
    first calls and may or may not run faster: benchmarks/gpu.py measures it beside eager. Outputs come back as FP32
    numpy arrays whatever ran."""

    def __init__(
        self,
        path: Path,
        sha256: str,
        manifest: dict[str, Any],
        spec: ModelSpec,
        *,
        intra_op_threads: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        compile: bool | None = None,
    ) -> None:
        import torch

        super().__init__(path, sha256, manifest, spec)
        if spec.empty_module is None:
            raise ArtifactError(f"{path}: model {spec.name} has no PyTorch architecture to load weights into")
        device = device or str(manifest.get("device", "cpu"))
        precision = precision or str(manifest.get("precision", "fp32"))
        if precision not in TORCH_PRECISIONS:
            raise ArtifactError(
                f"{path}: precision {precision!r} is not one of {', '.join(TORCH_PRECISIONS)}; pick one of those"
            )
        if reason := torch_device_unavailable(device):
            raise ArtifactError(f"{path}: {reason}; or serve a CPU variant")
        threads = intra_op_threads or default_intra_op_threads()
        torch.set_num_threads(threads)  # process-wide in torch: the report states what was set
        module = spec.empty_module()
        try:
            module.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
        except Exception as exc:
            raise ArtifactError(f"PyTorch weights {path} cannot be loaded: {exc}"[:400]) from exc
        attention = None
        if spec.is_transformer:
            attention = "sdpa" if device.startswith("cuda") else "eager"
            encoder: Any = getattr(module, "encoder", None)
            if attention == "sdpa" and hasattr(encoder, "set_attn_implementation"):
                encoder.set_attn_implementation("sdpa")
        self.torch_device = torch.device(device)
        self.dtype = getattr(torch, TORCH_PRECISIONS[precision])
        self.module: Any = module.to(device=self.torch_device, dtype=self.dtype).eval()
        compiled = bool(manifest.get("compile", False) if compile is None else compile)
        if compiled:
            self.module = torch.compile(self.module, dynamic=True)
        self.provider = "torch-cuda" if self.torch_device.type == "cuda" else "torch-cpu"
        self.info = {
            "engine": "torch",
            "torch": torch.__version__,
            "device": str(self.torch_device),
            "device_name": torch.cuda.get_device_name(self.torch_device)
            if self.torch_device.type == "cuda"
            else "cpu",
            "precision": precision,
            "attention": attention,
            "compiled": compiled,
            "intra_op_threads": threads,
            "fallback_reason": None,
        }

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.kind == "text":
                args = [torch.from_numpy(feeds[k]).to(self.torch_device) for k in TEXT_INPUTS]
                out = self.module(*args)
            else:
                x = torch.from_numpy(feeds["x"]).to(self.torch_device, dtype=self.dtype)
                out = self.module(x)
            return out.float().cpu().numpy()  # .cpu() waits for the device: the timing covers the kernels


def load_engine(
    path: str | Path,
    *,
    expected_sha256: str | None = None,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    allow_spinning: bool = True,
    graph_level: str | None = None,
    model: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
) -> Engine:
    """Verify the artifact's sha256 (argument or manifest) and open it with the right engine (`device`, `precision`,
    `compile`: a PyTorch artifact's, over what its manifest says)."""
    path = Path(path)
    sha = verify_artifact(path, expected_sha256)
    try:
        manifest = read_manifest(path)
    except ArtifactError:
        if model is None:
            raise
        manifest = {"model": model, "variant": path.stem}  # a bare ONNX file with its sha given by the caller
    spec = get_model(model or str(manifest.get("model")))
    if path.suffix == ".onnx":
        return OrtEngine(
            path,
            sha,
            manifest,
            spec,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            allow_spinning=allow_spinning,
            graph_level=graph_level,
        )
    if path.suffix == ".pt":
        return TorchEngine(
            path,
            sha,
            manifest,
            spec,
            intra_op_threads=intra_op_threads,
            device=device,
            precision=precision,
            compile=compile,
        )
    raise ArtifactError(f"{path}: unknown artifact type {path.suffix!r}; expected .onnx or .pt")
