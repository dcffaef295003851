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


def checked_url(value: str | None, name: str) -> str | None:
    """`required_url` for an optional parameter: None stays None."""
    return None if value is None else required_url(value, name)


def required_url(value: str, name: str) -> str:
    """`value` as an endpoint base URL (no trailing slash); a ValueError naming the parameter for an empty or
    non-http(s) value. An empty value is what a deployment gets when a Prefect variable its prefect.yaml names
    (`{{ prefect.variables.… }}`) was not set when `prefect deploy` ran."""
    text = value.strip()
    if not text:
        raise ValueError(
            f"{name} is empty: pass an http(s) URL; in a deployment, set the Prefect variable its prefect.yaml "
            "names (e.g. `prefect variable set inferops_endpoint_url http://serve-host:8000`) and run "
            "`prefect deploy --all` again"
        )
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} {value!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000")
    return text.rstrip("/")
