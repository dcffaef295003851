"""The hostile-input corpus is really hostile, is sent byte for byte, and is judged strictly."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from serving import routes
from tasks.policy import default_policy
from tasks.release import hostile_inputs as hi

LIMITS = default_policy().endpoint


def _by_name(requests: list[hi.HostileRequest]) -> dict[str, hi.HostileRequest]:
    return {r.name: r for r in requests}


def test_body_attacks_break_the_rules_they_name() -> None:
    reqs = _by_name(hi.body_attacks("m", LIMITS))
    assert len(reqs["oversized body"].body) > LIMITS.max_body_bytes
    assert reqs["oversized body"].expect_status == 413
    assert reqs["oversized body without Content-Length"].chunked
    with pytest.raises(UnicodeDecodeError):
        reqs["invalid UTF-8"].body.decode("utf-8")
    deep = reqs["deeply nested JSON"].body
    assert deep.count(b"[") >= hi.DEEP_JSON_LEVELS
    with pytest.raises(ValueError):
        json.loads(reqs["not JSON"].body)


def test_text_and_tensor_inputs_break_the_limits() -> None:
    text = _by_name(hi.text_inputs("minilm", LIMITS))
    assert len(json.loads(text["embeddings: huge batch"].body)["input"]) == LIMITS.max_items + 1
    assert (
        len(json.loads(text["embeddings: over-long text (chars)"].body)["input"]) == LIMITS.max_text_chars + 1
    )
    assert json.loads(text["embeddings: empty string"].body)["input"] == ""
    assert b"NaN" in text["embeddings: NaN as input"].body
    tensor = _by_name(hi.tensor_inputs("digits-cnn", LIMITS, [None, 1, 8, 8]))
    huge = json.loads(tensor["oip tensor: huge batch"].body)["inputs"][0]
    assert huge["shape"][0] == LIMITS.max_items + 1 and len(huge["data"]) == (LIMITS.max_items + 1) * 64
    assert (
        json.loads(tensor["oip tensor: BYTES for a numeric model"].body)["inputs"][0]["datatype"] == "BYTES"
    )
    assert b"NaN" in tensor["oip tensor: NaN"].body


def test_file_access_probes_cover_traversal_and_static() -> None:
    probes = hi.file_access("minilm", ["onnx-int8.onnx"])
    paths = [p.path for p in probes]
    assert "/../models/minilm/onnx-int8.onnx" in paths
    assert "/static/onnx-int8.onnx" in paths
    assert any("%2e%2e" in p for p in paths)
    assert all(p.kind == "file_access" and p.method == "GET" for p in probes)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str, int]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        _Recorder.seen.append((self.command, self.path, len(body)))
        payload = b'{"error": "nope"}'
        self.send_response(404)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def recorder_url() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_send_keeps_the_raw_path_and_body(recorder_url: str) -> None:
    """`..` and percent escapes reach the server as written (a normalising client would hide the attack)."""
    probe = hi.HostileRequest("t", "GET", "/../models/m/x.onnx", kind="file_access", headers=())
    assert hi.send(recorder_url, probe, None).status == 404
    post = hi.HostileRequest("u", "POST", routes.INFER.path("m"), b"\xff\xfe")
    assert hi.send(recorder_url, post, "k").status == 404
    assert _Recorder.seen == [("GET", "/../models/m/x.onnx", 0), ("POST", routes.INFER.path("m"), 2)]


def test_judge_is_strict() -> None:
    attack = hi.HostileRequest("x", "POST", "/p", b"{}")
    assert hi.judge(attack, hi.RawResponse(400, b"{}"))[0]
    assert not hi.judge(attack, hi.RawResponse(500, b""))[0]
    assert not hi.judge(attack, hi.RawResponse(200, b"{}"))[0]
    assert not hi.judge(attack, hi.RawResponse(None, b"", "ConnectionResetError"))[0]
    ok, why = hi.judge(attack, hi.RawResponse(401, b""))
    assert not ok and "key" in why  # a refused key means the input was never judged
    assert not hi.judge(attack, hi.RawResponse(429, b""))[0]
    probe = hi.HostileRequest("f", "GET", "/static/x.onnx", kind="file_access", expect_status=404)
    assert hi.judge(probe, hi.RawResponse(401, b"{}"))[0]  # refusing a file fetch for want of a key is fine
    head = b"\x08\x07\x12\x07pytorch"
    assert not hi.judge(probe, hi.RawResponse(404, b"..." + head + b"..."), artifact_head=head)[0]
