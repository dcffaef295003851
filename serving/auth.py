"""API keys: two roles (inference, admin), keys from the same INFEROPS_* variables on server and client, key files
with optional expiry, a first-run key pair in the data dir, constant-time checks, and rate limiting.

Keys are never logged: a ring keeps only sha256 digests, and a key is named in audit lines by a short fingerprint.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import Path

from serving.settings import Settings, get_settings, split_keys  # noqa: F401  (split_keys: part of this API)

# The data dir's key files, made by the first `inferops serve` and read by server and client on that machine.
KEYS_DIR = "keys"
API_KEYS_FILE = "api-keys"
ADMIN_KEYS_FILE = "admin-keys"
# 32 random bytes: as strong as the sha256 digests that store them. The prefix says which role a key has.
KEY_BYTES = 32
API_KEY_PREFIX = "inf_"
ADMIN_KEY_PREFIX = "adm_"
EXPIRES = "expires="
MALFORMED = "\nmalformed Authorization header"


class KeyFileError(ValueError):
    """An API-key file that cannot be read or holds a line that is not a key."""


class NoKeysError(RuntimeError):
    """An endpoint asked to start with no inference key and without `allow_anonymous`."""


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"
    EXPIRED = "expired"


@dataclass(frozen=True)
class KeyEntry:
    digest: bytes
    expires_at: float | None = None  # epoch seconds; None: never


@dataclass(frozen=True)
class KeyRing:
    """Accepted keys, stored only as sha256 digests so a repr or log line can never leak one."""

    entries: tuple[KeyEntry, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def __repr__(self) -> str:
        return f"KeyRing({len(self.entries)} keys)"

    def verify(self, presented: str | None, now: float | None = None) -> Verdict:
        """Whether `presented` is one of the keys and not expired; every stored key is compared, so the time
        taken says nothing about which key came close."""
        if not presented:
            return Verdict.MISSING
        candidate = _digest(presented)
        match: KeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(candidate, entry.digest):
                match = entry
        if match is None:
            return Verdict.INVALID
        now = time.time() if now is None else now
        if match.expires_at is not None and now >= match.expires_at:
            return Verdict.EXPIRED
        return Verdict.OK

    def check(self, presented: str | None, now: float | None = None) -> bool:
        return self.verify(presented, now) is Verdict.OK

    def merged(self, other: KeyRing) -> KeyRing:
        return KeyRing(tuple(sorted({*self.entries, *other.entries}, key=lambda e: e.digest)))

    @staticmethod
    def fingerprint(key: str) -> str:
        """A short non-reversible label for a key (for rate-limit buckets and audit lines)."""
        return _digest(key).hex()[:12]


@dataclass(frozen=True)
class Access:
    """Who may call what: inference routes take an inference or an admin key (or none when anonymous is
    allowed); admin routes take only an admin key, and are closed when no admin key is configured."""

    inference: KeyRing
    admin: KeyRing
    allow_anonymous: bool = False

    def __repr__(self) -> str:
        return f"Access(inference={self.inference!r}, admin={self.admin!r}, anonymous={self.allow_anonymous})"

    def check_inference(self, presented: str | None, now: float | None = None) -> Verdict:
        # anonymous access admits requests with no key; a key that is presented must still be a valid one
        if self.allow_anonymous and not presented:
            return Verdict.OK
        verdict = self.inference.verify(presented, now)
        if verdict is Verdict.INVALID and self.admin.enabled:
            return self.admin.verify(presented, now)
        return verdict

    def check_admin(self, presented: str | None, now: float | None = None) -> Verdict:
        return self.admin.verify(presented, now)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _expiry(text: str, path: Path, line_no: int) -> float:
    try:
        when = (
            datetime.fromisoformat(text)
            if "T" in text
            else datetime.combine(date.fromisoformat(text), datetime.min.time())
        )
    except ValueError:
        raise KeyFileError(
            f"API key file {path} line {line_no}: expiry {text!r} is not an ISO date; write "
            f"'<key> expires=2027-01-31' (or an ISO timestamp)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def read_key_entries(path: str | Path) -> list[tuple[str, float | None]]:
    """One key per line, optionally followed by `expires=<ISO date>`; blank lines and `#` comments ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            f"API key file {p} does not exist: create it (one key per line) or unset the variable naming it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            f"API key file {p} cannot be read ({exc.__class__.__name__}); fix its permissions"
        ) from None
    out: list[tuple[str, float | None]] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split()
        expires: float | None = None
        for word in rest:
            if not word.startswith(EXPIRES):
                raise KeyFileError(
                    f"API key file {p} line {line_no}: unexpected {word!r} after the key; a line is "
                    f"'<key>' or '<key> expires=<ISO date>' (keys hold no spaces)"
                )
            expires = _expiry(word.removeprefix(EXPIRES), p, line_no)
        out.append((key, expires))
    return out


def read_key_file(path: str | Path) -> list[str]:
    """The keys of a key file (expired ones too: the ring refuses those, naming the reason)."""
    return [key for key, _ in read_key_entries(path)]


