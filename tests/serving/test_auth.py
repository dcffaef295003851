"""API keys: constant-time check, key files, never a key in a repr, header parsing, rate limiting."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.auth import (
    KeyFileError,
    RateLimiter,
    build_keyring,
    presented_key,
    read_key_file,
    retry_after_header,
)


def test_keyring_accepts_only_configured_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8")
    ring = build_keyring(["arg-key"], key_file)
    assert ring.enabled
    for good in ("arg-key", "file-key-1", "file-key-2"):
        assert ring.check(good)
    for bad in (None, "", "arg-key ", "ARG-KEY", "file-key", "x" * 10_000, "\udcff"):
        assert not ring.check(bad)


def test_no_keys_means_auth_off() -> None:
    ring = build_keyring([])
    assert not ring.enabled
    assert ring.check(None)


def test_keys_never_appear_in_repr() -> None:
    ring = build_keyring(["super-secret-value"])
    assert "super-secret" not in repr(ring)
    assert "super-secret" not in str(ring.digests)


def test_missing_key_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "absent.txt")


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer   abc  ", None, "abc"),
        ("Basic abc", None, None),
        ("Bearer ", "k2", "k2"),
        (None, "k3", "k3"),
        (None, None, None),
    ],
)
def test_presented_key(authorization: str | None, x_api_key: str | None, expected: str | None) -> None:
    assert presented_key(authorization, x_api_key) == expected


def test_rate_limiter_refills_and_says_when_to_retry() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2.0)
    assert limiter.allow("a", now=0.0) == (True, 0.0)
    assert limiter.allow("a", now=0.0)[0]
    allowed, retry = limiter.allow("a", now=0.0)
    assert not allowed and retry == pytest.approx(0.5)
    assert limiter.allow("b", now=0.0)[0]  # keys are independent
    assert limiter.allow("a", now=0.5)[0]
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"
