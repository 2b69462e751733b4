"""Bearer JWT authentication and role checks.

Tokens carry `sub`, `roles`, `teams` and a SMART-style `scope` (app/api/scopes.py). HS* tokens are
verified with a shared secret (development generates one under var_dir; production must configure
one); RS*/ES* tokens with the identity provider's JWKS, fetched with httpx and cached (app/api/jwks.py).
Issuer, audience and expiry are always checked. docs/security.md has the whole policy.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Request

from app.api.problems import Problem
from app.api.token_cache import VerifiedTokens
from app.settings import Settings
from app.state.audit import REQUEST_CLIENT

if TYPE_CHECKING:
    from app.api.jwks import JwksCache
    from app.api.scopes import Grant

ALGORITHM = "HS256"  # what development tokens are minted with
DEV_SECRET_FILE = "dev-jwt-secret"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    roles: frozenset[str]
    teams: frozenset[str]
    # None: the token had no `scope` claim (allowed only where scopes are not required)
    scopes: tuple[Grant, ...] | None = None

    def has_any_role(self, roles: list[str] | frozenset[str]) -> bool:
        return bool(self.roles & set(roles))


def may_see_part2(principal: Principal, settings: Settings) -> bool:
    """The Part 2 *permission*; each record also needs its patient's active consent (app/api/access.py)."""
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


def hs_secret(settings: Settings) -> str | None:
    """The HS* key when HS* tokens are accepted; None for a JWKS-only deployment."""
    if not any(a.startswith("HS") for a in settings.jwt_algorithms):
        return None
    return jwt_secret(settings)


def mint_token(
    settings: Settings,
    subject: str,
    roles: list[str],
    teams: list[str],
    ttl_s: int,
    *,
    scopes: list[str] | None = None,
) -> str:
    """A development token (HS256, the configured or generated secret). `scopes=None` leaves the
    `scope` claim out: such a token works only where scopes are not required."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": roles,
        "teams": teams,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
    }
    if scopes is not None:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, jwt_secret(settings), algorithm=ALGORITHM)


def default_scopes(settings: Settings, roles: list[str]) -> list[str]:
    """What `carecoord token` grants when no --scope is given: each role's configured scopes."""
    found: list[str] = []
    for role in roles:
        for scope in settings.role_default_scopes.get(role, settings.care_default_scopes):
            if scope not in found:
                found.append(scope)
    return found


def dev_token(
    settings: Settings,
    subject: str,
    roles: list[str],
    teams: list[str],
    *,
    ttl_s: int | None = None,
    scopes: list[str] | None = None,
) -> str:
    """What `carecoord token` and the web UI's development sign-in mint: the roles' default scopes
    unless scopes are given, the configured development lifetime unless a ttl is."""
    granted = scopes or default_scopes(settings, roles)
    return mint_token(settings, subject, roles, teams, ttl_s or settings.dev_token_ttl_s, scopes=granted)


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="carecoord"'})


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    from app.api.scopes import parse_scopes

    roles, teams, scope = claims.get("roles", []), claims.get("teams", []), claims.get("scope")
    if not isinstance(roles, list) or not isinstance(teams, list):
        raise _unauthorized("invalid token: roles and teams must be lists")
    if scope is not None and not isinstance(scope, str):
        raise _unauthorized("invalid token: scope must be a space-separated string")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise _unauthorized("invalid token: sub must name the caller")  # audit rows must say who acted
    return Principal(
        subject,
        frozenset(map(str, roles)),
        frozenset(map(str, teams)),
        parse_scopes(scope) if scope is not None else None,
    )


def decode_claims(settings: Settings, key: Any, token: str, algorithm: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None


def verify_token(settings: Settings, secret: str, token: str) -> Principal:
    """An HS256 token against a shared secret (synchronous; development and tests)."""
    return principal_from_claims(decode_claims(settings, secret, token, ALGORITHM))


async def verified_claims(settings: Settings, secret: str | None, jwks: JwksCache | None, token: str) -> dict[str, Any]:
    """Any accepted algorithm: the header's `alg` must be configured; HS* use the secret, the others
    the JWKS key named by `kid`. Keys never come from the token itself."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    algorithm = str(header.get("alg", ""))
    if algorithm not in settings.jwt_algorithms:
        raise _unauthorized(f"invalid token: algorithm {algorithm[:16]!r} is not accepted")
    if algorithm.startswith("HS"):
        if secret is None:
            raise _unauthorized("invalid token: no shared secret is configured")
        key: Any = secret
    else:
        if jwks is None:
            raise _unauthorized("invalid token: no JWKS is configured")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("invalid token: a kid header is required")
        key = await jwks.key_for(kid)
        if key is None:
            raise _unauthorized("invalid token: unknown signing key")
    return decode_claims(settings, key, token, algorithm)


async def verify_bearer(state: Any, token: str) -> Principal:
    """A token presented to this app (`request.app.state`: settings, keys and the verified-token cache,
    app/api/token_cache.py): verified once, then taken from the cache until its expiry or the cache's ttl."""
    cache: VerifiedTokens[Principal] | None = getattr(state, "verified_tokens", None)
    principal = cache.get(token) if cache is not None else None
    if principal is None:
        claims = await verified_claims(state.settings, state.jwt_secret, getattr(state, "jwks", None), token)
        principal = principal_from_claims(claims)
        if cache is not None:
            cache.put(token, principal, float(claims["exp"]) + state.settings.jwt_leeway_s)
    return principal


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("bearer token required")
    principal = await verify_bearer(request.app.state, token.strip())
    request.state.principal = principal
    REQUEST_CLIENT.set((request.client.host if request.client else None, request.headers.get("user-agent")))
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def role_gate(*role_settings: str, what: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers who hold a role listed in any of the named settings (e.g.
    `"roster_roles", "admin_roles"`); anyone else gets 403 naming the roles. Read at request time, so
    the settings of the app serving the request apply."""

    async def gate(request: Request, principal: CurrentPrincipal) -> Principal:
        settings = request.app.state.settings
        allowed = [role for name in role_settings for role in getattr(settings, name)]
        if not principal.has_any_role(allowed):
            raise Problem(403, "Forbidden", f"{what} require one of the roles {allowed}")
        return principal

    return gate