def build_keyring(keys: Iterable[str] = (), key_file: str | Path | None = None) -> KeyRing:
    """Combine explicit keys and a key file into one ring (an empty ring accepts nobody)."""
    entries = {KeyEntry(_digest(k)) for k in keys if k}
    if key_file:
        entries |= {KeyEntry(_digest(k), exp) for k, exp in read_key_entries(key_file)}
    return KeyRing(tuple(sorted(entries, key=lambda e: e.digest)))


def default_key_file(settings: Settings, name: str) -> Path:
    return settings.data_dir / KEYS_DIR / name


def _role_file(settings: Settings, explicit: Path | None, name: str) -> Path | None:
    """The key file of a role: the one a variable names, else the data dir's when it exists."""
    if explicit:
        return explicit
    path = default_key_file(settings, name)
    return path if path.exists() else None


def access_from_settings(
    api_keys: Sequence[str] = (),
    api_keys_file: str | Path | None = None,
    admin_keys: Sequence[str] = (),
    admin_keys_file: str | Path | None = None,
    allow_anonymous: bool = False,
) -> Access:
    """The server's access rules: INFEROPS_API_KEYS / INFEROPS_ADMIN_KEYS (comma-separated), their *_FILE
    variables (else the data dir's key files), plus what the app's own args give."""
    settings = get_settings()
    inference = build_keyring(
        [*settings.api_keys, *api_keys], _role_file(settings, settings.api_keys_file, API_KEYS_FILE)
    )
    if api_keys_file:
        inference = inference.merged(build_keyring((), api_keys_file))
    admin = build_keyring(
        [*settings.admin_keys, *admin_keys], _role_file(settings, settings.admin_keys_file, ADMIN_KEYS_FILE)
    )
    if admin_keys_file:
        admin = admin.merged(build_keyring((), admin_keys_file))
    return Access(inference, admin, allow_anonymous or settings.allow_anonymous)


def require_keys(access: Access) -> None:
    """Refuse an endpoint that would answer anyone unless that was asked for."""
    if not access.inference.enabled and not access.allow_anonymous:
        raise NoKeysError(
            "no API key is configured, so this endpoint would answer anyone: set INFEROPS_API_KEYS "
            "(comma-separated) or INFEROPS_API_KEYS_FILE, or run `inferops serve` (it makes a key pair in the "
            "data dir on first run); to serve without keys on purpose (development only) pass "
            "allow_anonymous=true (`inferops serve --allow-anonymous`)"
        )


def _first(keys: Sequence[str], file: Path | None) -> str | None:
    if keys:
        return keys[0]
    if file is not None:
        return next(iter(read_key_file(file)), None)
    return None


def client_key(given: str | None = None) -> str | None:
    """The key a client calls inference routes with: the one given, else the first of INFEROPS_API_KEYS, of
    INFEROPS_API_KEYS_FILE, of the data dir's key file (the variables the server reads)."""
    if given:
        return given
    settings = get_settings()
    return _first(settings.api_keys, _role_file(settings, settings.api_keys_file, API_KEYS_FILE))


def client_admin_key(given: str | None = None) -> str | None:
    """The key a client calls admin routes with: the one given, else the first of INFEROPS_ADMIN_KEYS, of
    INFEROPS_ADMIN_KEYS_FILE, of the data dir's admin key file."""
    if given:
        return given
    settings = get_settings()
    return _first(settings.admin_keys, _role_file(settings, settings.admin_keys_file, ADMIN_KEYS_FILE))


@dataclass(frozen=True)
class CreatedKeys:
    """Key files made on a first run (paths only: the keys stay in the files)."""

    files: list[Path] = field(default_factory=list)


def _write_secret(path: Path, key: str) -> None:
    """A new file only this user can read; never replaces one (O_EXCL), so a key in use is never lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(
            f"# made by the first `inferops serve`; one key per line, optionally 'expires=<ISO date>'\n{key}\n"
        )


def ensure_local_keys(settings: Settings | None = None) -> CreatedKeys:
    """On a first run with no key configured, make an inference key and an admin key in the data dir (0600)."""
    settings = settings or get_settings()
    made: list[Path] = []
    roles = (
        (settings.api_keys, settings.api_keys_file, API_KEYS_FILE, API_KEY_PREFIX),
        (settings.admin_keys, settings.admin_keys_file, ADMIN_KEYS_FILE, ADMIN_KEY_PREFIX),
    )
    for keys, explicit, name, prefix in roles:
        if keys or explicit or default_key_file(settings, name).exists():
            continue
        path = default_key_file(settings, name)
        _write_secret(path, prefix + secrets.token_urlsafe(KEY_BYTES))
        made.append(path)
    return CreatedKeys(made)


def presented_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer <key>` or `x-api-key: <key>`. A malformed Authorization
    header (another scheme, an empty Bearer) is presented as itself, so it is refused as an invalid key rather than
    taken for no key at all (which an endpoint allowing anonymous calls would answer)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    # no configured key holds a newline, so this matches none, and it is not the header (a bare key there is no
    # Bearer credential and must not work as one)
    return MALFORMED if authorization is not None else None


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
