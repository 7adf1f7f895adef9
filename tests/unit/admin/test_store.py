"""What every admin service shares: database failures as the error tree, config entities."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from proxy.admin.store import DATABASE_UNAVAILABLE, AdminStore, database_errors
from proxy.errors import Conflict, InvalidRequest, ProxyError, ServiceUnavailable
from proxy.settings import Settings


class DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "kind", "status", "message"),
    [
        (
            IntegrityError("INSERT", {}, DriverError("UNIQUE constraint failed: profiles.name")),
            Conflict,
            409,
            "the change conflicts with stored data: UNIQUE constraint failed: profiles.name",
        ),
        (
            OperationalError("INSERT", {}, DriverError("invalid byte sequence", "22021")),
            InvalidRequest,
            422,
            "the database cannot store this text",
        ),
        (
            OperationalError("SELECT", {}, DriverError("no such table: api_keys")),
            ServiceUnavailable,
            503,
            DATABASE_UNAVAILABLE,
        ),
        (PoolTimeout("QueuePool limit reached"), ServiceUnavailable, 503, DATABASE_UNAVAILABLE),
        (ConnectionRefusedError(111, "refused"), ServiceUnavailable, 503, DATABASE_UNAVAILABLE),
    ],
)
def test_database_failures_leave_as_the_error_tree(
    error: Exception, kind: type[ProxyError], status: int, message: str
) -> None:
    with pytest.raises(kind) as caught, database_errors():
        raise error
    assert (caught.value.status, caught.value.message) == (status, message)
    assert caught.value.__cause__ is error


def test_other_errors_pass_through() -> None:
    with pytest.raises(ValueError, match="not a database error"), database_errors():
        raise ValueError("not a database error")


def test_config_declared_entities_are_known_by_kind() -> None:
    settings = Settings(
        keys=[{"name": "gitops", "key_sha256": "a" * 64}],
        profiles={"support": {}},
        routes={"voice": {"targets": [{"base_url": "http://x"}]}},
    )
    store = AdminStore(settings, sessions=None)  # type: ignore[arg-type]  # not used here
    assert store.declared_in_config("key", "gitops")
    assert store.declared_in_config("profile", "support")
    assert store.declared_in_config("route", "voice")
    assert not store.declared_in_config("key", "support")
    assert not store.declared_in_config("profile", "voice")
    assert not store.declared_in_config("route", "gitops")
