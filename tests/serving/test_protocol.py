"""The Open Inference Protocol's tensor rules, checked against the model's own metadata (no server needed).

The protocol (kserve/open-inference-protocol, required_api.md): a request input names a `shape` and a `datatype`,
its `data` holds the tensor's elements in row-major order, so their count is the product of the shape; the
datatype is one of the model's declared input datatypes (its metadata); `parameters` values are strings, numbers
or booleans, and a server may refuse parameters it does not know.
"""

from __future__ import annotations

from typing import Any

import pytest

from serving.api import InferRequest, RequestRejected, check_infer_request, validate_model

TEXT_META = {
    "name": "minilm",
    "kind": "text",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 384]}],
}
TENSOR_META = {
    "name": "digits-cnn",
    "kind": "tensor",
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, -1]}],
}


def _req(tensor: dict[str, Any], **extra: Any) -> InferRequest:
    return validate_model(InferRequest, {"inputs": [tensor], **extra})  # type: ignore[no-any-return]


def _rule(meta: dict[str, Any], tensor: dict[str, Any], **extra: Any) -> tuple[int, str, str, Any]:
    with pytest.raises(RequestRejected) as err:
        check_infer_request(_req(tensor, **extra), meta)
    return err.value.status, err.value.field, err.value.rule, err.value.limit


TEXT = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}
PIXELS = {"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}


def test_valid_requests_pass() -> None:
    check_infer_request(_req(TEXT, parameters={"truncate": True}), TEXT_META)
    check_infer_request(_req(PIXELS, outputs=[{"name": "output-0"}]), TENSOR_META)


@pytest.mark.parametrize(
    ("meta", "tensor", "extra", "rule", "limit"),
    [
        # shape against data: BYTES too (these were answered 200 before)
        (TEXT_META, {**TEXT, "shape": [3]}, {}, "shape_match", 3),
        (TEXT_META, {**TEXT, "shape": [1]}, {}, "shape_match", 1),
        (TEXT_META, {**TEXT, "shape": [2, 1]}, {}, "model_shape", [-1]),
        (TENSOR_META, {**PIXELS, "data": [0.0] * 63}, {}, "shape_match", 64),
        (TENSOR_META, {**PIXELS, "shape": [1, 64]}, {}, "model_shape", [-1, 1, 8, 8]),
        # datatype against the model's declared input
        (TENSOR_META, {**PIXELS, "datatype": "FP64"}, {}, "datatype", "FP32"),
        (TENSOR_META, {**PIXELS, "datatype": "INT64", "data": [0] * 64}, {}, "datatype", "FP32"),
        (TEXT_META, {**TEXT, "datatype": "FP32", "data": [1.0, 2.0]}, {}, "datatype", "BYTES"),
        # parameters: known names of the right type only
        (TEXT_META, TEXT, {"parameters": {"truncate": "yes"}}, "parameter_type", "bool"),
        (TEXT_META, TEXT, {"parameters": {"truncat": True}}, "known_parameter", ["truncate"]),
        (TENSOR_META, PIXELS, {"parameters": {"truncate": True}}, "known_parameter", []),
        (TENSOR_META, PIXELS, {"parameters": {"binary_data_output": True}}, "binary_extension", None),
        (TENSOR_META, {**PIXELS, "parameters": {"content_type": 5}}, {}, "parameter_type", "str"),
        # requested outputs must exist
        (TENSOR_META, PIXELS, {"outputs": [{"name": "logits"}]}, "known_output", ["output-0"]),
    ],
)
def test_tensor_rules_are_enforced_with_field_rule_and_limit(
    meta: dict[str, Any], tensor: dict[str, Any], extra: dict[str, Any], rule: str, limit: Any
) -> None:
    status, field, got_rule, got_limit = _rule(meta, tensor, **extra)
    assert (status, got_rule, got_limit) == (400, rule, limit)
    assert field  # names what to fix


def test_parameter_values_must_be_protocol_types() -> None:
    with pytest.raises(RequestRejected) as err:
        _req(TEXT, parameters={"truncate": {"nested": True}})
    assert err.value.status == 400 and err.value.field.startswith("parameters.truncate")
