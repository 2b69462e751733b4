"""Sign an httpx client in to the web UI the way a browser does (sign-in form, cookies), and read the
CSRF token its forms carry: for tests of the UI pages over ASGI."""

from __future__ import annotations

import re

import httpx

from app.ui.session import CSRF_FIELD, SESSION_COOKIE

_NONCE = re.compile(r'name="sign_in" value="([^"]+)"')
_CSRF = re.compile(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"')


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/ui/sign-in")
    nonce = _NONCE.search(form.text)
    assert nonce is not None, form.text[:500]
    return await client.post("/ui/sign-in", data={"sign_in": nonce.group(1), "mode": "token", "token": token})


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, "the page carries no CSRF token"
    return found.group(1)


def session_cookie(client: httpx.AsyncClient) -> str | None:
    return client.cookies.get(SESSION_COOKIE, path="/ui")
