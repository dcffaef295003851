"""Loopback helpers shared by the app's launcher, the benchmarks and the tests: a free port, and whether a URL is local."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (the OS picks it; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback(url: str) -> bool:
    """True for a URL on this host (127.0.0.0/8, localhost, ::1): its processes can be watched from here."""
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")
