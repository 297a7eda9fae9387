"""Browser session cookies, CSRF tokens and the signing secret (docs/web.md "Login").

A browser session is a signed cookie (itsdangerous, HMAC-SHA1 over a key derived
from the secret) holding the account id, the account's `session_version` when the
cookie was issued, the session's random token, a CSRF token and the login time.
The server keeps one row per open session (`web_sessions`, by the token's
SHA-256; `web.users`), so viewing a page writes nothing but the audit row:

- idle timeout: the signature's timestamp is the last activity; a cookie older
  than the idle timeout is refused, and each request re-issues it (at most once a
  minute) so activity keeps it alive; a login lasts at most `max_age` in all;
- logout deletes that browser's session row only; a role, password or disable
  change increments the account's `session_version` (and deletes its rows), so
  every cookie issued before is refused;
- the cookie is HttpOnly, SameSite=Strict, path `/`, and Secure when the request
  came over https (or always, when configured; then `web.app` sends HSTS too);
- every form carries the session's CSRF token in the hidden field `csrf_token`;
  the login form, shown before any session exists, takes its token from a short
  pre-login cookie of its own. Tokens compare in constant time.

The secret lives in `<data_dir>/web-secret`, created 0600 on first run (whole, under
a temporary name linked into place, so workers starting together share one).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from parsers.errors import PumptrailError

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "pt_session"
LOGIN_COOKIE: Final = "pt_login"
CSRF_FIELD: Final = "csrf_token"
SECRET_FILE: Final = "web-secret"  # noqa: S105 - the file name, not a secret
SECRET_BYTES: Final = 48
# A cookie is re-issued when its signature is older than this (sliding idle timeout).
REFRESH_AFTER_S: Final = 60
LOGIN_FORM_MAX_AGE_S: Final = 3600


class SecretError(PumptrailError):
    """Raised by `load_secret` when `<data_dir>/web-secret` cannot be created or read.

    Also when it holds fewer than 32 characters; the message names the file.
    """


def load_secret(data_dir: Path) -> str:
    """The signing secret from `<data_dir>/web-secret`, created 0600 when missing.

    A file readable by others is made 0600 again (with a warning); an empty or
    unreadable one is an error.
    """
    path = Path(data_dir) / SECRET_FILE
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    if not path.exists():
        try:
            created = _create_secret(path)
        except OSError as exc:
            raise SecretError(f"{path}: cannot create: {exc.strerror or exc}") from exc
        if created:
            log.info("created the web signing secret %s", path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o): made 0600", path, mode)
            os.chmod(path, 0o600)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"{path}: cannot read: {exc}") from exc
    if len(text) < 32:
        raise SecretError(f"{path}: the secret is shorter than 32 characters")
    return text


def _create_secret(path: Path) -> bool:
    """Write a new secret to `path` unless one is there; True when this call made it.

    The secret is written under a temporary name, flushed, and linked to its final
    name: several workers starting at once all end up reading the same whole file,
    never a half-written one.
    """
    temporary = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


@dataclass(frozen=True, slots=True)
class BrowserSession:
    """What a valid session cookie says."""

    user_id: int
    version: int
    # The random token naming the session's `web_sessions` row.
    token: str
    csrf: str
    login_at: int
    # When the cookie was last signed (seconds since the epoch).
    signed_at: int


class SessionCodec:
    """Signs and checks the session and pre-login cookies."""

    def __init__(self, secret: str, *, idle_timeout_s: int, max_age_s: int) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.max_age_s = max_age_s
        self._session = URLSafeTimedSerializer(secret, salt="pumptrail-session")
        self._login = URLSafeTimedSerializer(secret, salt="pumptrail-login-form")

    def issue(
        self,
        user_id: int,
        version: int,
        *,
        token: str | None = None,
        csrf: str | None = None,
        login_at: int | None = None,
    ) -> str:
        payload = {
            "u": user_id,
            "v": version,
            "s": token or new_token(),
            "c": csrf or new_token(),
            "t": int(time.time()) if login_at is None else login_at,
        }
        return self._session.dumps(payload)

    def read(self, cookie: str | None) -> BrowserSession | None:
        """The session of a cookie, or None when absent, forged, idle too long or too old."""
        if not cookie:
            return None
        try:
            payload, signed = self._session.loads(
                cookie, max_age=self.idle_timeout_s, return_timestamp=True
            )
        except (SignatureExpired, BadSignature):
            return None
        session = _session_from(payload, int(signed.timestamp()))
        if session is None or time.time() - session.login_at > self.max_age_s:
            return None
        return session

    def refreshed(self, session: BrowserSession) -> str | None:
        """A new cookie for an active session when the current one is getting old."""
        if time.time() - session.signed_at < REFRESH_AFTER_S:
            return None
        return self.issue(
            session.user_id,
            session.version,
            token=session.token,
            csrf=session.csrf,
            login_at=session.login_at,
        )

    def issue_login_form(self) -> tuple[str, str]:
        """(cookie value, token) for a login form shown before any session exists."""
        token = new_token()
        return self._login.dumps({"c": token}), token

    def read_login_form(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            payload = self._login.loads(cookie, max_age=LOGIN_FORM_MAX_AGE_S)
        except (SignatureExpired, BadSignature):
            return None
        token = payload.get("c") if isinstance(payload, Mapping) else None
        return token if isinstance(token, str) and token else None


def _session_from(payload: Any, signed_at: int) -> BrowserSession | None:
    if not isinstance(payload, Mapping):
        return None
    user_id, version, token, csrf, login_at = (payload.get(k) for k in ("u", "v", "s", "c", "t"))
    if not (
        isinstance(user_id, int)
        and isinstance(version, int)
        and isinstance(token, str)
        and token
        and isinstance(csrf, str)
        and csrf
        and isinstance(login_at, int)
    ):
        return None
    return BrowserSession(user_id, version, token, csrf, login_at, signed_at)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def cookie_flags(*, secure: bool, max_age: int | None) -> dict[str, Any]:
    """Keyword arguments of `Response.set_cookie` for every cookie the app sets."""
    flags: dict[str, Any] = {
        "httponly": True,
        "samesite": "strict",
        "secure": secure,
        "path": "/",
    }
    if max_age is not None:
        flags["max_age"] = max_age
    return flags
