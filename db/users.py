"""The tables of web accounts, API tokens and the per-profile code index (migrations 0003, 0005, 0008).

- `users`: one account of the web view (`pumptrail user add`), its role
  (`coder`, `auditor`, `admin`), an argon2 password hash and a `session_version`
  that every password, role or disable change increments: a browser session
  cookie names the version it was issued under, so bumping it ends every session
  of that account at once. `username_key` is the name in lower case, unique: two
  accounts never differ only in case, and a login matches the name in any case.
- `web_sessions`: one row per open browser session (login), keyed by the SHA-256
  of the random session token its cookie carries; logout deletes that row only,
  so the account's other browsers stay logged in.
- `login_throttle`: failed logins counted per client address (`addr:<ip>`) and
  per account name (`user:<name in lower case>`), kept in the database so the
  count survives a restart and is shared by every worker (`web.throttle`).
- `api_tokens`: one row per API token of another system (`pumptrail token
  create`, `web.tokens`), keyed by the SHA-256 of the random bearer token (the
  token itself is never stored), with the account it acts for, a label, and
  when it was created, last used (at most a minute stale) and revoked. Deleting
  an account deletes its tokens (ON DELETE CASCADE).
- `evidence_codes`: the CPT code of each stored session under every payer profile
  (docs/coding-rules.md §3), copied from the evidence document so the session list can
  filter by "code under profile P" through an index. `evidence.procedure` already
  holds the default profile's code; this table holds all of them. Its rows hang
  off the `evidence` row (ON DELETE CASCADE): storing evidence again
  (`db.queries.replace_evidence` deletes, then inserts) drops them, so a row can
  be missing but never stale. `db.code_index.index_codes` writes the rows of one
  session, `db.code_index.sync_codes` fills in missing ones.

The models sit on `db.models.Base` metadata, so the model-versus-migration
comparison sees them once this module is imported.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from db.models import SHA256_LEN, Base, table_of

USERNAME_LEN = 64
ROLE_LEN = 16
# argon2id encoded hashes are about 100 characters; room for other parameters.
HASH_LEN = 255
PROFILE_LEN = 64
PROCEDURE_LEN = 16
TOKEN_LABEL_LEN = 64
# "addr:" or "user:" and an IPv6 address or a user name.
THROTTLE_KEY_LEN = 80


class UserRow(Base):
    """One account of the web view."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LEN), unique=True)
    # The name in lower case: user names are unique without regard to case.
    username_key: Mapped[str] = mapped_column(String(USERNAME_LEN), unique=True)
    role: Mapped[str] = mapped_column(String(ROLE_LEN))
    password_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Incremented to end every browser session of the account (logout, changes).
    session_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)


class EvidenceCodeRow(Base):
    """The procedure code of one session under one profile (list filters)."""

    __tablename__ = "evidence_codes"

    session_pk: Mapped[int] = mapped_column(
        ForeignKey("evidence.session_pk", ondelete="CASCADE"), primary_key=True
    )
    profile: Mapped[str] = mapped_column(String(PROFILE_LEN), primary_key=True)
    procedure: Mapped[str | None] = mapped_column(String(PROCEDURE_LEN))

    __table_args__ = (Index("ix_evidence_codes_profile", "profile", "procedure", "session_pk"),)


class WebSessionRow(Base):
    """One open browser session: the SHA-256 of its cookie's token, the account, when."""

    __tablename__ = "web_sessions"

    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_web_sessions_user", "user_id"),)


class LoginThrottleRow(Base):
    """Recent failed logins of one client address or one account name."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(THROTTLE_KEY_LEN), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (Index("ix_login_throttle_last", "last_failure_at"),)


class ApiTokenRow(Base):
    """One API token: the SHA-256 of the bearer token, its account, label and times."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(SHA256_LEN), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(TOKEN_LABEL_LEN))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_api_tokens_user", "user_id"),)


users = table_of(UserRow)
web_sessions = table_of(WebSessionRow)
login_throttle = table_of(LoginThrottleRow)
api_tokens = table_of(ApiTokenRow)
evidence_codes = table_of(EvidenceCodeRow)
