"""The identity provider's signing keys (JWKS), fetched with httpx and cached.

Keys are trusted for `jwt_jwks_ttl_s`; a token naming an unknown `kid` (the provider rotated its keys)
refetches once, at most every `jwt_jwks_refetch_min_s`, so a flood of forged kids cannot turn into a
flood of requests to the provider. An unreachable provider is a 503, not a 401: the token may be fine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt

from app.api.problems import Problem

log = logging.getLogger(__name__)


class JwksCache:
    def __init__(self, url: str, ttl_s: float, refetch_min_s: float, client: httpx.AsyncClient | None = None) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._refetch_min_s = refetch_min_s
        self._client = client
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any | None:
        now = time.monotonic()
        age = None if self._fetched_at is None else now - self._fetched_at
        expired = age is None or age >= self._ttl_s
        rotated = age is not None and kid not in self._keys and age >= self._refetch_min_s
        if expired or rotated:
            await self._refresh(stale_before=now)
        return self._keys.get(kid)

    async def _refresh(self, stale_before: float) -> None:
        async with self._lock:
            if self._fetched_at is not None and self._fetched_at >= stale_before:
                return  # another request refreshed while this one waited
            if self._failed_at is not None and time.monotonic() - self._failed_at < self._refetch_min_s:
                # A failed fetch is retried at most every refetch_min_s too: while the provider is down,
                # requests queued behind the lock must not each wait out another timeout.
                self._keep_or_unavailable()
                return
            try:
                document = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch failed", extra={"error": type(exc).__name__})
                self._failed_at = time.monotonic()
                self._keep_or_unavailable()
                return
            self._keys = _parse(document)
            self._fetched_at = time.monotonic()
            self._failed_at = None

    def _keep_or_unavailable(self) -> None:
        """Keep the keys we have until they expire; without usable keys the answer is 503."""
        if self._fetched_at is not None and time.monotonic() - self._fetched_at < self._ttl_s:
            return
        raise Problem(
            503,
            "Signing keys unavailable",
            "the identity provider's keys could not be fetched",
            headers={"Retry-After": "5"},
        )

    async def _fetch(self) -> dict[str, Any]:
        if self._client is not None:
            response = await self._client.get(self._url)
        else:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(self._url)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK Set")
        return document


def _parse(document: dict[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not jwk.get("kid") or jwk.get("use", "sig") != "sig":
            continue
        try:
            keys[str(jwk["kid"])] = jwt.PyJWK(jwk).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # a key type this build cannot use; tokens naming it fail as unknown kid
    return keys
