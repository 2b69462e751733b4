"""Bearer JWT authentication and role checks.

Tokens carry `sub`, `roles`, `teams` (and `scope`, for SMART-style checks later). Development
mints HS256 tokens with a secret generated once under var_dir; production must configure one.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import jwt
from fastapi import Depends, Request

from app.api.problems import Problem
from app.settings import Settings

ALGORITHM = "HS256"
DEV_SECRET_FILE = "dev-jwt-secret"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]
    teams: frozenset[str]

    def has_any_role(self, roles: list[str] | frozenset[str]) -> bool:
        return bool(self.roles & set(roles))


def may_see_part2(principal: Principal, settings: Settings) -> bool:
    """42 CFR Part 2 (substance-use) data is shown only to holders of a Part 2 role.
    TODO(issue 6): also require the patient's recorded consent once consent records exist."""
    return principal.has_any_role(settings.part2_roles)


def jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.environment == "production":
        raise RuntimeError("CARECOORD_JWT_SECRET is required in production")
    path: Path = settings.var_dir / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


def mint_token(settings: Settings, subject: str, roles: list[str], teams: list[str], ttl_s: int) -> str:
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": roles,
        "teams": teams,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, jwt_secret(settings), algorithm=ALGORITHM)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="carecoord"'})


def verify_token(settings: Settings, secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    roles, teams = claims.get("roles", []), claims.get("teams", [])
    if not isinstance(roles, list) or not isinstance(teams, list):
        raise _unauthorized("invalid token: roles and teams must be lists")
    return Principal(str(claims["sub"]), frozenset(map(str, roles)), frozenset(map(str, teams)))


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("bearer token required")
    state = request.app.state
    return verify_token(state.settings, state.jwt_secret, token.strip())


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
