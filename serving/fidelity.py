"""The accuracy-fidelity probe (the business layer of SPEC §4): the served engine on a small golden set against the
model's FP32 reference, as one number a replica exports as the gauge `inferops_accuracy_fidelity`.

Text models: the mean cosine similarity of the served embeddings to the FP32 PyTorch embeddings of the same
sentences (1.0 = identical directions). Tensor models: the share of golden inputs whose top-1 class matches the FP32
model's. A model with no FP32 reference in the zoo (an `onnx:` file) has no probe, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_N = 32  # enough to see a broken engine, cheap enough to run every few minutes beside live traffic
FIDELITY_GAUGE = "inferops_accuracy_fidelity"
FIDELITY_PERIOD_S = 300.0  # re-probed this often even when nothing changed (a GPU fault corrupts silently)
FIDELITY_POLL_S = 2.0  # how soon after a model change the new model is probed


@dataclass(frozen=True)
class Golden:
    """The golden inputs of one model and the FP32 reference outputs for them."""

    model: str
    kind: str
    inputs: Any
    reference: np.ndarray


def golden_set(model: str, n: int = GOLDEN_N) -> Golden | str:
    """The model's golden set with its FP32 reference, or the reason there is none."""
    from serving.artifacts import ArtifactError
    from serving.zoo import UnknownModelError, get_model, minilm_reference

    try:
        spec = get_model(model)
    except (UnknownModelError, ArtifactError) as exc:
        return f"no zoo entry for {model!r}: {exc}"
    inputs = spec.example_inputs(n)
    if spec.name == "minilm":
        return Golden(model, "text", inputs, minilm_reference(tuple(inputs)))
    if spec.torch_module is None or spec.kind != "tensor":
        return f"model {model!r} has no FP32 PyTorch reference to compare the served engine with"
    array = np.ascontiguousarray(inputs, dtype=np.float32)
    return Golden(model, "tensor", array, _tensor_reference(spec, array))


def prepare_reference(model: str) -> str | None:
    """Compute and cache the model's FP32 reference where the app is built, before any replica starts: a replica
    that had to load PyTorch for it (tens of seconds on two cores) would slow the requests it serves meanwhile.
    Returns why there is no reference, or None."""
    golden = golden_set(model)
    return golden if isinstance(golden, str) else None


def _tensor_reference(spec: Any, inputs: np.ndarray) -> np.ndarray:
    """The FP32 PyTorch outputs for `inputs`, cached in the data dir by the inputs' digest: PyTorch is loaded
    once per data dir, not in every replica (an ONNX replica does not otherwise import it)."""
    import hashlib

    from serving.artifacts import ArtifactError, slug, verify_artifact, write_artifact
    from serving.settings import get_settings

    digest = hashlib.sha256(inputs.tobytes()).hexdigest()[:16]
    path = get_settings().models_dir / slug(spec.name) / f"golden-reference-{digest}.npy"
    if path.exists():
        try:
            verify_artifact(path)
            return np.asarray(np.load(path), dtype=np.float32)
        except ArtifactError:
            pass  # a damaged cache is rebuilt below
    import torch

    module = spec.torch_module().eval()
    with torch.inference_mode():
        reference = np.asarray(module(torch.from_numpy(inputs)).numpy(), dtype=np.float32)

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, reference)

    write_artifact(path, _save, {"model": spec.name, "transform": "golden-reference", "n": len(inputs)})
    return reference


def fidelity(kind: str, served: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine similarity (text) or top-1 agreement (tensor) of served outputs with the reference."""
    served = np.asarray(served, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if served.shape != reference.shape:
        raise ValueError(
            f"served outputs have shape {served.shape}, the reference {reference.shape}: not the same model"
        )
    if kind == "text":
        norms = np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1)
        cosine = np.sum(served * reference, axis=1) / np.maximum(norms, 1e-12)
        return float(np.clip(cosine, -1.0, 1.0).mean())
    return float(np.mean(served.argmax(axis=1) == reference.argmax(axis=1)))


def probe(engine: Any, golden: Golden) -> float:
    """Run the golden inputs through `engine` (not through the batch queue) and score them."""
    return fidelity(golden.kind, engine.infer(golden.inputs), golden.reference)
