"""Who is signed in to the web UI, and proof that a form was posted from one of its own pages.

The session is the bearer token itself, kept in an HttpOnly, SameSite=Strict cookie (Secure outside
development) scoped to `/ui`: every page verifies it with the API's own verifier (app/api/auth.py), so
an expired or revoked-by-rotation token signs the user out, and the UI never holds more authority than
the token. Forms carry a CSRF token derived from the session token (an HMAC keyed by it), so it is
per-session, needs no server-side store, and cannot be computed by a page that cannot read the cookie.
The sign-in form, posted before any session exists, is protected by a random pre-session cookie that
the form echoes (SameSite=Strict keeps a cross-site post from carrying it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated

import jwt
from fastapi import Depends, Request, Response

from app.api.auth import Principal, verify_bearer
from app.api.problems import Problem
from app.api.scopes import Interaction, check_scope
from app.settings import Settings
from app.state.audit import REQUEST_CLIENT

UI_PATH = "/ui"
SESSION_COOKIE = "carecoord_session"
SIGN_IN_COOKIE = "carecoord_sign_in"
FLASH_COOKIE = "carecoord_flash"
CSRF_FIELD = "csrf"
SIGN_IN_COOKIE_TTL_S = 900  # how long a sign-in form stays usable
FLASH_TTL_S = 60  # a message shown on the page a redirect leads to
_CSRF_CONTEXT = b"carecoord-ui-csrf-v1"
SESSION_ENDED = "Your session has ended (the token expired or is no longer valid). Sign in again."


class SignInRequired(Exception):
    """No session, or its token no longer verifies: the page answers with the sign-in form."""

    def __init__(self, reason: str = "Please sign in.") -> None:
        super().__init__(reason)
        self.reason = reason


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_matches(session_token: str, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(csrf_token(session_token), submitted)


def _secure(settings: Settings) -> bool:
    return settings.environment != "development"


def set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=UI_PATH, httponly=True, samesite="strict", secure=_secure(settings)
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(name, path=UI_PATH, httponly=True, samesite="strict", secure=_secure(settings))


def new_sign_in_nonce() -> str:
    return secrets.token_urlsafe(24)


def seconds_left(token: str) -> int:
    """Lifetime left of a token already verified (its `exp` was checked), for the cookie's Max-Age."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return max(0, int(claims["exp"]) - int(time.time()))


async def verify_session_token(request: Request, token: str) -> Principal:
    return await verify_bearer(request.app.state, token)


async def ui_principal(request: Request) -> Principal:
    """The signed-in user, verified like an API bearer token; recorded on the request for the audit
    records the shared functions write."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired()
    try:
        principal = await verify_session_token(request, token)
    except Problem as exc:
        if exc.status == 401:
            raise SignInRequired(SESSION_ENDED) from None
        raise
    request.state.principal = principal
    request.state.session_token = token
    REQUEST_CLIENT.set((request.client.host if request.client else None, request.headers.get("user-agent")))
    return principal


async def ui_form_principal(request: Request, principal: Annotated[Principal, Depends(ui_principal)]) -> Principal:
    """A state-changing UI request: signed in, and the form carries this session's CSRF token."""
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not csrf_matches(request.state.session_token, submitted if isinstance(submitted, str) else None):
        raise Problem(403, "Forbidden", "the form is not from this session (CSRF token missing or wrong)", field="csrf")
    return principal


UiPrincipal = Annotated[Principal, Depends(ui_principal)]
UiFormPrincipal = Annotated[Principal, Depends(ui_form_principal)]


def require_scope(request: Request, principal: Principal, resource_type: str, interaction: Interaction) -> None:
    """The SMART scope check the API's routers run as a dependency, for the same resource type."""
    settings: Settings = request.app.state.settings
    check_scope(principal, (resource_type,), interaction, required=settings.scopes_required)


def may(request: Request, principal: Principal, resource_type: str, interaction: Interaction) -> bool:
    try:
        require_scope(request, principal, resource_type, interaction)
    except Problem:
        return False
    return True
