"""The verified-token cache: a hit only for the same token, never past its expiry or the cache's ttl."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest

from app.api.auth import jwt_secret, mint_token, verify_bearer
from app.api.problems import Problem
from app.api.token_cache import VerifiedTokens
from app.settings import Settings


def test_an_entry_lasts_until_the_sooner_of_expiry_and_ttl() -> None:
    cache: VerifiedTokens[str] = VerifiedTokens(size=10, ttl_s=60)
    cache.put("a", "alice", expires_at=1_030, now=1_000)  # expires before the ttl runs out
    cache.put("b", "bob", expires_at=5_000, now=1_000)  # the ttl runs out first
    assert cache.get("a", now=1_029) == "alice" and cache.get("a", now=1_030) is None
    assert cache.get("b", now=1_059) == "bob" and cache.get("b", now=1_060) is None
    assert len(cache) == 0  # stale entries are dropped when met


def test_least_recently_used_is_evicted_and_ttl_zero_keeps_nothing() -> None:
    cache: VerifiedTokens[int] = VerifiedTokens(size=2, ttl_s=60)
    cache.put("a", 1, expires_at=2_000, now=1_000)
    cache.put("b", 2, expires_at=2_000, now=1_000)
    assert cache.get("a", now=1_001) == 1  # a is now the most recent
    cache.put("c", 3, expires_at=2_000, now=1_001)
    assert (cache.get("a", now=1_002), cache.get("b", now=1_002), cache.get("c", now=1_002)) == (1, None, 3)
    off: VerifiedTokens[int] = VerifiedTokens(size=2, ttl_s=0)
    off.put("a", 1, expires_at=2_000, now=1_000)
    assert off.get("a", now=1_000) is None


def _state(tmp_path: Path, **kw: object) -> SimpleNamespace:
    settings = Settings(var_dir=tmp_path, jwt_leeway_s=0, **kw)  # type: ignore[arg-type]
    cache: VerifiedTokens[object] = VerifiedTokens(settings.jwt_cache_size, settings.jwt_cache_ttl_s)
    return SimpleNamespace(settings=settings, jwt_secret=jwt_secret(settings), jwks=None, verified_tokens=cache)


async def test_a_cached_token_is_refused_once_it_expires(tmp_path: Path) -> None:
    state = _state(tmp_path)
    token = mint_token(state.settings, "u1", ["PMC"], ["T1"], 2)
    assert (await verify_bearer(state, token)).subject == "u1"
    assert len(state.verified_tokens) == 1
    assert (await verify_bearer(state, token)).roles == {"PMC"}  # from the cache
    await asyncio.sleep(2.1)
    with pytest.raises(Problem) as err:
        await verify_bearer(state, token)
    assert err.value.status == 401 and "expired" in (err.value.detail or "")


async def test_a_token_differing_only_in_its_signature_is_verified_again(tmp_path: Path) -> None:
    state = _state(tmp_path)
    token = mint_token(state.settings, "u1", ["PMC"], ["T1"], 60)
    await verify_bearer(state, token)
    head, body, _ = token.split(".")
    forged = f"{head}.{body}.{jwt.utils.base64url_encode(b'x' * 32).decode()}"
    with pytest.raises(Problem) as err:
        await verify_bearer(state, forged)
    assert err.value.status == 401
