"""API tokens of other systems: create, list, revoke, and check a bearer token (docs/web.md "The JSON API").

A token is `pt_` followed by `secrets.token_urlsafe(32)` (256 random bits); it
is shown once, when created, and only its SHA-256 is stored (table
`api_tokens`, `db.users`): a high-entropy token needs no salt or slow hash.
A token acts for one account with that account's *current* role, on the
`/api/` routes and `/openapi.json` only (`web.context.optional_user`):

- a revoked token is refused at once, and so is every token of a disabled
  account (enabling the account again makes them work again);
- a role change applies to the account's tokens at the next request;
- a password change leaves the tokens alone (a token is a credential of its
  own: revoke it with `pumptrail token revoke ID`);
- deleting an account deletes its tokens.

`token_login` checks a token and notes its use in `last_used_at`, at most once a
minute per token, so a busy client does not turn every request into a write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from db.engine import write_transaction
from db.models import utc_now
from db.users import TOKEN_LABEL_LEN, api_tokens, users
from parsers.errors import PumptrailError
from web.users import User, find_user, get_user

TOKEN_PREFIX: Final = "pt_"  # noqa: S105 - the prefix of every token, not a secret
TOKEN_BYTES: Final = 32
# `last_used_at` is written when the stored value is older than this.
LAST_USED_GRANULARITY: Final = timedelta(minutes=1)
# Longer than any token this module issues; longer strings are refused unread.
MAX_TOKEN_LEN: Final = 128


class TokenError(PumptrailError, ValueError):
    """Raised when a token cannot be created or revoked; the message says why.

    No such account, a disabled account, a label that is too long or has
    control characters, or no token with the given ID.
    """


@dataclass(frozen=True, slots=True)
class ApiToken:
    """What `token list` shows of a token (never the token)."""

    id: int
    username: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TokenLogin:
    """A valid bearer token: the account it acts for (with its current role) and the token's ID."""

    user: User
    token_id: int


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def check_label(label: str) -> str:
    if len(label) > TOKEN_LABEL_LEN:
        raise TokenError(f"label too long: at most {TOKEN_LABEL_LEN} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        raise TokenError("label: no control characters")
    return label


def create_token(connection: Connection, username: str, label: str = "") -> tuple[ApiToken, str]:
    """Create a token for an enabled account (in the caller's write transaction).

    Returns the stored row and the token itself, which exists nowhere else.
    """
    check_label(label)
    user = find_user(connection, username)
    if user is None:
        raise TokenError(f"no user {username!r}")
    if user.disabled:
        raise TokenError(f"user {user.username!r} is disabled: enable it first")
    token = new_api_token()
    now = utc_now()
    token_id = connection.execute(
        insert(api_tokens)
        .values(
            token_sha256=token_digest(token),
            user_id=user.id,
            label=label,
            created_at=now,
            last_used_at=None,
            revoked_at=None,
        )
        .returning(api_tokens.c.id)
    ).scalar_one()
    return ApiToken(int(token_id), user.username, label, now, None, None), token


_LIST_COLUMNS = (
    api_tokens.c.id,
    users.c.username,
    api_tokens.c.label,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
    api_tokens.c.revoked_at,
)


def _api_token(row: Any) -> ApiToken:
    return ApiToken(
        id=int(row[0]),
        username=str(row[1]),
        label=str(row[2]),
        created_at=row[3],
        last_used_at=row[4],
        revoked_at=row[5],
    )


def list_tokens(connection: Connection, username: str | None = None) -> list[ApiToken]:
    """Every token (or one account's), oldest first; TokenError for an unknown account."""
    query = select(*_LIST_COLUMNS).join(users, users.c.id == api_tokens.c.user_id)
    if username is not None:
        user = find_user(connection, username)
        if user is None:
            raise TokenError(f"no user {username!r}")
        query = query.where(api_tokens.c.user_id == user.id)
    rows = connection.execute(query.order_by(api_tokens.c.id))
    return [_api_token(row) for row in rows]


def get_token(connection: Connection, token_id: int) -> ApiToken | None:
    row = connection.execute(
        select(*_LIST_COLUMNS)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.id == token_id)
    ).first()
    return None if row is None else _api_token(row)


def revoke_token(connection: Connection, token_id: int) -> tuple[ApiToken, bool]:
    """Revoke a token (in the caller's write transaction): the token, and whether this call revoked it.

    A token already revoked stays as it was (False); an unknown ID is a TokenError.
    """
    found = get_token(connection, token_id)
    if found is None:
        raise TokenError(f"no token {token_id}")
    if found.revoked_at is not None:
        return found, False
    connection.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utc_now())
    )
    revoked = get_token(connection, token_id)
    if revoked is None:  # pragma: no cover - updated in this transaction
        raise TokenError(f"token {token_id} vanished")
    return revoked, True


def token_login(engine: Engine, token: str) -> TokenLogin | None:
    """The account and token ID of a valid bearer token, or None.

    None for a malformed, unknown or revoked token, and for any token of a
    disabled account. A valid token's `last_used_at` is written when it is
    older than a minute (its own short write transaction).
    """
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LEN:
        return None
    digest = token_digest(token)
    with engine.connect() as connection:
        row = connection.execute(
            select(
                api_tokens.c.id,
                api_tokens.c.token_sha256,
                api_tokens.c.user_id,
                api_tokens.c.last_used_at,
                api_tokens.c.revoked_at,
            ).where(api_tokens.c.token_sha256 == digest)
        ).first()
        # The lookup is by digest; comparing it again in constant time costs nothing.
        if row is None or not hmac.compare_digest(str(row[1]), digest) or row[4] is not None:
            return None
        user = get_user(connection, int(row[2]))
    if user is None or user.disabled:
        return None
    token_id = int(row[0])
    now = utc_now()
    last_used: datetime | None = row[3]
    if last_used is None or now - last_used >= LAST_USED_GRANULARITY:
        cutoff = now - LAST_USED_GRANULARITY
        with write_transaction(engine) as connection:
            connection.execute(
                update(api_tokens)
                .where(
                    and_(
                        api_tokens.c.id == token_id,
                        or_(
                            api_tokens.c.last_used_at.is_(None),
                            api_tokens.c.last_used_at <= cutoff,
                        ),
                    )
                )
                .values(last_used_at=now)
            )
    return TokenLogin(user, token_id)
