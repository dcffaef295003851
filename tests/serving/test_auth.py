"""API keys: two roles, the variables server and client share, key files with expiry, first-run keys, refusing an
open endpoint, constant-time checks, never a key in a repr, header parsing, rate limiting."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.auth import (
    ADMIN_KEYS_FILE,
    API_KEYS_FILE,
    KEYS_DIR,
    MALFORMED,
    Access,
    KeyFileError,
    NoKeysError,
    RateLimiter,
    Verdict,
    access_from_settings,
    build_keyring,
    client_admin_key,
    client_key,
    ensure_local_keys,
    presented_key,
    read_key_file,
    require_keys,
    retry_after_header,
)
from serving.settings import get_settings


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No key variables and an empty data dir of the test's own."""
    for var in list(os.environ):
        if var.startswith(("INFEROPS_API_KEYS", "INFEROPS_ADMIN_KEYS", "INFEROPS_ALLOW_ANONYMOUS")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("INFEROPS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_keyring_accepts_only_configured_keys(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8")
    ring = build_keyring(["arg-key"], key_file)
    assert ring.enabled
    for good in ("arg-key", "file-key-1", "file-key-2"):
        assert ring.check(good)
    for bad in (None, "", "arg-key ", "ARG-KEY", "file-key", "x" * 10_000, "\udcff"):
        assert not ring.check(bad)


def test_an_empty_ring_accepts_nobody() -> None:
    ring = build_keyring([])
    assert not ring.enabled
    assert ring.verify(None) is Verdict.MISSING
    assert ring.verify("anything") is Verdict.INVALID


def test_expired_keys_are_refused_as_expired(tmp_path: Path) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("old-key expires=2020-01-01\nnew-key expires=2999-01-01T00:00:00+00:00\n")
    ring = build_keyring((), key_file)
    assert ring.verify("old-key") is Verdict.EXPIRED
    assert ring.verify("new-key") is Verdict.OK
    assert read_key_file(key_file) == ["old-key", "new-key"]


@pytest.mark.parametrize(
    ("line", "match"),
    [("k expires=soon", "not an ISO date"), ("k extra", "unexpected 'extra'")],
)
def test_a_bad_key_file_line_names_the_file_line_and_fix(tmp_path: Path, line: str, match: str) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"good\n{line}\n")
    with pytest.raises(KeyFileError, match=match) as err:
        build_keyring((), key_file)
    assert f"{key_file} line 2" in str(err.value)


def test_keys_never_appear_in_repr() -> None:
    ring = build_keyring(["super-secret-value"])
    access = Access(ring, build_keyring(["admin-secret"]))
    assert "super-secret" not in repr(ring) and "admin-secret" not in repr(access)
    assert "super-secret" not in str(ring.entries)


def test_missing_key_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "absent.txt")


def test_admin_routes_take_only_admin_keys() -> None:
    access = Access(build_keyring(["inference"]), build_keyring(["admin"]))
    assert access.check_inference("inference") is Verdict.OK
    assert access.check_inference("admin") is Verdict.OK  # an admin may also call the model
    assert access.check_admin("inference") is Verdict.INVALID
    assert access.check_admin("admin") is Verdict.OK
    assert access.check_admin(None) is Verdict.MISSING
    anonymous = Access(build_keyring([]), build_keyring(["admin"]), allow_anonymous=True)
    assert anonymous.check_inference(None) is Verdict.OK
    assert anonymous.check_inference("forged") is Verdict.INVALID  # a presented key must be valid
    assert anonymous.check_admin(None) is Verdict.MISSING


def test_the_comma_separated_form_configures_server_and_client(
    fresh_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFEROPS_API_KEYS", "key1, key2")
    monkeypatch.setenv("INFEROPS_ADMIN_KEYS", '["adm1"]')  # the JSON form still works
    get_settings.cache_clear()
    access = access_from_settings()
    assert access.check_inference("key1") is Verdict.OK and access.check_inference("key2") is Verdict.OK
    assert access.check_admin("adm1") is Verdict.OK
    assert client_key() == "key1" and client_admin_key() == "adm1"
    assert client_key("given") == "given"


def test_an_endpoint_with_no_key_is_refused_unless_anonymous_is_asked_for(fresh_settings: Path) -> None:
    with pytest.raises(NoKeysError, match="INFEROPS_API_KEYS.*--allow-anonymous"):
        require_keys(access_from_settings())
    require_keys(access_from_settings(allow_anonymous=True))
    require_keys(access_from_settings(api_keys=["k"]))


def test_the_app_refuses_to_build_without_keys(fresh_settings: Path) -> None:
    from serving.app import app_config

    with pytest.raises(NoKeysError, match="would answer anyone"):
        app_config({"model": "digits-cnn"})
    assert app_config({"model": "digits-cnn", "allow_anonymous": True})["args"]["allow_anonymous"] is True


def test_first_run_makes_a_key_pair_only_this_user_can_read(fresh_settings: Path) -> None:
    made = ensure_local_keys().files
    keys_dir = fresh_settings / KEYS_DIR
    assert made == [keys_dir / API_KEYS_FILE, keys_dir / ADMIN_KEYS_FILE]
    for path in made:
        assert path.stat().st_mode & 0o777 == 0o600
    assert keys_dir.stat().st_mode & 0o777 == 0o700
    inference, admin = client_key(), client_admin_key()
    assert inference and inference.startswith("inf_") and admin and admin.startswith("adm_")
    access = access_from_settings()
    assert access.check_inference(inference) is Verdict.OK
    assert access.check_admin(admin) is Verdict.OK and access.check_admin(inference) is Verdict.INVALID
    # a second run keeps the keys in use
    assert ensure_local_keys().files == []
    assert client_key() == inference


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer   abc  ", None, "abc"),
        ("Basic abc", None, MALFORMED),  # refused as a bad key, never taken for no key
        ("abc", None, MALFORMED),
        ("Bearer ", "k2", "k2"),
        ("Bearer ", None, MALFORMED),
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
