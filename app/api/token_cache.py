"""Tokens already verified, kept for a short while so a client's next request skips the signature check.

Why: verifying an HS256/RS256 signature and its claims cost a worklist page ~0.2 ms of CPU
(docs/benchmarks.md), and a facilitator's client sends the same token many times a minute. An entry is
keyed by the whole token (signature included), so only a byte-identical token that verified before can
hit it; it is used only until the token's own `exp` (with the configured leeway) and at most
`jwt_cache_ttl_s` after it was verified, which bounds how long a signing key withdrawn from the JWKS
still admits tokens it signed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    until: float  # time.time() after which the entry is not used


class VerifiedTokens(Generic[T]):
    """At most `size` tokens, least recently used evicted first; `ttl_s` 0 turns the cache off."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def get(self, token: str, now: float | None = None) -> T | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if (time.time() if now is None else now) >= entry.until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return entry.value

    def put(self, token: str, value: T, expires_at: float, now: float | None = None) -> None:
        """Keep `value` for `token` until `expires_at` (the token's exp plus leeway) or the ttl, whichever
        is sooner."""
        if self.ttl_s <= 0 or self.size <= 0:
            return
        now = time.time() if now is None else now
        self._entries[token] = _Entry(value, min(expires_at, now + self.ttl_s))
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
