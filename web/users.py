"""Web accounts: create, list, change, authenticate (docs/web.md "Accounts and roles").

Roles are ordered: a `coder` sees the evidence, an `auditor` also the audit log
and replay results, an `admin` also manages users and the quarantine. Passwords
are hashed with argon2id (argon2-cffi defaults); a login with an unknown user name
still verifies a dummy hash, so the answer takes as long as for a known one.

Every change of an account (role, password, disabled) increments its
`session_version`, which ends the account's browser sessions (`db.users`). The
table lives in `db.users`; migration 0003 creates it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from db.models import utc_now
from db.users import USERNAME_LEN, users
from parsers.errors import PumptrailError

ROLES: Final = ("coder", "auditor", "admin")
_RANK: Final = {role: rank for rank, role in enumerate(ROLES)}
# Letters, digits and . _ @ - ; no spaces, so a name reads the same everywhere.
USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
MIN_PASSWORD_LEN: Final = 10
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


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LEN:
        raise AccountError(f"password too short: at least {MIN_PASSWORD_LEN} characters")
    if len(password) > MAX_PASSWORD_LEN:
        raise AccountError(f"password too long: at most {MAX_PASSWORD_LEN} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


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
    row = connection.execute(select(*_COLUMNS).where(users.c.username == username)).first()
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
    password_hash = hash_password(password)
    if find_user(connection, username) is not None:
        raise AccountError(f"user {username!r} already exists")
    now = utc_now()
    connection.execute(
        insert(users).values(
            username=username,
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
    return _change(connection, user, password_hash=hash_password(password))


def end_sessions(connection: Connection, user_id: int) -> None:
    """End every browser session of an account (logout)."""
    connection.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(session_version=users.c.session_version + 1)
    )


def authenticate(connection: Connection, username: str, password: str) -> User | None:
    """The account when the name and password match and it is enabled, else None.

    Takes the same time for an unknown name (a dummy hash is verified). A hash made
    with older argon2 parameters is re-hashed on success.
    """
    row = None
    if len(username) <= USERNAME_LEN and len(password) <= MAX_PASSWORD_LEN:
        row = connection.execute(
            select(users.c.id, users.c.password_hash).where(users.c.username == username)
        ).first()
    stored = _dummy_hash() if row is None else str(row[1])
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    user = get_user(connection, int(row[0]))
    if user is None or user.disabled:
        return None
    values: dict[str, object] = {"last_login_at": utc_now()}
    if _hasher.check_needs_rehash(stored):
        values["password_hash"] = _hasher.hash(password)
    connection.execute(update(users).where(users.c.id == user.id).values(**values))
    return get_user(connection, user.id)
