"""Engines: providers and threads reported honestly, padding to the longest text, bad artifacts refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.artifacts import ArtifactError, manifest_path
from serving.engines import load_engine
from serving.variants import ensure_variant


def test_ort_and_torch_engines_agree_on_digits() -> None:
    onnx_art = ensure_variant("digits-cnn", "onnx-fp32")
    torch_art = ensure_variant("digits-cnn", "torch-fp32")
    ort_engine = load_engine(onnx_art.path, expected_sha256=onnx_art.sha256)
    torch_engine = load_engine(torch_art.path)
    x = ort_engine.spec.example_inputs(16)
    assert isinstance(x, np.ndarray)
    a, b = ort_engine.infer(x), torch_engine.infer(x)
    assert a.shape == (16, 10) and np.allclose(a, b, atol=1e-4)
    assert ort_engine.provider == "CPUExecutionProvider" and torch_engine.provider == "torch-cpu"
    assert ort_engine.model == "digits-cnn" and ort_engine.variant == "onnx-fp32"
    assert ort_engine.sha256 == onnx_art.sha256


def test_a_pytorch_tensor_model_declares_the_input_shape_its_onnx_export_does() -> None:
    """A served PyTorch digits-cnn declared a rank-1 input (it has no ONNX session to read the shape from), so the
    API refused every real request with 400 model_shape; both engines declare [batch, 1, 8, 8]."""
    from serving.app import _tensor_input_shape

    onnx_engine = load_engine(ensure_variant("digits-cnn", "onnx-fp32").path)
    torch_engine = load_engine(ensure_variant("digits-cnn", "torch-fp32").path)
    assert _tensor_input_shape(onnx_engine) == _tensor_input_shape(torch_engine) == [None, 1, 8, 8]


def test_threads_spinning_and_provider_fallback_are_reported() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA: nothing to fall back from")
    art = ensure_variant("digits-cnn", "onnx-fp32")
    engine = load_engine(
        art.path, providers=["CUDAExecutionProvider"], intra_op_threads=1, allow_spinning=False
    )
    assert engine.provider == "CPUExecutionProvider"
    assert engine.info["providers_used"] == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider not available" in engine.info["fallback_reason"]
    assert engine.info["intra_op_threads"] == 1 and engine.info["allow_spinning"] is False


def test_torch_engine_runs_in_the_precision_asked_and_says_so() -> None:
    art = ensure_variant("digits-cnn", "torch-fp32")
    fp32 = load_engine(art.path)
    x = fp32.spec.example_inputs(64)
    reference = fp32.infer(x)
    assert fp32.info["precision"] == "fp32" and fp32.info["device"] == "cpu"
    for precision in ("bf16", "fp16"):
        engine = load_engine(art.path, precision=precision)
        out = engine.infer(x)
        assert engine.info["precision"] == precision and engine.provider == "torch-cpu"
        assert out.dtype == np.float32 and out.shape == reference.shape  # FP32 back, whatever ran
        assert not np.array_equal(out, reference)  # the arithmetic did change...
        assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.95  # ...and the answers did not
    with pytest.raises(ArtifactError, match=r"precision 'int4' is not one of fp32, fp16, bf16"):
        load_engine(art.path, precision="int4")


def test_torch_engine_wraps_its_module_in_torch_compile_when_asked() -> None:
    """Only the wiring: compiling happens on the first call, which costs ~40 s on these 2 cores; the answers of a
    compiled engine are measured against the FP32 reference by benchmarks/gpu.py on the GPU box."""
    import torch

    art = ensure_variant("digits-cnn", "torch-fp32")
    eager, compiled = load_engine(art.path), load_engine(art.path, compile=True)
    assert isinstance(compiled.module, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(eager.module, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.info["compiled"] is True and eager.info["compiled"] is False


def test_cuda_without_a_gpu_is_refused_with_the_reason() -> None:
    import torch

    from serving.variants import VARIANT_RECIPES, VariantUnavailable, gpu_unavailable_reason

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    art = ensure_variant("digits-cnn", "torch-fp32")
    with pytest.raises(
        ArtifactError, match=r"device cuda: .*(CPU build|sees no GPU).*or serve a CPU variant"
    ):
        load_engine(art.path, device="cuda")
    for name in ("torch-fp16-cuda", "torch-bf16-cuda"):
        assert re.search(r"CPU build|sees no GPU", str(gpu_unavailable_reason(VARIANT_RECIPES[name])))
        with pytest.raises(VariantUnavailable, match=name):
            ensure_variant("minilm", name)


def test_cuda_fp16_minilm_keeps_its_fidelity() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: benchmarks/gpu.py measures this on the GPU box")
    art = ensure_variant("minilm", "torch-fp16-cuda")
    engine = load_engine(art.path)
    assert engine.provider == "torch-cuda" and engine.info["attention"] == "sdpa"
    texts = engine.spec.example_inputs(64)
    reference = load_engine(ensure_variant("minilm", "torch-fp32").path).infer(texts)
    assert float((engine.infer(texts) * reference).sum(1).mean()) >= 0.99


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"nope\.onnx does not exist"):
        load_engine(tmp_path / "nope.onnx")


def test_sha256_mismatch_is_refused() -> None:
    art = ensure_variant("digits-cnn", "onnx-fp32")
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_engine(art.path, expected_sha256="0" * 64)


def test_corrupted_onnx_is_refused_with_its_name(tmp_path: Path) -> None:
    art = ensure_variant("digits-cnn", "onnx-fp32")
    bad = tmp_path / "onnx-fp32.onnx"
    bad.write_bytes(art.path.read_bytes()[:2000] + b"garbage")
    shutil.copyfile(manifest_path(art.path), manifest_path(bad))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):  # the manifest catches it first
        load_engine(bad)
    from serving.artifacts import sha256_file

    with pytest.raises(ArtifactError, match=r"onnx-fp32\.onnx cannot be loaded by onnxruntime"):
        load_engine(bad, expected_sha256=sha256_file(bad))


def test_text_engine_pads_to_longest_and_times_stages(minilm_fp32: Path) -> None:
    engine = load_engine(minilm_fp32)
    texts = ["Short.", "A noticeably longer sentence with quite a few more tokens in it."]
    lengths = engine.token_lengths(texts)
    feeds = engine._encode(texts)
    assert feeds["input_ids"].shape == (2, max(lengths))  # not padded to max_tokens
    out, timing = engine.infer_timed(texts)
    assert out.shape == (2, 384) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert set(timing) == {"tokenize", "compute"} and all(v >= 0 for v in timing.values())
    assert engine.max_tokens == 256
    assert engine.token_lengths(["word " * 400])[0] > engine.max_tokens  # untruncated count for the server
    assert engine.infer(["word " * 400]).shape == (1, 384)  # the engine itself truncates


@pytest.fixture(scope="session")
def minilm_fp32() -> Path:
    return ensure_variant("minilm", "onnx-fp32").path
