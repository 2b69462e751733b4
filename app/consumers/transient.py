"""Which failures are the infrastructure's (retry the same message) rather than the message's."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm.exc import StaleDataError

# PostgreSQL SQLSTATEs worth retrying: class 40 (serialization failure, deadlock), 08 (connection),
# 57 (operator intervention, statement timeout), lock not available, read-only after a failover.
_RETRY_SQLSTATE_CLASSES = ("40", "08", "57")
_RETRY_SQLSTATES = {"55P03", "25006"}


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StaleDataError):
        return True  # a task changed under us (an API write): the retry re-reads it
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
        if sqlstate.startswith(_RETRY_SQLSTATE_CLASSES) or sqlstate in _RETRY_SQLSTATES:
            return True
    return isinstance(
        exc,
        OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError | OSError | asyncio.TimeoutError,
    )
