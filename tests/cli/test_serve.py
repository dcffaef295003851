"""`inferops serve` as a user runs it: the banner says what the endpoint serves, and its hint works when pasted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from serving.network import free_port

STARTUP_S = 240.0
STOP_S = 60.0


def test_serve_banner_hint_answers_when_pasted(tmp_path) -> None:
    key = "serve-test-key"
    port = free_port()
    env = {
        **os.environ,
        "INFEROPS_API_KEYS": json.dumps([key]),
        "INFEROPS_API_KEY": key,
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from cli import main; main()",
                "serve",
                "--model",
                "minilm",
                "--port",
                str(port),
                "--num-cpus",
                "2",
                "--ingress",
                "proxy",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        hint = None
        while time.monotonic() < deadline and proc.poll() is None and hint is None:
            hint = next(
                (line.split("try:", 1)[1].strip() for line in log.read_text().splitlines() if "try:" in line),
                None,
            )
            time.sleep(1)
        text = log.read_text()
        assert hint is not None, f"no hint printed; serve said:\n{text[-3000:]}"
        banner = next(line for line in text.splitlines() if line.startswith("inferops serving"))
        assert "minilm: onnx-fp32 (sha256 " in banner and f"127.0.0.1:{port}" in banner
        ray_at = next(line for line in text.splitlines() if line.strip().startswith("ray:"))
        assert "started by this command" in ray_at and "export RAY_ADDRESS=" in ray_at
        answered = subprocess.run(["bash", "-c", hint], env=env, capture_output=True, text=True, timeout=60)
        body = json.loads(answered.stdout)
        assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 384, answered.stdout[:300]
        # SIGTERM, as a service manager stops it: a clean exit, and no Ray process of its cluster left behind
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_S) == 0, log.read_text()[-2000:]
        assert "stopped" in log.read_text()
        assert _left_in_session(proc.pid) == [], "processes left after inferops serve stopped"
    finally:
        if proc.poll() is None or _left_in_session(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _left_in_session(sid: int, settle_s: float = 15.0) -> list[str]:
    """Processes still in the command's session once they had `settle_s` to exit (Ray stops its own in seconds)."""
    deadline = time.monotonic() + settle_s
    while True:
        left = []
        for p in psutil.process_iter(["pid", "name"]):
            try:
                if os.getsid(p.pid) == sid:
                    left.append(f"{p.info['pid']} {p.info['name']}")
            except (ProcessLookupError, PermissionError):
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)
