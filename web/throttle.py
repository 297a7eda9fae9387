"""The login throttle: growing delays per client address and per account, in the database.

docs/web.md "Login". Failed logins are counted under two keys, the client
address (`addr:<ip>`) and the account name in lower case (`user:<name>`), in
the table `login_throttle` (`db.users`): the counts survive a restart and every
worker of the app shares them.

- The first `FREE_FAILURES` failures of a key cost nothing; after that each
  attempt must wait `BASE_DELAY_S * 2 ** (failures - FREE_FAILURES)` seconds
  after the key's last failure, at most `MAX_DELAY_S`.
- The address delay applies to every attempt from that address. The account
  delay applies only to attempts from an address that has failures of its
  own: the right password from an address with no failures always gets in, so
  nobody can lock a named account out by guessing at it.
- A key whose last failure is older than `FORGET_AFTER_S` counts as clean (and
  its row is removed on a later failure). A successful login clears its
  address and its account.

The reads are plain reads; `failed` and `succeeded` run inside the caller's
write transaction (the one that records the audit entry), never around the
password check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from db.models import utc_now
from db.users import THROTTLE_KEY_LEN, login_throttle

FREE_FAILURES: Final = 5
BASE_DELAY_S: Final = 5.0
MAX_DELAY_S: Final = 900.0
FORGET_AFTER_S: Final = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Failures:
    """The recent failed logins of one key."""

    count: int
    last_at: datetime | None


def address_key(address: str) -> str:
    return ("addr:" + address)[:THROTTLE_KEY_LEN]


def account_key(username: str) -> str:
    return ("user:" + username.strip().lower())[:THROTTLE_KEY_LEN]


def delay_after(failures: int) -> float:
    """Seconds an attempt must wait after the last of `failures` failures."""
    if failures < FREE_FAILURES:
        return 0.0
    return float(min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(failures - FREE_FAILURES, 20)))


class LoginThrottle:
    """Reads and writes the failure counts of `login_throttle` (see the module docstring)."""

    def __init__(self, *, forget_after_s: float = FORGET_AFTER_S) -> None:
        self.forget_after = timedelta(seconds=forget_after_s)

    def failures(self, connection: Connection, key: str, now: datetime) -> Failures:
        row = connection.execute(
            select(login_throttle.c.failures, login_throttle.c.last_failure_at).where(
                login_throttle.c.key == key
            )
        ).first()
        if row is None or now - row[1] > self.forget_after:
            return Failures(0, None)
        return Failures(int(row[0]), row[1])

    def _wait(self, failures: Failures, now: datetime) -> float:
        if failures.last_at is None:
            return 0.0
        due = failures.last_at + timedelta(seconds=delay_after(failures.count))
        return max(0.0, (due - now).total_seconds())

    def wait_s(self, connection: Connection, address: str, username: str) -> float:
        """Seconds before a login from `address` for `username` may be tried (0: now)."""
        now = utc_now()
        by_address = self.failures(connection, address_key(address), now)
        wait = self._wait(by_address, now)
        if by_address.count > 0 and username.strip():
            wait = max(wait, self._wait(self.failures(connection, account_key(username), now), now))
        return wait

    def failed(self, connection: Connection, address: str, username: str) -> None:
        """Count a failed login (in the caller's write transaction)."""
        now = utc_now()
        connection.execute(
            delete(login_throttle).where(login_throttle.c.last_failure_at < now - self.forget_after)
        )
        keys = [address_key(address)]
        if username.strip():
            keys.append(account_key(username))
        for key in keys:
            self._count(connection, key, now)

    def succeeded(self, connection: Connection, address: str, username: str) -> None:
        """Clear the address and the account after a successful login."""
        connection.execute(
            delete(login_throttle).where(
                login_throttle.c.key.in_((address_key(address), account_key(username)))
            )
        )

    def _count(self, connection: Connection, key: str, now: datetime) -> None:
        values = {"key": key, "failures": 1, "last_failure_at": now}
        if connection.dialect.name == "postgresql":
            pg = postgresql.insert(login_throttle).values(**values)
            connection.execute(
                pg.on_conflict_do_update(
                    index_elements=[login_throttle.c.key],
                    set_={
                        "failures": login_throttle.c.failures + 1,
                        "last_failure_at": pg.excluded.last_failure_at,
                    },
                )
            )
            return
        lite = sqlite.insert(login_throttle).values(**values)
        connection.execute(
            lite.on_conflict_do_update(
                index_elements=[login_throttle.c.key],
                set_={
                    "failures": login_throttle.c.failures + 1,
                    "last_failure_at": lite.excluded.last_failure_at,
                },
            )
        )
