"""Pages and redirects: the Jinja2 environment, flash messages, security headers, and the route class
that turns the API's refusals (`Problem`) into an HTML page instead of problem+json."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.api.access import is_supervisor
from app.api.problems import Problem
from app.ui.session import (
    CSRF_FIELD,
    FLASH_COOKIE,
    FLASH_TTL_S,
    UI_PATH,
    SignInRequired,
    clear_cookie,
    csrf_token,
    set_cookie,
)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SECURITY_HEADERS = {
    # Pages hold patient data: never cached, never framed, scripts and styles only from this origin
    # (inline style attributes are allowed for the server-rendered SVG charts).
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
FLASH_LEVELS = ("ok", "error")


def _local(value: datetime | date | None, zone: ZoneInfo, with_time: bool = True) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        shown = value.astimezone(zone)
        return shown.strftime("%Y-%m-%d %H:%M %Z") if with_time else shown.strftime("%Y-%m-%d")
    return value.isoformat()


def flash(response: Response, request: Request, message: str, level: str = "ok") -> None:
    """A one-time message for the page the redirect leads to (no patient data: action outcomes only)."""
    set_cookie(response, request.app.state.settings, FLASH_COOKIE, quote(f"{level}:{message}"[:600]), FLASH_TTL_S)


def _take_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    level, _, message = unquote(raw).partition(":")
    return (level if level in FLASH_LEVELS else "ok", message)


def safe_next(value: object, default: str) -> str:
    """Where a form returns to: only a page of this UI (never another site, never a scheme)."""
    if isinstance(value, str) and value.startswith(UI_PATH + "/") and "//" not in value and "\\" not in value:
        return value
    return default


def redirect(request: Request, to: str, message: str | None = None, level: str = "ok") -> RedirectResponse:
    response = RedirectResponse(to, status_code=303)
    if message:
        flash(response, request, message, level)
    return response


def render(request: Request, template: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
    settings = request.app.state.settings
    zone = ZoneInfo(settings.facility_timezone)
    principal = getattr(request.state, "principal", None)
    session_token = getattr(request.state, "session_token", None)
    shown_flash = _take_flash(request)
    base: dict[str, Any] = {
        "principal": principal,
        "supervisor": principal is not None and is_supervisor(principal, settings),
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(session_token) if session_token else None,
        "flash": shown_flash,
        "local": lambda value, with_time=True: _local(value, zone, with_time),
        "timezone": settings.facility_timezone,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
    }
    response = TEMPLATES.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
    if shown_flash is not None:
        clear_cookie(response, settings, FLASH_COOKIE)
    return response


def error_page(request: Request, status: int, title: str, detail: str | None) -> HTMLResponse:
    return render(request, "error.html", {"status": status, "title": title, "detail": detail}, status_code=status)


class UiRoute(APIRoute):
    """Every UI route: signed out → the sign-in page; a refusal from the shared functions → an HTML
    error page with the API's status; always the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                response = redirect(request, f"{UI_PATH}/sign-in", exc.reason, "error")
            except Problem as exc:
                response = error_page(request, exc.status, exc.title, exc.detail)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
                response = error_page(request, 422, "Request is not valid", f"check: {fields}")
            response.headers.update(SECURITY_HEADERS)
            return response

        return guarded
