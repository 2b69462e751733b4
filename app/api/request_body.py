"""Request bodies and JSON from callers, read one way everywhere.

Invariants:
- Every request body is counted while it streams (chunked bodies too, no Content-Length needed): beyond
  its endpoint's cap the request gets 413 before the rest is read. The cap is CARECOORD_HTTP_MAX_BODY_BYTES
  unless the endpoint names a larger setting with `body_cap("ingest_max_bytes")`.
- Every JSON a caller sends (bodies with a JSON media type, cursors) is decoded by `loads`: nesting deeper
  than CARECOORD_JSON_MAX_DEPTH, integers longer than CARECOORD_JSON_MAX_INT_DIGITS, NaN/Infinity and
  non-finite numbers are refused as 400 (OperationOutcome under /fhir, problem+json elsewhere), never a 500.
- Request line plus headers beyond CARECOORD_HTTP_MAX_HEADER_BYTES get 431.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PARSED_KEY = "carecoord.json"  # the scope slot holding a JSON body the middleware already decoded
_CAP_ATTR = "__carecoord_body_cap__"
F = TypeVar("F", bound=Callable[..., Any])


class BodyRefused(HTTPException):
    """Raised from inside body reading: FastAPI passes HTTPExceptions through, so the path-aware problem
    handlers render it (app/api/problems.py)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(status_code=status, detail=title)
        self.title, self.reason = title, detail


class InvalidJson(ValueError):
    pass


def body_cap(setting: str, *, decodes_own_json: bool = False) -> Callable[[F], F]:
    """Mark an endpoint whose body may be larger than the default cap: `setting` names the Settings field.
    `decodes_own_json`: the endpoint decodes its JSON itself with `loads` (the ingest front doors, whose
    errors name the resource and whose bodies are published as received), so the middleware only counts."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _CAP_ATTR, (setting, decodes_own_json))
        return endpoint

    return mark


def loads(raw: bytes | str, max_depth: int, max_int_digits: int) -> Any:
    """JSON text -> value, or InvalidJson naming what is wrong (never the value itself)."""

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > max_int_digits:
            raise InvalidJson(f"an integer has more than {max_int_digits} digits")
        return int(text)

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise InvalidJson("a number is out of range")
        return value

    def no_constant(text: str) -> Any:
        raise InvalidJson(f"{text} is not JSON")

    try:
        value = json.loads(raw, parse_int=bounded_int, parse_float=finite_float, parse_constant=no_constant)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson(f"nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise InvalidJson("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:
        raise InvalidJson("a number cannot be read") from None
    if _depth_exceeds(value, max_depth):
        raise InvalidJson(f"nested deeper than {max_depth} levels")
    return value


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_setting(raw: bytes | str, settings: Any) -> Any:
    return loads(raw, settings.json_max_depth, settings.json_max_int_digits)


# Cursors are this server's own (a flat object, one list inside): anything deeper or longer is forged.
CURSOR_MAX_DEPTH = 3
CURSOR_MAX_INT_DIGITS = 20


def decode_cursor(text: str) -> Any:
    """An opaque cursor (base64url of JSON) -> its value; InvalidJson (a ValueError) if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise InvalidJson("not base64url") from None
    return loads(raw, CURSOR_MAX_DEPTH, CURSOR_MAX_INT_DIGITS)


async def json_body(request: Request) -> Any:
    """The request's JSON body (decoded once, by the middleware when the media type says JSON)."""
    if PARSED_KEY in request.scope:
        return request.scope[PARSED_KEY]
    try:
        return loads_setting(await request.body(), request.app.state.settings)
    except InvalidJson as exc:
        raise BodyRefused(400, "Invalid JSON", f"the body is not acceptable JSON: {exc}") from None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


class RequestLimitsMiddleware:
    """Caps header and body sizes, and decodes JSON bodies with `loads` before any endpoint sees them."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if head > s.http_max_header_bytes:
            from app.api.problems import respond_plain

            await respond_plain(
                scope,
                receive,
                send,
                431,
                "Request Header Fields Too Large",
                f"the request line and headers exceed {s.http_max_header_bytes} bytes",
            )
            return
        reader = _CappedReader(scope, receive, s)
        await self.app(scope, reader.receive, send)


class _CappedReader:
    def __init__(self, scope: Scope, receive: Receive, settings: Any) -> None:
        self.scope, self.upstream, self.settings = scope, receive, settings
        self.limit: int | None = None
        self.seen = 0
        self.replay: list[Message] | None = None

    def _cap(self) -> tuple[int, bool]:
        route = self.scope.get("route")
        setting, own_json = getattr(getattr(route, "endpoint", None), _CAP_ATTR, ("http_max_body_bytes", False))
        return int(getattr(self.settings, setting)), own_json

    def _too_large(self) -> BodyRefused:
        return BodyRefused(413, "Content Too Large", f"the request body exceeds {self.limit} bytes")

    async def _next(self) -> Message:
        message = await self.upstream()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.limit is not None and self.seen > self.limit:
                raise self._too_large()
        return message

    async def receive(self) -> Message:
        if self.replay:
            return self.replay.pop(0)
        if self.limit is None:
            self.limit, own_json = self._cap()
            for name, value in self.scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    raise self._too_large()  # refused before a byte of it is read
            if not own_json and _is_json(self.scope):
                return await self._decode_whole_body()
        return await self._next()

    async def _decode_whole_body(self) -> Message:
        chunks: list[bytes] = []
        while True:
            message = await self._next()
            if message["type"] != "http.request":
                return message  # disconnected
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                self.scope[PARSED_KEY] = loads_setting(body, self.settings)
            except InvalidJson as exc:
                raise BodyRefused(400, "Invalid JSON", f"the body is not acceptable JSON: {exc}") from None
        self.replay = []
        return {"type": "http.request", "body": body, "more_body": False}
