"""A slowed copy of an ONNX model: the same answers, about a given number of milliseconds later per call. The
production rehearsal promotes one to show a bad release rolled back by the alert chain (benchmarks/rehearsal.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def slowed_copy(source: Path, target: Path, delay_ms: float, width: int = 128) -> tuple[Path, float]:
    """A copy of an ONNX model that answers the same, slower by about `delay_ms` a call: a Loop of small matrix
    products on a value drawn from the input (so nothing folds it away) is added to the first output times zero."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def build(trips: int) -> onnx.ModelProto:
        model = onnx.load(str(source))
        graph = model.graph
        x, y = graph.input[0].name, graph.output[0].name
        inner = f"{y}__before_slowdown"
        for node in graph.node:
            node.output[:] = [inner if o == y else o for o in node.output]
        w = (np.random.default_rng(0).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        body = helper.make_graph(
            [
                helper.make_node("MatMul", ["v_in", "w"], ["prod"]),
                helper.make_node("Tanh", ["prod"], ["v_out"]),
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            ],
            "slowdown_body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, width]),
            ],
            [
                helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, width]),
            ],
            [numpy_helper.from_array(w, "w")],
        )
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(trips, dtype=np.int64), "slow_trips"),
                numpy_helper.from_array(np.array(True), "slow_cond"),
                numpy_helper.from_array(np.array([1, width], dtype=np.int64), "slow_shape"),
                numpy_helper.from_array(np.array(0.0, dtype=np.float32), "slow_zero"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("ReduceMean", [x], ["slow_seed"], keepdims=0),
                helper.make_node("Expand", ["slow_seed", "slow_shape"], ["slow_v0"]),
                helper.make_node("Loop", ["slow_trips", "slow_cond", "slow_v0"], ["slow_v"], body=body),
                helper.make_node("ReduceSum", ["slow_v"], ["slow_sum"], keepdims=0),
                helper.make_node("Mul", ["slow_sum", "slow_zero"], ["slow_nothing"]),
                helper.make_node("Add", [inner, "slow_nothing"], [y]),
            ]
        )
        onnx.checker.check_model(model)
        return model

    def per_call_ms(model: onnx.ModelProto) -> float:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed = {inp.name: np.zeros(shape, dtype=np.float32)}
        session.run(None, feed)
        start = time.perf_counter()
        for _ in range(3):
            session.run(None, feed)
        return (time.perf_counter() - start) / 3 * 1000

    probe = 2000
    trips = max(1, round(probe * delay_ms / max(per_call_ms(build(probe)), 1e-3)))
    model = build(trips)
    onnx.save(model, str(target))
    return target, per_call_ms(model)
