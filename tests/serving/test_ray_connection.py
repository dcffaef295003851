"""Joining Ray keeps the process's SIGTERM handler: a Prefect worker cancels a flow run with SIGTERM, and Ray's own
handler (sys.exit) would turn that cancellation into a crash that skips the run's cancellation handling."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import os, signal, time
import ray

class Cancelled(BaseException):
    pass

def handler(signum, frame):
    raise Cancelled()

signal.signal(signal.SIGTERM, handler)
from serving.app import join_ray

join_ray()
assert ray.is_initialized()
kept = signal.getsignal(signal.SIGTERM) is handler
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    outcome = "no signal"
except Cancelled:
    outcome = "cancelled"
except SystemExit:
    outcome = "exited"
finally:
    ray.shutdown()
print(kept, outcome)
"""


def test_joining_ray_keeps_the_sigterm_handler_the_process_had() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own, not the session's
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True cancelled"
