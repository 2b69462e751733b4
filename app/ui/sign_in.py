"""`/ui/sign-in` and `/ui/sign-out`. Development (embedded) mode offers a form that mints a token
with the same function as `carecoord token`; every environment accepts a pasted bearer token. Either
way the token is verified with the API's verifier before it becomes the session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from app.api.auth import dev_token
from app.api.problems import Problem
from app.settings import Settings
from app.ui.rendering import UiRoute, redirect, render
from app.ui.session import (
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_COOKIE_TTL_S,
    UI_PATH,
    UiFormPrincipal,
    UiPrincipal,
    clear_cookie,
    new_sign_in_nonce,
    seconds_left,
    set_cookie,
    verify_session_token,
)

router = APIRouter(prefix=UI_PATH, route_class=UiRoute, include_in_schema=False)
SIGN_IN_FIELD = "sign_in"
MAX_FIELD = 4096  # a pasted token, or a comma-separated list of roles or teams


def _development(settings: Settings) -> bool:
    return settings.environment == "development"


def _names(raw: object) -> list[str]:
    text = raw if isinstance(raw, str) else ""
    return [name.strip() for name in text[:MAX_FIELD].split(",") if name.strip()]


def _form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    settings: Settings = request.app.state.settings
    nonce = new_sign_in_nonce()
    response = render(
        request,
        "sign_in.html",
        {
            "development": _development(settings),
            "error": error,
            "sign_in_field": SIGN_IN_FIELD,
            "sign_in_nonce": nonce,
            "role_hints": sorted({*settings.care_roles, *settings.pcp_roles, *settings.part2_roles}),
        },
        status_code=status_code,
    )
    set_cookie(response, settings, SIGN_IN_COOKIE, nonce, SIGN_IN_COOKIE_TTL_S)
    return response


@router.get("/sign-in", summary="Sign-in form")
async def sign_in_form(request: Request) -> Response:
    return _form(request)


@router.post("/sign-in", summary="Sign in with a bearer token (or, in development, a minted one)")
async def sign_in(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    form = await request.form()
    nonce = request.cookies.get(SIGN_IN_COOKIE)
    if not nonce or form.get(SIGN_IN_FIELD) != nonce:
        return _form(request, "The sign-in form expired or did not come from this site. Try again.", 403)
    if form.get("mode") == "development":
        if not _development(settings):
            return _form(request, "Development sign-in is available only in development mode.", 403)
        roles, subject = _names(form.get("roles")), str(form.get("user") or "").strip()[:255]
        if not roles or not subject:
            return _form(request, "Give a user name and at least one role.", 422)
        token = dev_token(settings, subject, roles, _names(form.get("teams")))
    else:
        token = str(form.get("token") or "").strip()[:MAX_FIELD]
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
    try:
        await verify_session_token(request, token)
    except Problem as exc:
        return _form(request, f"That token was not accepted: {exc.detail or exc.title}.", exc.status)
    response = RedirectResponse(f"{UI_PATH}/worklist", status_code=303)
    set_cookie(response, settings, SESSION_COOKIE, token, seconds_left(token))
    clear_cookie(response, settings, SIGN_IN_COOKIE)
    return response


@router.post("/sign-out", summary="Sign out (forget the session cookie)")
async def sign_out(request: Request, principal: UiFormPrincipal) -> Response:
    response = redirect(request, f"{UI_PATH}/sign-in", f"Signed out {principal.subject}.")
    clear_cookie(response, request.app.state.settings, SESSION_COOKIE)
    return response


@router.get("", summary="The UI's start page")
async def start(request: Request, principal: UiPrincipal) -> Response:
    return RedirectResponse(f"{UI_PATH}/worklist", status_code=303)
