from __future__ import annotations

import pytest
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from app.consumers.transient import is_transient


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "retry"),
    [
        ("40P01", True),
        ("40001", True),
        ("57014", True),
        ("08006", True),
        ("55P03", True),
        ("25006", True),
        ("23505", False),
        ("22001", False),
        ("42P01", False),
    ],
)
def test_postgres_errors_are_classified_by_sqlstate(sqlstate: str, retry: bool) -> None:
    assert is_transient(DBAPIError("SELECT 1", {}, _PgError(sqlstate))) is retry


def test_connection_errors_retry_and_data_errors_do_not() -> None:
    assert is_transient(OperationalError("SELECT 1", {}, ConnectionRefusedError()))
    assert is_transient(ConnectionResetError())
    assert not is_transient(DataError("INSERT", {}, ValueError("too long")))
    assert not is_transient(ValueError("bug"))
