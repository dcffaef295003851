"""A faulty copy of an ONNX model: the same answers for most inputs, a run-time error for the rest. A batch fails
when any of its rows has a mean above a threshold drawn from example inputs, so about a chosen share of real
requests error out while warm-up and validation with all-zeros inputs still pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def faulty_copy(source: Path, target: Path, fail_share: float, examples: np.ndarray) -> tuple[Path, float]:
    """A copy of an ONNX model that answers the same, except that onnxruntime raises ("indices element out of data
    bounds") on a batch with any row whose mean over the non-batch axes is above a threshold `t`. `t` is the
    (1 - `fail_share`) quantile of the row means of `examples`, so about `fail_share` of its rows fail; an all-zeros
    row always passes (a negative `t` is refused). Returns `target` and the share of `examples` rows that raised,
    each run alone through onnxruntime on the CPU."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if not 0.0 <= fail_share <= 1.0:
        raise ValueError(f"fail_share must lie in [0, 1], got {fail_share}")
    rows = np.asarray(examples, dtype=np.float32)
    if rows.ndim < 1 or len(rows) == 0:
        raise ValueError(f"examples must hold at least one row on axis 0, got shape {rows.shape}")
    row_means = rows.reshape(len(rows), -1).mean(axis=1, dtype=np.float32)
    threshold = float(np.quantile(row_means, 1.0 - fail_share))
    if threshold < 0:
        raise ValueError(
            f"the threshold for fail_share={fail_share} is {threshold:.6g} < 0: an all-zeros input (warm-up, "
            "validation) would fail too; pick a smaller fail_share or examples whose row means are mostly >= 0"
        )

    model = onnx.load(str(source))
    graph = model.graph
    x, y = graph.input[0].name, graph.output[0].name
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inner = f"{y}__before_fault"
    for node in graph.node:
        node.output[:] = [inner if o == y else o for o in node.output]
        node.input[:] = [inner if i == y else i for i in node.input]

    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(threshold, dtype=np.float32), "fault_threshold"),
            numpy_helper.from_array(np.array([0.0], dtype=np.float32), "fault_table"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "fault_zero"),
        ]
    )
    # Flatten to [batch, rest] first: the mean over axis 1 is then the mean over all non-batch axes, whatever the
    # input's rank (which the graph may not state).
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "fault_axes"))
        mean = helper.make_node(
            "ReduceMean", ["fault_flat", "fault_axes"], ["fault_mean"], "fault_mean", keepdims=0
        )
    else:
        mean = helper.make_node(
            "ReduceMean", ["fault_flat"], ["fault_mean"], "fault_mean", axes=[1], keepdims=0
        )
    graph.node.extend(
        [
            helper.make_node("Flatten", [x], ["fault_flat"], "fault_flat", axis=1),
            mean,
            helper.make_node("Greater", ["fault_mean", "fault_threshold"], ["fault_fails"], "fault_fails"),
            helper.make_node("Cast", ["fault_fails"], ["fault_index"], "fault_index", to=TensorProto.INT64),
            # index 1 into a one-element table: out of bounds, so the run raises, for any failing row
            helper.make_node(
                "Gather", ["fault_table", "fault_index"], ["fault_picked"], "fault_gather", axis=0
            ),
            # no axes: every opset reduces over all of them
            helper.make_node("ReduceSum", ["fault_picked"], ["fault_sum"], "fault_sum", keepdims=0),
            helper.make_node("Mul", ["fault_sum", "fault_zero"], ["fault_nothing"], "fault_nothing"),
            helper.make_node("Add", [inner, "fault_nothing"], [y], "fault_add"),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(target))

    def session(path: Path) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    original, faulty = session(source), session(target)
    name = faulty.get_inputs()[0].name
    zeros = np.zeros((1, *rows.shape[1:]), dtype=np.float32)
    failed = 0
    for row in [zeros, *(rows[i : i + 1] for i in range(len(rows)))]:
        try:
            got = faulty.run(None, {name: row})[0]
        except Exception:
            if row is zeros:
                raise RuntimeError(f"the faulty copy {target} raises on an all-zeros input") from None
            failed += 1
            continue
        want = original.run(None, {name: row})[0]
        if not np.allclose(got, want):
            raise RuntimeError(
                f"the faulty copy {target} answers differently from {source} on a passing input"
            )
    return target, failed / len(rows)
