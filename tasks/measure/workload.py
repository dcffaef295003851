"""The request workload the cycle times candidates on: a team's request log, or one the project makes itself.

A request log is what a response cache is judged on: its hit rate is a property of the workload, not of the
model. Text models read JSON Lines (one request per line, `{"text": ...}` or `{"input": ...}`); tensor models
read a `.npy` array whose first axis is the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.artifacts import write_artifact

MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class Workload:
    """A request log and the share of its requests that repeat an earlier one (an unbounded cache's hit rate)."""

    source: str
    requests: Any  # list[str] for text models, an array for tensor models
    repeat_share: float


def read_workload(path: str | Path, kind: str) -> Workload:
    """The request log at `path` for a `kind` model, with its repeat share."""
    requests = load_request_log(path, kind)
    return Workload(str(path), requests, repeat_share(requests))


class WorkloadError(ValueError):
    """A request log that cannot be used; the message names the file, the line and the rule."""


def load_request_log(path: str | Path, kind: str) -> list[str] | np.ndarray:
    """Read a request log for a `kind` ("text" or "tensor") model, in request order."""
    file = Path(path)
    if not file.is_file():
        raise WorkloadError(
            f"request log {file} does not exist; give a JSON Lines file of requests (or .npy for tensors)"
        )
    if kind == "tensor":
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise WorkloadError(f"request log {file}: not a .npy array ({exc})") from None
        if array.ndim < 2 or len(array) == 0:
            raise WorkloadError(
                f"request log {file}: expected an array of requests (N, ...), got shape {array.shape}"
            )
        return np.asarray(array[:MAX_REQUESTS], dtype=np.float32)
    texts: list[str] = []
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record: Any = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"request log {file} line {number}: not JSON ({exc.msg})") from None
            text = record.get("text", record.get("input")) if isinstance(record, dict) else None
            if not isinstance(text, str) or not text:
                raise WorkloadError(
                    f"request log {file} line {number}: needs a non-empty string under 'text' or 'input'"
                )
            texts.append(text)
            if len(texts) >= MAX_REQUESTS:
                break
    if not texts:
        raise WorkloadError(f"request log {file} has no requests")
    return texts


def synthetic_request_log(
    pool: list[str] | np.ndarray, requests: int, zipf_s: float, seed: int = 0
) -> list[Any]:
    """`requests` draws from `pool` with Zipf popularity (rank r drawn with weight 1/r^s): a few inputs are asked
    for often, most rarely, as in search and FAQ traffic. The demo's workload; real logs replace it."""
    if requests < 1 or len(pool) == 0:
        raise WorkloadError("a synthetic request log needs at least one request and a non-empty pool")
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(pool) + 1, dtype=np.float64)
    weights = ranks**-zipf_s
    picks = rng.choice(len(pool), size=requests, p=weights / weights.sum())
    return [pool[int(i)] for i in picks]


def write_request_log(path: Path, requests: list[Any]) -> Path:
    """Write a request log in the format `load_request_log` reads (atomically, with a manifest)."""
    if requests and not isinstance(requests[0], str):

        def save(tmp: Path) -> None:
            with tmp.open("wb") as fh:  # a file object: np.save would append .npy to the temporary name
                np.save(fh, np.stack(requests), allow_pickle=False)

        write_artifact(path, save, {"requests": len(requests)})
        return path
    lines = "".join(json.dumps({"text": t}) + "\n" for t in requests)
    write_artifact(path, lambda p: p.write_text(lines, encoding="utf-8"), {"requests": len(requests)})
    return path


def repeat_share(requests: list[Any] | np.ndarray) -> float:
    """Share of requests that repeat an earlier one: the hit rate an unbounded cache would reach."""
    seen: set[bytes | str] = set()
    repeats = 0
    for item in requests:
        key = item if isinstance(item, str) else np.ascontiguousarray(item).tobytes()
        repeats += key in seen
        seen.add(key)
    return repeats / len(requests) if len(requests) else 0.0


# The demo's request log: Zipf popularity with exponent 0.8 (web-search query logs measure 0.7-1.0) over the
# model's example inputs. A team's own log replaces it (`request_log=`).
DEMO_ZIPF_S = 0.8
DEMO_POOL = 300
DEMO_REQUESTS = 1024


def demo_request_log(model: str, path: Path) -> Path:
    """Write the demo's synthetic request log for `model` (text or tensor) to `path`."""
    from serving.zoo import get_model

    pool = get_model(model).example_inputs(DEMO_POOL)
    items = list(pool) if not isinstance(pool, np.ndarray) else [row for row in pool]
    return write_request_log(path, synthetic_request_log(items, DEMO_REQUESTS, DEMO_ZIPF_S))
