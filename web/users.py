"""Web accounts: create, list, change, check logins, open and end browser sessions.

docs/web.md "Accounts and roles" and "Login". Roles are ordered: a `coder` sees
the evidence, an `auditor` also the audit log and replay results, an `admin`
also manages users and the quarantine. User names are unique without regard to
case, and a login matches the name in any case.

Passwords: at least 12 characters and not one of the common passwords shipped
in `web/data/common-passwords.txt` (in any case); the `pumptrail user` commands
and the users page share this rule (`check_password`). They are hashed with
argon2id (argon2-cffi defaults). A login is checked in two steps so no write
transaction waits on the hash: `login_candidate` reads the account,
`check_login` verifies the password with no database connection held, and only
then does the caller write (`record_login`). An unknown user name still verifies
a dummy hash, so the answer takes as long as for a known one.

A login opens a browser session (`open_browser_session`, a row of
`web_sessions`); logout ends that one (`end_browser_session`). Every change of an
account (role, password, disabled) increments its `session_version` and deletes
its session rows, which ends all of its browser sessions (`db.users`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from db.models import utc_now
from db.users import USERNAME_LEN, users, web_sessions
from parsers.errors import PumptrailError

ROLES: Final = ("coder", "auditor", "admin")
_RANK: Final = {role: rank for rank, role in enumerate(ROLES)}
# Letters, digits and . _ @ - ; no spaces, so a name reads the same everywhere.
USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
MIN_PASSWORD_LEN: Final = 12
MAX_PASSWORD_LEN: Final = 1024

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so both answers take as long."""
    return _hasher.hash("pumptrail: no such user")


class AccountError(PumptrailError, ValueError):
    """Raised when an account cannot be added or changed; the message says why.

    A user name, role or password that breaks the rules of this module, a name
    already taken, or no such user.
    """


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool
    session_version: int
    created_at: datetime
    last_login_at: datetime | None

    def can(self, role: str) -> bool:
        """At least `role`: admins can do what auditors can, auditors what coders can."""
        return _RANK[self.role] >= _RANK[role]


