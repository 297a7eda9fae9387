"""The web room's errors sit under the project's error root and say when they are raised."""

from __future__ import annotations

import pytest

from parsers.errors import PumptrailError
from web.auth import SecretError
from web.context import CsrfRefused, Forbidden, LoginRequired
from web.queries import BadCursor, Cursor
from web.users import AccountError, check_role

WEB_ERRORS = (LoginRequired, Forbidden, CsrfRefused, BadCursor, AccountError, SecretError)


@pytest.mark.parametrize("error", WEB_ERRORS)
def test_every_web_error_derives_from_the_root_and_says_when(error: type[Exception]) -> None:
    assert issubclass(error, PumptrailError)
    assert error.__doc__ is not None and "raised" in error.__doc__.lower()


def test_value_errors_stay_value_errors() -> None:
    with pytest.raises(ValueError):
        Cursor.decode("!!!")
    with pytest.raises(ValueError):
        check_role("root")
