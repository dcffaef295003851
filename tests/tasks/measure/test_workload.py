"""Request logs: reading a team's log with clear errors, the demo's synthetic log, and its repeat share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.measure.workload import (
    WorkloadError,
    load_request_log,
    repeat_share,
    synthetic_request_log,
    write_request_log,
)


def test_text_log_round_trip_and_both_field_names(tmp_path: Path) -> None:
    path = write_request_log(tmp_path / "log.jsonl", ["a b", "c", "a b"])
    assert load_request_log(path, "text") == ["a b", "c", "a b"]
    other = tmp_path / "other.jsonl"
    other.write_text('{"input": "x"}\n\n{"text": "y"}\n', encoding="utf-8")
    assert load_request_log(other, "text") == ["x", "y"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', "line 2: not JSON"),
        ('{"text": "ok"}\n{"text": 3}\n', "line 2: needs a non-empty string"),
        ('["a list"]\n', "line 1: needs a non-empty string"),
        ("\n\n", "has no requests"),
    ],
)
def test_bad_text_logs_name_the_line_and_rule(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WorkloadError, match=message):
        load_request_log(path, "text")


def test_missing_and_malformed_tensor_logs(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="does not exist"):
        load_request_log(tmp_path / "nope.npy", "tensor")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.arange(5, dtype=np.float32))
    with pytest.raises(WorkloadError, match=r"expected an array of requests"):
        load_request_log(flat, "tensor")
    good = write_request_log(
        tmp_path / "good.npy", [np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32)]
    )
    assert load_request_log(good, "tensor").shape == (2, 1, 2)


def test_synthetic_log_is_deterministic_and_skewed() -> None:
    pool = [f"s{i}" for i in range(100)]
    a = synthetic_request_log(pool, 2000, 1.0, seed=3)
    assert a == synthetic_request_log(pool, 2000, 1.0, seed=3)
    assert a.count("s0") > a.count("s50") * 5  # rank 1 is asked for far more often than rank 51
    assert 0.9 < repeat_share(a) < 1.0  # 2000 draws from 100 inputs: almost every request repeats
    assert repeat_share(["x", "y", "z"]) == 0.0
    assert repeat_share(np.zeros((4, 2), np.float32)) == 0.75
    with pytest.raises(WorkloadError):
        synthetic_request_log([], 10, 1.0)
