"""What every feed's handler shares: bounded, crash-proof decoding, and the handle contract
(applied / duplicate / rejected, transient faults propagate) the consumer runner and dead-letter
replay rely on. Subclasses say how a decoded message is applied."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import async_sessionmaker

from app.consumers.results import HandleResult, apply_or_reject, reject_payload
from app.encounters.notice import DecodeError
from app.state.inbound import Position

M = TypeVar("M")


class FeedHandler(Generic[M]):
    def __init__(
        self,
        *,
        source: str,
        decode: Callable[[bytes], M],
        sessions: async_sessionmaker,
        max_bytes: int,
        undecodable_field: str | None = None,
    ) -> None:
        self.source = source
        self._decode = decode
        self._sessions = sessions
        self._max_bytes = max_bytes
        self._undecodable_field = undecodable_field  # where an undecodable message is wrong, if known

    def decode(self, payload: bytes) -> M:
        """Every front door and the consumer decode through here, so they refuse the same input."""
        if len(payload) > self._max_bytes:
            raise DecodeError(f"message is {len(payload)} bytes; the limit is {self._max_bytes}", "size")
        try:
            message = self._decode(payload)
        except DecodeError:
            raise
        except Exception as exc:
            # A parser library tripping over hostile input is still bad input, not a retryable fault.
            raise DecodeError(f"undecodable: {type(exc).__name__}", self._undecodable_field) from None
        self._check(message)
        return message

    def _check(self, message: M) -> None:
        """Refuse a decoded message that cannot be stored (raises DecodeError)."""

    async def handle(self, payload: bytes, position: Position) -> HandleResult:
        try:
            message = self.decode(payload)
        except DecodeError as exc:
            return await self._reject(payload, position, exc.reason, exc.field)
        return await apply_or_reject(
            lambda: self._apply(message, position), partial(self._reject, payload, position), position
        )

    async def _apply(self, message: M, position: Position) -> HandleResult:
        raise NotImplementedError

    async def _reject(self, payload: bytes, position: Position, reason: str, field: str | None) -> HandleResult:
        return await reject_payload(self._sessions, self.source, payload, position, reason, field)
