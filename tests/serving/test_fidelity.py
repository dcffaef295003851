"""The accuracy-fidelity probe: the score it gives, and the golden sets it compares against."""

from __future__ import annotations

import numpy as np
import pytest

from serving.fidelity import fidelity, golden_set


def test_text_fidelity_is_the_mean_cosine_to_the_reference() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert fidelity("text", ref * 3.0, ref) == pytest.approx(1.0)  # scale does not matter, direction does
    assert fidelity("text", np.array([[0.0, 1.0], [0.0, 1.0]]), ref) == pytest.approx(0.5)


def test_tensor_fidelity_is_top1_agreement() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    served = np.array([[0.2, 0.8], [0.7, 0.3], [0.9, 0.1], [0.1, 0.9]])
    assert fidelity("tensor", served, ref) == 0.5


def test_outputs_of_another_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="not the same model"):
        fidelity("tensor", np.zeros((2, 3)), np.zeros((2, 4)))


def test_digits_has_a_golden_set_and_a_model_without_reference_says_why_not(
    models_cache: object, tiny_onnx: object
) -> None:
    from serving.variants import ensure_variant

    ensure_variant("digits-cnn", "onnx-fp32")
    golden = golden_set("digits-cnn", n=8)
    assert not isinstance(golden, str)
    assert golden.kind == "tensor" and golden.reference.shape == (8, 10)
    assert "no zoo entry" in str(golden_set("onnx:/nowhere/model.onnx"))
    assert "no FP32 PyTorch reference" in str(golden_set(f"onnx:{tiny_onnx}"))


def test_building_the_app_caches_the_reference_so_no_replica_loads_pytorch(models_cache: object) -> None:
    import hashlib

    from serving.app import build_app
    from serving.artifacts import read_manifest, verify_artifact
    from serving.settings import get_settings
    from serving.zoo import get_model

    inputs = np.ascontiguousarray(get_model("digits-cnn").example_inputs(32), dtype=np.float32)
    digest = hashlib.sha256(inputs.tobytes()).hexdigest()[:16]
    cached = get_settings().models_dir / "digits-cnn" / f"golden-reference-{digest}.npy"
    cached.unlink(missing_ok=True)
    build_app({"model": "digits-cnn"})
    verify_artifact(cached)
    assert read_manifest(cached)["transform"] == "golden-reference"
