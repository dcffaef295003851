"""Variants: recipes as data, built once, manifests with sha256, honest fidelity, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.artifacts import ArtifactError, read_manifest, sha256_file
from serving.engines import load_engine
from serving.variants import (
    VARIANT_RECIPES,
    VariantArtifact,
    VariantUnavailable,
    ensure_variant,
    gpu_unavailable_reason,
    list_variants,
)
from serving.zoo import get_model


@pytest.fixture(scope="session")
def minilm_variants() -> dict[str, VariantArtifact]:
    """The expensive minilm artifacts, each built once per session."""
    names = ["onnx-fp32", "onnx-fp32-fused", "onnx-int8-dynamic", "onnx-int8-dynamic-perchannel"]
    return {n: ensure_variant("minilm", n) for n in names}


def test_recipes_are_data() -> None:
    for name, recipe in VARIANT_RECIPES.items():
        assert recipe.name == name and recipe.transform and recipe.opt_type
        assert recipe.parent is None or recipe.parent in VARIANT_RECIPES
    assert {n for n, r in VARIANT_RECIPES.items() if r.requires_gpu} == {
        "onnx-fp16",
        "trt-fp16",
        "torch-fp16-cuda",
        "torch-bf16-cuda",
    }
    assert "onnx-fp32-fused" not in list_variants("digits-cnn") and "onnx-fp32-fused" in list_variants(
        "minilm"
    )


def test_digits_variants_build_once_with_manifests() -> None:
    spec = get_model("digits-cnn")
    base = spec.evaluate(load_engine(ensure_variant("digits-cnn", "torch-fp32").path))
    for name in list_variants("digits-cnn", include_gpu=False):
        art = ensure_variant("digits-cnn", name)
        manifest = read_manifest(art.path)
        assert manifest["sha256"] == sha256_file(art.path) == art.sha256
        assert {"model", "transform", "params", "providers", "source"} <= set(manifest)
        mtime = art.path.stat().st_mtime_ns
        assert ensure_variant("digits-cnn", name).path.stat().st_mtime_ns == mtime  # cached, not rebuilt
        result = spec.evaluate(load_engine(art.path))
        assert result.value >= 0.99 * base.value, name
    assert base.value > 0.9


def test_knobs_are_validated_and_get_their_own_file() -> None:
    with pytest.raises(ValueError, match="has no knob"):
        ensure_variant("digits-cnn", "onnx-int8-dynamic", per_chanel=True)
    default = ensure_variant("digits-cnn", "onnx-int8-dynamic")
    tuned = ensure_variant("digits-cnn", "onnx-int8-dynamic", weight_type="QUInt8", reduce_range=True)
    assert tuned.path != default.path and tuned.manifest["params"]["weight_type"] == "QUInt8"
    with pytest.raises(ValueError, match="unknown variant"):
        ensure_variant("digits-cnn", "onnx-int3")


def test_gpu_variants_are_skipped_with_a_reason() -> None:
    for name in ("onnx-fp16", "trt-fp16"):
        reason = gpu_unavailable_reason(VARIANT_RECIPES[name])
        if reason is None:
            pytest.skip("this machine has the GPU providers")
        with pytest.raises(VariantUnavailable, match="install the `gpu` extra"):
            ensure_variant("digits-cnn", name)


def test_corrupt_source_leaves_no_half_written_artifact(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf model")
    name = f"onnx:{bad}"
    with pytest.raises(ArtifactError, match=r"broken\.onnx is invalid"):
        ensure_variant(name, "onnx-fp32")
    from serving.settings import get_settings
    from serving.zoo import model_slug

    folder = get_settings().models_dir / model_slug(name)
    assert not folder.exists() or list(folder.iterdir()) == []  # neither the file nor a temp file remains


def test_minilm_export_fuses_and_keeps_dynamic_axes(minilm_variants: dict[str, VariantArtifact]) -> None:
    import onnx

    model = onnx.load(str(minilm_variants["onnx-fp32"].path))
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(isinstance(a, str) and isinstance(b, str) for a, b in dims)  # batch and sequence are symbolic
    fused = onnx.load(str(minilm_variants["onnx-fp32-fused"].path))
    assert sum(n.op_type == "Attention" for n in fused.graph.node) == 6


def test_minilm_fidelity_plain_int8_vs_per_channel(minilm_variants: dict[str, VariantArtifact]) -> None:
    spec = get_model("minilm")
    fid = {n: spec.evaluate(load_engine(a.path)) for n, a in minilm_variants.items()}
    assert fid["onnx-fp32"].value > 0.9999 and fid["onnx-fp32-fused"].value > 0.9999
    assert fid["onnx-int8-dynamic-perchannel"].value >= 0.99
    assert fid["onnx-int8-dynamic"].value < 0.99  # the honest loss the table must show
    assert fid["onnx-int8-dynamic"].details["fidelity_min_cosine"] < fid["onnx-int8-dynamic"].value


def test_op_exclusion_fallback_keeps_the_most_sensitive_groups_in_fp32(
    minilm_variants: dict[str, VariantArtifact],
) -> None:
    """Plain per-tensor INT8 loses too much; the fallback ranks node groups by measured impact and keeps the top
    ones in FP32 until the target is met, and the artifact really has that retention."""
    art = ensure_variant("minilm", "onnx-int8-dynamic-opexclusion")
    search = art.manifest["exclusion_search"]
    assert search["retention_without_exclusions"] < 0.99 <= search["retention"] and search["met_target"]
    impacts = [g["impact"] for g in search["groups"]]
    assert impacts == sorted(impacts, reverse=True) and len(impacts) >= 4  # every role measured, ranked
    excluded = [g for g in search["groups"] if g.get("excluded")]
    assert excluded and excluded == search["groups"][: len(excluded)]  # most impact first
    assert 0 < len(search["excluded_nodes"]) < sum(g["nodes"] for g in search["groups"])  # not everything
    spec = get_model("minilm")
    reference = spec.evaluate(load_engine(minilm_variants["onnx-fp32-fused"].path)).value
    assert spec.evaluate(load_engine(art.path)).value / reference == pytest.approx(
        search["retention"], abs=1e-4
    )
    # digits-cnn keeps its accuracy quantized as a whole: nothing is searched, nothing excluded
    digits = ensure_variant("digits-cnn", "onnx-int8-dynamic-opexclusion").manifest["exclusion_search"]
    assert digits["groups"] == [] and digits["excluded_nodes"] == [] and digits["met_target"]
