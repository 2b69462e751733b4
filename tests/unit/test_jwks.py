"""RS256 tokens verified against a JWKS served over HTTP (respx mocks the identity provider; the RSA
keys are real, generated here): cached for the TTL, refetched once for an unknown `kid`, issuer /
audience / expiry / algorithm checked. Production refuses to start without real key settings."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from app.api.auth import Principal, default_scopes, mint_token, principal_from_claims, verified_claims
from app.api.jwks import JwksCache
from app.api.problems import Problem
from app.api.scopes import allows
from app.settings import Settings

JWKS_URL = "https://idp.example.org/.well-known/jwks.json"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return public | {"kid": kid, "use": "sig", "alg": "RS256"}


def settings(tmp_path: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {"var_dir": tmp_path, "jwt_algorithms": ["RS256"], "jwt_jwks_url": JWKS_URL}
    return Settings(**(base | kw))


def token(s: Settings, key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    body = {
        "sub": "nurse-1",
        "roles": ["RN"],
        "teams": ["T1"],
        "scope": "user/Task.rs openid",
        "iss": s.jwt_issuer,
        "aud": s.jwt_audience,
        "exp": int(time.time()) + 60,
    } | claims
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def verify_any(s: Settings, secret: str | None, keys: JwksCache | None, raw: str) -> Principal:
    """A token checked against the shared secret or the JWKS, as the bearer dependency checks it."""
    return principal_from_claims(await verified_claims(s, secret, keys, raw))


def cache(s: Settings, client: httpx.AsyncClient, **kw: float) -> JwksCache:
    assert s.jwt_jwks_url
    return JwksCache(s.jwt_jwks_url, kw.get("ttl", s.jwt_jwks_ttl_s), kw.get("refetch", 0), client)


@respx.mock
async def test_rs256_token_verified_with_the_fetched_key_and_cached(tmp_path: Path) -> None:
    s, key = settings(tmp_path), rsa_key()
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [jwk(key, "k1")]}))
    async with httpx.AsyncClient() as client:
        keys = cache(s, client)
        principal = await verify_any(s, None, keys, token(s, key, "k1"))
        again = await verify_any(s, None, keys, token(s, key, "k1", sub="nurse-2"))
    assert principal.subject == "nurse-1" and principal.roles == {"RN"} and principal.teams == {"T1"}
    assert principal.scopes is not None and allows(principal.scopes, "Task", "r")
    assert not allows(principal.scopes, "Task", "u")
    assert again.subject == "nurse-2" and route.call_count == 1  # cached


@respx.mock
async def test_unknown_kid_refetches_once_then_rotated_key_verifies(tmp_path: Path) -> None:
    s, old, new = settings(tmp_path), rsa_key(), rsa_key()
    route = respx.get(JWKS_URL).mock(
        side_effect=[
            httpx.Response(200, json={"keys": [jwk(old, "k1")]}),
            httpx.Response(200, json={"keys": [jwk(old, "k1"), jwk(new, "k2")]}),
            httpx.Response(200, json={"keys": [jwk(new, "k2")]}),
        ]
    )
    async with httpx.AsyncClient() as client:
        keys = cache(s, client)
        await verify_any(s, None, keys, token(s, old, "k1"))
        rotated = await verify_any(s, None, keys, token(s, new, "k2"))
        assert rotated.subject == "nurse-1" and route.call_count == 2
        with pytest.raises(Problem) as err:  # forged kid: one refetch, then 401
            await verify_any(s, None, keys, token(s, new, "k-forged"))
    assert err.value.status == 401 and "unknown signing key" in (err.value.detail or "")
    assert route.call_count == 3


@respx.mock
async def test_unknown_kid_refetch_is_rate_limited(tmp_path: Path) -> None:
    s, key = settings(tmp_path), rsa_key()
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [jwk(key, "k1")]}))
    async with httpx.AsyncClient() as client:
        keys = cache(s, client, refetch=3600)
        for _ in range(5):
            with pytest.raises(Problem):
                await verify_any(s, None, keys, token(s, key, "nope"))
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
    ],
)
@respx.mock
async def test_rs256_claims_are_checked(tmp_path: Path, claims: dict[str, Any], detail: str) -> None:
    s, key = settings(tmp_path), rsa_key()
    respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [jwk(key, "k1")]}))
    async with httpx.AsyncClient() as client:
        with pytest.raises(Problem) as err:
            await verify_any(s, None, cache(s, client), token(s, key, "k1", **claims))
    assert err.value.status == 401 and detail in (err.value.detail or "").lower()


@respx.mock
async def test_signature_by_another_key_under_a_known_kid_is_refused(tmp_path: Path) -> None:
    s, real, attacker = settings(tmp_path), rsa_key(), rsa_key()
    respx.get(JWKS_URL).mock(return_value=httpx.Response(200, json={"keys": [jwk(real, "k1")]}))
    async with httpx.AsyncClient() as client:
        with pytest.raises(Problem) as err:
            await verify_any(s, None, cache(s, client), token(s, attacker, "k1"))
    assert err.value.status == 401


async def test_algorithms_not_configured_are_refused(tmp_path: Path) -> None:
    # An RS256-only deployment refuses an HS256 token (no confusion of the public key as an HMAC secret).
    s = settings(tmp_path)
    hs = jwt.encode(
        {"sub": "x", "iss": s.jwt_issuer, "aud": s.jwt_audience, "exp": int(time.time()) + 60}, "k" * 40, "HS256"
    )
    with pytest.raises(Problem) as err:
        await verify_any(s, None, None, hs)
    assert err.value.status == 401 and "not accepted" in (err.value.detail or "")
    dev = Settings(var_dir=tmp_path)
    unsigned = jwt.encode({"sub": "x"}, None, algorithm="none")
    with pytest.raises(Problem):
        await verify_any(dev, "k" * 40, None, unsigned)


@respx.mock
async def test_unreachable_provider_is_503_not_401(tmp_path: Path) -> None:
    s, key = settings(tmp_path), rsa_key()
    respx.get(JWKS_URL).mock(return_value=httpx.Response(500))
    async with httpx.AsyncClient() as client:
        with pytest.raises(Problem) as err:
            await verify_any(s, None, cache(s, client), token(s, key, "k1"))
    assert err.value.status == 503


@respx.mock
async def test_a_failed_fetch_is_not_retried_before_the_refetch_interval(tmp_path: Path) -> None:
    """While the provider is down, requests must not each wait out another fetch (one every 60 s)."""
    s, key = settings(tmp_path), rsa_key()
    route = respx.get(JWKS_URL).mock(return_value=httpx.Response(500))
    async with httpx.AsyncClient() as client:
        keys = cache(s, client, refetch=60)
        for _ in range(3):
            with pytest.raises(Problem) as err:
                await verify_any(s, None, keys, token(s, key, "k1"))
            assert err.value.status == 503
    assert route.call_count == 1


def test_production_requires_real_keys(tmp_path: Path) -> None:
    real = {"environment": "production", "var_dir": tmp_path, "database_url": "postgresql+asyncpg://x/y"}
    real["kafka_bootstrap_servers"] = "kafka:9092"
    with pytest.raises(ValidationError, match="CARECOORD_JWT_SECRET"):
        Settings(**real, jwt_secret="too-short")
    with pytest.raises(ValidationError, match="CARECOORD_JWT_JWKS_URL"):
        Settings(**real, jwt_algorithms=["RS256"])
    ok = Settings(**real, jwt_algorithms=["RS256"], jwt_jwks_url=JWKS_URL)
    assert ok.scopes_required  # production default
    assert not (tmp_path / "dev-jwt-secret").exists()
    assert not Settings(var_dir=tmp_path).scopes_required  # development default


def test_dev_tokens_carry_role_appropriate_scopes(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path)
    scopes = default_scopes(s, ["BHCF"])
    assert "user/Task.rus" in scopes and "user/AuditEvent.rs" not in scopes
    assert default_scopes(s, ["AUDITOR"]) == ["user/AuditEvent.rs"]
    claims = jwt.decode(
        mint_token(s, "u", ["BHCF"], ["T1"], 60, scopes=scopes),
        options={"verify_signature": False},
    )
    assert claims["scope"].split() == scopes and claims["teams"] == ["T1"]
