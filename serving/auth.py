"""API-key access control: keys from settings, a secret file or app args; constant-time comparison; never logged."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from serving.settings import get_settings


class KeyFileError(ValueError):
    """An API-key file that cannot be read."""


@dataclass(frozen=True)
class KeyRing:
    """Accepted keys, stored only as sha256 digests so a repr or log line can never leak one."""

    digests: tuple[bytes, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self.digests)} keys)"

    def check(self, presented: str | None) -> bool:
        """True if `presented` matches a key; every stored key is compared so timing leaks nothing."""
        if not self.digests:
            return True
        if not presented:
            return False
        candidate = _digest(presented)
        ok = False
        for digest in self.digests:
            ok |= hmac.compare_digest(candidate, digest)
        return ok

    @staticmethod
    def fingerprint(key: str) -> str:
        """A short non-reversible label for a key (for rate-limit buckets and audit lines)."""
        return _digest(key).hex()[:12]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def read_key_file(path: str | Path) -> list[str]:
    """One key per line; blank lines and `#` comments ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            f"API key file {p} does not exist: create it (one key per line) or unset it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            f"API key file {p} cannot be read ({exc.__class__.__name__}); fix its permissions"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def build_keyring(keys: Iterable[str] = (), key_file: str | Path | None = None) -> KeyRing:
    """Combine explicit keys and a key file into one ring (empty ring = auth off)."""
    all_keys = [k for k in keys if k]
    if key_file:
        all_keys.extend(read_key_file(key_file))
    return KeyRing(digests=tuple(sorted({_digest(k) for k in all_keys})))


def keyring_from_settings(extra_keys: Iterable[str] = (), extra_file: str | Path | None = None) -> KeyRing:
    """Keys from `INFEROPS_API_KEYS` / `INFEROPS_API_KEYS_FILE` plus any given by the app args."""
    settings = get_settings()
    keys = [*settings.api_keys, *extra_keys]
    ring = build_keyring(keys, settings.api_keys_file)
    if extra_file:
        ring = KeyRing(digests=tuple(sorted({*ring.digests, *build_keyring((), extra_file).digests})))
    return ring


def client_key(given: str | None = None) -> str | None:
    """The key a client of the endpoint calls with: the one given, else INFEROPS_API_KEY, else one the server
    accepts (INFEROPS_API_KEYS, then INFEROPS_API_KEYS_FILE) when client and server share a configuration."""
    import os

    settings = get_settings()
    keys = [given, os.environ.get("INFEROPS_API_KEY"), *settings.api_keys]
    if not any(keys) and settings.api_keys_file:
        keys += read_key_file(settings.api_keys_file)
    return next((k for k in keys if k), None)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>`."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key:
        return x_api_key.strip()
    return None


class RateLimiter:
    """Token bucket per key fingerprint; `allow()` returns (allowed, retry_after_s)."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.rate = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str, now: float | None = None) -> tuple[bool, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._state.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[key_id] = (tokens - 1.0, now)
                return True, 0.0
            self._state[key_id] = (tokens, now)
            return False, (1.0 - tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it is admitted."""
    return str(max(1, math.ceil(seconds)))
