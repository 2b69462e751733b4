from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from app.api.auth import jwt_secret, mint_token, verify_token
from app.api.problems import Problem
from app.settings import Settings


def dev_settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(var_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_round_trip_carries_roles_and_teams(tmp_path: Path) -> None:
    s = dev_settings(tmp_path)
    principal = verify_token(s, jwt_secret(s), mint_token(s, "u1", ["PMC", "RN"], ["T1"], 60))
    assert principal.subject == "u1"
    assert principal.roles == {"PMC", "RN"} and principal.teams == {"T1"}


def test_development_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    s = dev_settings(tmp_path)
    first = jwt_secret(s)
    assert first == jwt_secret(s) and len(first) >= 32
    assert (tmp_path / "dev-jwt-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "evil"}, "issuer"),
    ],
)
def test_rejects_bad_claims(tmp_path: Path, claims: dict, detail: str) -> None:
    s = dev_settings(tmp_path)
    base = {
        "sub": "u",
        "roles": ["PMC"],
        "teams": [],
        "iss": s.jwt_issuer,
        "aud": s.jwt_audience,
        "exp": int(time.time()) + 60,
    }
    token = jwt.encode({**base, **claims}, jwt_secret(s), algorithm="HS256")
    with pytest.raises(Problem) as err:
        verify_token(s, jwt_secret(s), token)
    assert err.value.status == 401 and detail in (err.value.detail or "").lower()


def test_rejects_token_signed_with_another_key(tmp_path: Path) -> None:
    s = dev_settings(tmp_path)
    other = dev_settings(tmp_path / "other")
    with pytest.raises(Problem):
        verify_token(s, jwt_secret(s), mint_token(other, "u", ["PMC"], [], 60))


def test_rejects_alg_none(tmp_path: Path) -> None:
    s = dev_settings(tmp_path)
    token = jwt.encode(
        {"sub": "u", "iss": s.jwt_issuer, "aud": s.jwt_audience, "exp": int(time.time()) + 60}, None, algorithm="none"
    )
    with pytest.raises(Problem):
        verify_token(s, jwt_secret(s), token)


def test_production_refuses_to_start_without_real_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CARECOORD_JWT_SECRET"):
        Settings(
            environment="production",
            var_dir=tmp_path,
            database_url="postgresql+asyncpg://x/y",
            kafka_bootstrap_servers="kafka:9092",
        )
