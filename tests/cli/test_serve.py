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


def test_serve_makes_keys_on_first_run_and_its_banner_hint_answers_when_pasted(tmp_path) -> None:
    from serving.auth import ADMIN_KEYS_FILE, API_KEYS_FILE, KEYS_DIR
    from serving.settings import get_settings

    port = free_port()
    # no key configured: the first run makes a pair in the (session's) data dir and says how to use it
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INFEROPS_API_KEYS", "INFEROPS_ADMIN_KEYS"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    keys_dir = get_settings().data_dir / KEYS_DIR
    assert not (keys_dir / API_KEYS_FILE).exists()
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
        for name in (API_KEYS_FILE, ADMIN_KEYS_FILE):
            assert (keys_dir / name).stat().st_mode & 0o777 == 0o600
            assert f"made:    {keys_dir / name} (mode 0600)" in text
        key_line = next(line.split("key:", 1)[1].strip() for line in text.splitlines() if "key:" in line)
        banner = next(line for line in text.splitlines() if line.startswith("inferops serving"))
        assert "minilm: onnx-fp32 (sha256 " in banner and f"127.0.0.1:{port}" in banner
        ray_at = next(line for line in text.splitlines() if line.strip().startswith("ray:"))
        assert "started by this command" in ray_at and "export RAY_ADDRESS=" in ray_at
        answered = subprocess.run(
            ["bash", "-c", f"{key_line}; {hint}"], env=env, capture_output=True, text=True, timeout=60
        )
        body = json.loads(answered.stdout)
        assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 384, answered.stdout[:300]
        # the hint without its key is refused: the endpoint is not open
        bare = subprocess.run(["bash", "-c", hint], env=env, capture_output=True, text=True, timeout=60)
        assert json.loads(bare.stdout)["error"]["rule"] == "api_key"
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
