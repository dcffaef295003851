"""A fake replica for the gate tests: the real HTTP layer over a model that misbehaves on demand.

It is `serving.api.create_api` (auth, limits, hostile-input handling) over a tiny numpy model whose latency,
memory leak and reported sha256 come from a control file the test edits. A user cannot make a real replica leak
on demand; everything else is real HTTP on loopback. Run as `python -m tests.fake_replica --port P --control F`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving import routes
from tasks.policy import default_policy
from tests.servers import subprocess_server

API_KEY = "gate-test-key"
ADMIN_KEY = "gate-test-admin-key"
FAKE_MODEL = "fake-cnn"
FEATURES = 4
HEALTHY_SHA = "a" * 64


def build_fake_app(control: Path) -> Any:
    """`create_api` over a fake InferenceService driven by `control` (JSON, re-read on every request)."""
    from serving.api import RequestRejected, create_api
    from serving.auth import access_from_settings

    ep = default_policy().endpoint
    weights = np.random.default_rng(0).standard_normal((FEATURES, 3)).astype(np.float32)

    class FakeService:
        limits = ep
        # its own keys plus the INFEROPS_* variables it runs with, as a real app's replicas read them
        access = access_from_settings(api_keys=[API_KEY], admin_keys=[ADMIN_KEY])
        held: list[bytes] = []

        async def rate_limit(self, key_id: str) -> tuple[bool, float]:
            return True, 0.0

        def cfg(self) -> dict[str, Any]:
            return dict(json.loads(control.read_text()))

        def model_names(self) -> list[str]:
            return [self.cfg()["model"]]

        async def health(self) -> dict[str, Any]:
            cfg = self.cfg()
            return {"ready": True, "models": [{"name": cfg["model"], "sha256": cfg["sha256"]}]}

        async def metadata(self, model: str) -> dict[str, Any]:
            cfg = self.cfg()
            if model != cfg["model"]:
                raise RequestRejected(404, "model", "known_model", [cfg["model"]], f"unknown model {model!r}")
            return {
                "name": model,
                "kind": "tensor",
                "input_shape": [None, FEATURES],
                "sha256": cfg["sha256"],
                "variant": "fake",
                "provider": "CPUExecutionProvider",
            }

        async def infer_tensor(self, model: str, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]:
            cfg = self.cfg()
            await asyncio.sleep(cfg["latency_ms"] / 1000.0)  # concurrent: slow answers, not a queue
            if cfg.get("leak_kb"):
                self.held.append(b"\x01" * (cfg["leak_kb"] * 1024))  # filled, so the pages are resident
            logits = array.reshape(len(array), -1) @ weights
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            return {
                "outputs": probs / probs.sum(axis=1, keepdims=True),
                "sha256": cfg["sha256"],
                "variant": "fake",
                "timings": {"compute": cfg["latency_ms"] / 1000.0},
            }

        async def embed(
            self, model: str, texts: list[str], truncate: bool, use_cache: bool = True
        ) -> dict[str, Any]:
            raise RequestRejected(400, "model", "text_model", None, f"{model} is not an embedding model")

        async def switch_model(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
            cfg = self.cfg()
            # What the switched-to version serves like, where the test says (`by_uri`: uri -> sha256, latency_ms);
            # else the replica's own sha256 at its fast latency.
            uri = request.get("uri")
            served = cfg.get("by_uri", {}).get(uri, {})
            cfg["latency_ms"] = served.get("latency_ms", cfg.get("fast_ms", 5.0))
            cfg["sha256"] = served.get("sha256", cfg["sha256"])
            cfg["switches"] = [*cfg.get("switches", []), request]
            control.write_text(json.dumps(cfg))
            return {"verdict": "switched", "model": model, "request": request}

        async def rollback_model(self, model: str) -> dict[str, Any]:
            return await self.switch_model(model, {"rollback": True})

        async def configure_model(
            self,
            model: str,
            patch: dict[str, Any],
            num_replicas: int | None,
            autoscaling: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            return {"persisted": False, "reason": "the fake replica has no serving knobs"}

        async def serving_config(self, model: str) -> dict[str, Any]:
            return {"reason": "the fake replica has no deployment config"}

    return create_api(FakeService())


@dataclass
class FakeReplica:
    url: str
    pid: int
    control: Path

    def set(self, **changes: Any) -> None:
        cfg = json.loads(self.control.read_text())
        cfg.update(changes)
        self.control.write_text(json.dumps(cfg))

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.control.read_text()))


@contextmanager
def fake_replica(
    tmp: Path,
    *,
    latency_ms: float = 5.0,
    leak_kb: int = 0,
    sha256: str = HEALTHY_SHA,
    model: str = FAKE_MODEL,
) -> Iterator[FakeReplica]:
    """Start the fake replica serving `model` in a subprocess on a free loopback port; stop it on exit."""
    control = tmp / f"fake-replica-{time.monotonic_ns()}.json"
    cfg = {
        "model": model,
        "latency_ms": latency_ms,
        "fast_ms": latency_ms,
        "leak_kb": leak_kb,
        "sha256": sha256,
    }
    control.write_text(json.dumps(cfg))
    args = ["--control", str(control)]
    with subprocess_server("tests.fake_replica", args, routes.LIVE.path(), startup_s=60) as (url, proc):
        yield FakeReplica(url, proc.pid, control)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="fake replica for the gate tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_fake_app(args.control), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
