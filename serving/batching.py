"""Length bucketing for text batches: split one dynamic batch into sub-batches of similar token length.

A transformer batch is padded to its longest sequence, so one long text in a batch of short ones makes every
row pay for the long one. Ray Serve's `@serve.batch` gives us the requests that arrived together; here we
partition them (sorted by token length) into contiguous groups that minimise padded tokens plus a fixed
per-call overhead, so we neither pad wastefully nor make one engine call per text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Bucket:
    """Indices into the original batch that run together, and their padded shape."""

    indices: tuple[int, ...]
    max_len: int
    real_tokens: int

    @property
    def padded_tokens(self) -> int:
        return self.max_len * len(self.indices)


@dataclass(frozen=True)
class BucketPlan:
    """How a batch is split, with its padding efficiency (real tokens / padded tokens)."""

    buckets: tuple[Bucket, ...]
    real_tokens: int
    padded_tokens: int
    unbucketed_padded_tokens: int = field(default=0)

    @property
    def efficiency(self) -> float:
        return padding_efficiency_from(self.real_tokens, self.padded_tokens)

    @property
    def unbucketed_efficiency(self) -> float:
        return padding_efficiency_from(self.real_tokens, self.unbucketed_padded_tokens)


def padding_efficiency_from(real_tokens: int, padded_tokens: int) -> float:
    """Real tokens over padded tokens; 1.0 for an empty batch (nothing was wasted)."""
    if padded_tokens <= 0:
        return 1.0
    return real_tokens / padded_tokens


def padding_efficiency(lengths: Sequence[int]) -> float:
    """Efficiency of running `lengths` as one batch padded to the longest."""
    if not lengths:
        return 1.0
    return padding_efficiency_from(sum(lengths), max(lengths) * len(lengths))


def plan_buckets(
    lengths: Sequence[int],
    *,
    call_overhead_tokens: int,
    max_bucket_size: int | None = None,
) -> BucketPlan:
    """Partition a batch by token length, minimising padded tokens + overhead per engine call.

    `call_overhead_tokens`: what one engine call costs in padded tokens of work (session.run and tokenizer set-up;
    policy `serving.call_overhead_tokens`). Exact dynamic programme over the length-sorted order (contiguous
    groups are optimal once sorted); O(n^2) for n <= max_batch_size, which is small.
    """
    if call_overhead_tokens < 0:
        raise ValueError(f"call_overhead_tokens must be >= 0, got {call_overhead_tokens}")
    if any(length < 0 for length in lengths):
        raise ValueError(f"token lengths must be >= 0, got {list(lengths)}")
    n = len(lengths)
    if n == 0:
        return BucketPlan(buckets=(), real_tokens=0, padded_tokens=0, unbucketed_padded_tokens=0)
    limit = max_bucket_size or n
    order = sorted(range(n), key=lambda i: lengths[i])
    sorted_lengths = [max(1, lengths[i]) for i in order]
    inf = float("inf")
    # best[j]: least cost to run the first j sorted items; cut[j]: start of the last group.
    best = [0.0] + [inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = sorted_lengths[j - 1]  # sorted, so the group's longest is its last item
        for i in range(max(0, j - limit), j):
            cost = best[i] + longest * (j - i) + call_overhead_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[Bucket] = []
    j = n
    while j > 0:
        i = cut[j]
        idx = tuple(order[i:j])
        groups.append(
            Bucket(indices=idx, max_len=sorted_lengths[j - 1], real_tokens=sum(lengths[k] for k in idx))
        )
        j = i
    groups.reverse()
    real = sum(lengths)
    return BucketPlan(
        buckets=tuple(groups),
        real_tokens=real,
        padded_tokens=sum(b.padded_tokens for b in groups),
        unbucketed_padded_tokens=max(max(1, x) for x in lengths) * n,
    )


def run_buckets(
    infer_timed: Callable[[list[Any]], tuple[np.ndarray, dict[str, float]]],
    payloads: Sequence[Any],
    plan: BucketPlan,
) -> list[tuple[np.ndarray, dict[str, float]]]:
    """One engine call per bucket of `plan`; each payload's output row, with the phases of the call that made it,
    back in the order of `payloads` (what a replica's batch handler returns per request)."""
    outputs: list[tuple[np.ndarray, dict[str, float]] | None] = [None] * len(payloads)
    for bucket in plan.buckets:
        rows, phases = infer_timed([payloads[i] for i in bucket.indices])
        for row, i in enumerate(bucket.indices):
            outputs[i] = (rows[row], phases)
    missing = [i for i, o in enumerate(outputs) if o is None]
    if missing:
        raise ValueError(f"the bucket plan left requests {missing} out; plan every payload once")
    return outputs  # type: ignore[return-value]
