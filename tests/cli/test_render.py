"""The renderers every command prints through: tables and sentences, never raw dicts or JSON."""

from __future__ import annotations

from cli.render import example_curl, knobs_text, print_status, serve_banner
from tests.console_text import raw_lines, render


def test_raw_data_is_recognised() -> None:
    assert raw_lines("promotion: {'model': 'minilm', 'champion': '2'}")
    assert raw_lines('  "final": {')
    assert raw_lines("[{'scenario': 'normal_load', 'level': 0.8}]")
    assert raw_lines("{")
    assert not raw_lines("champion: v2 onnx-int8 (sha256 38cdf4f3a1bd), 2 replica(s) x 1 thread(s)")
    assert not raw_lines("│ recommendation │ 2 x current-replica at $511/month │")


def test_serve_banner_says_what_the_endpoint_serves() -> None:
    meta = {
        "name": "minilm",
        "kind": "text",
        "variant": "onnx-int8-dynamic-perchannel",
        "sha256": "ab" * 32,
        "registry_version": "3",
        "origin": "models:/minilm@champion",
        "intra_op_threads": 1,
        "batching": {"max_batch_size": 4},
        "cache": {"capacity": 4096},
        "provider": "CPUExecutionProvider",
    }
    lines = serve_banner("http://127.0.0.1:8000", meta, 2, "haproxy", keyed=True)
    assert lines[4] == "  key:     KEY=<one of INFEROPS_API_KEYS>"
    assert "onnx-int8-dynamic-perchannel (sha256 abababababab, registry version 3" in lines[0]
    assert "2 replica(s) x 1 thread(s), batch <= 4, cache 4096 entries" in lines[1]
    assert "/v1/embeddings" in lines[5] and '"model": "minilm"' in lines[5] and "Bearer $KEY" in lines[5]
    assert (
        example_curl("http://h", "digits-cnn", "tensor", keyed=False)
        == "curl -s http://h/v2/models/digits-cnn"
    )
    assert knobs_text(
        {"num_replicas": 1, "intra_op_threads": 2, "max_batch_size": 8, "cache_entries": 0}
    ) == ("1 replica(s) x 2 thread(s), batch <= 8, no cache")


def test_status_with_nothing_registered_says_what_to_do() -> None:
    text = render(print_status, [])
    assert "make run" in text and not raw_lines(text)


def _cycle_out(places: list[str]) -> dict:
    results = [
        {
            "candidate": f"c{i}",
            "type": "model",
            "throughput": 1.0,
            "verdict": "rejected",
            "reason": "r",
            "measured_on": p,
        }
        for i, p in enumerate(places)
    ]
    roi = {
        "performance_improvement": 0.0,
        "cost_per_million_before": 1.0,
        "cost_per_million_after": 1.0,
        "cost_saving_rate": 0.0,
        "roi": 0.0,
        "investment_usd": 100.0,
        "yearly_benefit_usd": 0.0,
    }
    baseline = {
        "variant": "onnx-fp32",
        "measured on": places[0],
        "model level timed": "a Ray task on node 10.0.0.7, beside inferops's InferenceIngress replica, on its CPUs",
    }
    return {
        "model": "digits-cnn",
        "results": results,
        "baseline": baseline,
        "final": {"champion": None, "candidates_measured": len(results), "search": "every stage searched"},
        "roi": roi,
        "bottleneck": "model computation",
        "mlflow_run_id": "abc",
        "wall_s": 1.0,
    }


def test_where_the_model_level_was_timed_is_said_once_unless_the_candidates_differ() -> None:
    from cli.render import print_cycle

    node = "serving-node-1 (Ray node 06b2cd1b2dfb, CUDAExecutionProvider on NVIDIA A10G)"
    one_place = render(print_cycle, _cycle_out([node, node]))
    assert one_place.count("06b2cd1b2dfb") == 1 and "measured_on" not in one_place
    assert "model level timed" in one_place and "beside inferops's InferenceIngress replica" in one_place
    other = "serving-node-2 (Ray node 99aa00bb11cc, CUDAExecutionProvider on NVIDIA A10G)"
    two_places = render(print_cycle, _cycle_out([node, other]))
    assert "measured_on" in two_places and "99aa00bb11cc" in two_places