def check_username(name: str) -> str:
    if not name or len(name) > USERNAME_LEN or not USERNAME_RE.match(name):
        raise AccountError(
            f"user name {name!r}: use 1-{USERNAME_LEN} letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in _RANK:
        raise AccountError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    return role


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords, in lower case (`web/data/common-passwords.txt`)."""
    text = resources.files("web").joinpath("data/common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_password(password: str, username: str | None = None) -> str:
    """The password when it follows the rule, else AccountError saying which part it breaks.

    At least `MIN_PASSWORD_LEN` characters, at most `MAX_PASSWORD_LEN`, not a
    common password (in any case) and not the user name.
    """
    if len(password) < MIN_PASSWORD_LEN:
        raise AccountError(f"password too short: at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise AccountError(f"password too long: at most {MAX_PASSWORD_LEN} characters")
    folded = password.strip().lower()
    if folded in common_passwords():
        raise AccountError("password is on the list of common passwords: choose another")
    if username is not None and folded == username.lower():
        raise AccountError("password is the user name: choose another")
    return password


def hash_password(password: str, username: str | None = None) -> str:
    return _hasher.hash(check_password(password, username))


_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.role,
    users.c.disabled,
    users.c.session_version,
    users.c.created_at,
    users.c.last_login_at,
)


def _user(row: Any) -> User:
    return User(
        id=int(row[0]),
        username=str(row[1]),
        role=str(row[2]),
        disabled=bool(row[3]),
        session_version=int(row[4]),
        created_at=row[5],
        last_login_at=row[6],
    )


def get_user(connection: Connection, user_id: int) -> User | None:
    row = connection.execute(select(*_COLUMNS).where(users.c.id == user_id)).first()
    return None if row is None else _user(row)


def find_user(connection: Connection, username: str) -> User | None:
    """The account of a user name, in any case."""
    row = connection.execute(
        select(*_COLUMNS).where(users.c.username_key == username.lower())
    ).first()
    return None if row is None else _user(row)


def list_users(connection: Connection) -> list[User]:
    rows = connection.execute(select(*_COLUMNS).order_by(users.c.username))
    return [_user(row) for row in rows]


def count_users(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(users)).scalar_one())


def add_user(connection: Connection, username: str, role: str, password: str) -> User:
    """Create an account; AccountError when the name is taken or anything is unusable."""
    check_username(username)
    check_role(role)
    password_hash = hash_password(password, username)
    existing = find_user(connection, username)
    if existing is not None:
        same = "" if existing.username == username else f" (as {existing.username!r})"
        raise AccountError(f"user {username!r} already exists{same}")
    now = utc_now()
    connection.execute(
        insert(users).values(
            username=username,
            username_key=username.lower(),
            role=role,
            password_hash=password_hash,
            disabled=False,
            session_version=0,
            created_at=now,
            updated_at=now,
            last_login_at=None,
        )
    )
    created = find_user(connection, username)
    if created is None:  # pragma: no cover - just inserted in this transaction
        raise AccountError(f"user {username!r} was not stored")
    return created


def _require(connection: Connection, username: str) -> User:
    found = find_user(connection, username)
    if found is None:
        raise AccountError(f"no user {username!r}")
    return found


def _change(connection: Connection, user: User, **values: object) -> User:
    """Change an account and end all of its browser sessions."""
    connection.execute(delete(web_sessions).where(web_sessions.c.user_id == user.id))
    connection.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(session_version=users.c.session_version + 1, updated_at=utc_now(), **values)
    )
    changed = get_user(connection, user.id)
    if changed is None:  # pragma: no cover - updated in this transaction
        raise AccountError(f"user {user.username!r} vanished")
    return changed


def set_role(connection: Connection, username: str, role: str) -> User:
    return _change(connection, _require(connection, username), role=check_role(role))


def set_disabled(connection: Connection, username: str, disabled: bool) -> User:
    return _change(connection, _require(connection, username), disabled=disabled)


def set_password(connection: Connection, username: str, password: str) -> User:
    user = _require(connection, username)
    return _change(connection, user, password_hash=hash_password(password, user.username))


# Browser sessions


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def open_browser_session(
    connection: Connection, user_id: int, *, expired_before: datetime | None = None
) -> str:
    """Open a browser session (in the caller's write transaction); its random token.

    Rows older than `expired_before` (sessions past their maximum age) are removed.
    """
    now = utc_now()
    if expired_before is not None:
        connection.execute(delete(web_sessions).where(web_sessions.c.created_at < expired_before))
    token = secrets.token_urlsafe(32)
    connection.execute(
        insert(web_sessions).values(
            token_sha256=_token_digest(token), user_id=user_id, created_at=now
        )
    )
    return token


def browser_session_open(connection: Connection, user_id: int, token: str) -> bool:
    """Whether the browser session of `token` is still open for this account."""
    row = connection.execute(
        select(web_sessions.c.user_id).where(web_sessions.c.token_sha256 == _token_digest(token))
    ).first()
    return row is not None and int(row[0]) == user_id


def end_browser_session(connection: Connection, token: str) -> None:
    """End one browser session (logout); the account's other sessions stay open."""
    connection.execute(
        delete(web_sessions).where(web_sessions.c.token_sha256 == _token_digest(token))
    )


def session_cutoff(max_age: timedelta) -> datetime:
    """Sessions opened before this instant are past their maximum age."""
    return utc_now() - max_age


# Logins

LoginOutcome = Literal["ok", "bad_credentials", "disabled"]


@dataclass(frozen=True, slots=True)
class LoginCandidate:
    """What a login needs of an account, read before the password is verified."""

    user_id: int
    username: str
    password_hash: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """The result of `check_login`: the outcome, and for a right password the account."""

    outcome: LoginOutcome
    candidate: LoginCandidate | None = None
    needs_rehash: bool = False


def login_candidate(connection: Connection, username: str) -> LoginCandidate | None:
    """The account a login names (in any case), or None; reads only."""
    if not username or len(username) > USERNAME_LEN:
        return None
    row = connection.execute(
        select(users.c.id, users.c.username, users.c.password_hash, users.c.disabled).where(
            users.c.username_key == username.lower()
        )
    ).first()
    if row is None:
        return None
    return LoginCandidate(int(row[0]), str(row[1]), str(row[2]), bool(row[3]))


def check_login(candidate: LoginCandidate | None, password: str) -> LoginCheck:
    """Verify a password against the account read before; no database is touched.

    An unknown account verifies a dummy hash (same time). A right password of a
    disabled account is `disabled`; a wrong one is `bad_credentials` either way.
    """
    stored = _dummy_hash() if candidate is None else candidate.password_hash
    try:
        if len(password) > MAX_PASSWORD_LEN:
            raise VerifyMismatchError
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return LoginCheck("bad_credentials")
    if candidate is None:
        return LoginCheck("bad_credentials")
    if candidate.disabled:
        return LoginCheck("disabled", candidate)
    return LoginCheck("ok", candidate, _hasher.check_needs_rehash(stored))


def record_login(connection: Connection, check: LoginCheck, password: str) -> User | None:
    """Note a successful login in the caller's write transaction; the account, or None.

    None when the account was disabled or changed its password since it was read.
    A hash made with older argon2 parameters is re-hashed.
    """
    candidate = check.candidate
    if check.outcome != "ok" or candidate is None:
        return None
    user = get_user(connection, candidate.user_id)
    current = connection.execute(
        select(users.c.password_hash).where(users.c.id == candidate.user_id)
    ).scalar()
    if user is None or user.disabled or current != candidate.password_hash:
        return None
    values: dict[str, object] = {"last_login_at": utc_now()}
    if check.needs_rehash:
        values["password_hash"] = _hasher.hash(password)
    connection.execute(update(users).where(users.c.id == user.id).values(**values))
    return get_user(connection, user.id)


def authenticate(connection: Connection, username: str, password: str) -> User | None:
    """The account when the name (any case) and password match and it is enabled, else None.

    The three steps of a login in one call, for a caller already in a write
    transaction (the web login runs them apart: `login_candidate`, `check_login`,
    `record_login`).
    """
    check = check_login(login_candidate(connection, username), password)
    return record_login(connection, check, password)
