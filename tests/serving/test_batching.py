"""Length bucketing: exact partition, padding efficiency, and the trade-off against per-call overhead."""

from __future__ import annotations

import itertools

import pytest

from serving.batching import padding_efficiency, plan_buckets


def _cost(groups: list[list[int]], overhead: int) -> int:
    return sum(max(g) * len(g) + overhead for g in groups)


def test_efficiency_of_one_padded_batch() -> None:
    assert padding_efficiency([10, 10, 10]) == 1.0
    assert padding_efficiency([5, 10]) == pytest.approx(15 / 20)
    assert padding_efficiency([]) == 1.0


def test_mixed_lengths_split_into_buckets_and_raise_efficiency() -> None:
    lengths = [8, 9, 250, 7, 240, 10, 8, 255]
    plan = plan_buckets(lengths, call_overhead_tokens=64)
    assert plan.unbucketed_efficiency < 0.6
    assert plan.efficiency > 0.9
    assert len(plan.buckets) == 2
    # every item appears exactly once
    assert sorted(i for b in plan.buckets for i in b.indices) == list(range(len(lengths)))
    short = next(b for b in plan.buckets if b.max_len < 100)
    assert sorted(lengths[i] for i in short.indices) == [7, 8, 8, 9, 10]


def test_uniform_lengths_stay_one_call() -> None:
    plan = plan_buckets([12, 13, 12, 14, 13], call_overhead_tokens=64)
    assert len(plan.buckets) == 1
    assert plan.efficiency == pytest.approx(64 / 70)


def test_zero_overhead_never_pads() -> None:
    plan = plan_buckets([3, 7, 3, 7, 5], call_overhead_tokens=0)
    assert plan.efficiency == 1.0


@pytest.mark.parametrize("lengths", [[3, 50, 4, 48, 20], [1, 2, 3, 100], [30, 31, 90, 5, 6, 7]])
def test_plan_is_optimal_against_brute_force(lengths: list[int]) -> None:
    overhead = 16
    plan = plan_buckets(lengths, call_overhead_tokens=overhead)
    got = _cost([[lengths[i] for i in b.indices] for b in plan.buckets], overhead)
    ordered = sorted(lengths)
    best = None
    n = len(ordered)
    for cuts in itertools.product([0, 1], repeat=n - 1):
        groups, current = [], [ordered[0]]
        for cut, value in zip(cuts, ordered[1:], strict=True):
            if cut:
                groups.append(current)
                current = []
            current.append(value)
        groups.append(current)
        cost = _cost(groups, overhead)
        best = cost if best is None else min(best, cost)
    assert got == best


def test_max_bucket_size_is_respected() -> None:
    plan = plan_buckets([10] * 10, call_overhead_tokens=1000, max_bucket_size=4)
    assert max(len(b.indices) for b in plan.buckets) <= 4


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="call_overhead_tokens"):
        plan_buckets([1], call_overhead_tokens=-1)
    with pytest.raises(ValueError, match="token lengths"):
        plan_buckets([-3], call_overhead_tokens=64)
    assert plan_buckets([], call_overhead_tokens=64).buckets == ()


def test_run_buckets_calls_once_per_bucket_and_restores_request_order() -> None:
    import numpy as np

    from serving.batching import Bucket, BucketPlan, run_buckets

    lengths = [30, 2, 29, 3]
    plan = plan_buckets(lengths, call_overhead_tokens=4)
    calls: list[list[int]] = []

    def infer_timed(payloads: list[int]) -> tuple[np.ndarray, dict[str, float]]:
        calls.append(payloads)
        return np.asarray([[p * 10.0] for p in payloads]), {"compute": 0.001 * len(calls)}

    out = run_buckets(infer_timed, lengths, plan)
    assert len(calls) == len(plan.buckets) == 2 and sorted(map(sorted, calls)) == [[2, 3], [29, 30]]
    assert [float(row[0]) for row, _ in out] == [300.0, 20.0, 290.0, 30.0]  # each answer back at its request
    assert out[0][1] is out[2][1] and out[1][1] is out[3][1]  # the phases of the call that made the row
    partial = BucketPlan((Bucket((1, 3), 3, 5), Bucket((2,), 29, 29)), real_tokens=34, padded_tokens=35)
    with pytest.raises(ValueError, match=r"left requests \[0\] out"):
        run_buckets(infer_timed, lengths, partial)
