"""The request gate (pure ASGI middleware): what every request with a body passes before a route reads it.

1. the key: a request that carries a body must carry a valid key, checked before one byte of the body
   is read (a 300 MB body without a key costs the server nothing: 401 at once);
2. its size: over the path's cap it is a 413, from Content-Length when there is one and counted as it
   streams when there is not (chunked), so nothing past the cap is buffered or written;
3. JSON: a JSON body is parsed once here, strictly: NaN/Infinity, lone surrogates and nesting deeper than
   `MAX_JSON_DEPTH` are a 400 (Python's json takes the first two and fails on the third with a
   RecursionError; each ended as a 500 further in). Well-formed bodies are replayed to the app unchanged.

Starlette's and FastAPI's own body limits answer in plain text; this one answers in the API's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noor.api.errors import error_response

MAX_JSON_DEPTH = 32  # Noor's deepest body (a planner mix) is 5 levels deep


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the cap is passed; an HTTPException, so FastAPI's body parsing re-raises it."""

    def __init__(self, limit_bytes: int):
        super().__init__(413, f"request body must be at most {limit_bytes} bytes")


class BadJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def strict_json(body: bytes) -> Any:
    """`json.loads`, refusing what JSON (RFC 8259) does not allow but Python accepts. Raises BadJSON for those and
    for bodies that are not UTF-8; json.JSONDecodeError (a ValueError) for malformed JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadJSON(f"body must be UTF-8: {err.reason} at byte {err.start}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadJSON(f"JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and lone surrogates (`"\\ud800"` decodes to a str that cannot be encoded, so storing or answering
    with it fails), walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BadJSON(f"JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJSON(f"JSON string {text[:40]!r} holds a lone surrogate (not Unicode text)") from None


# (key kind, key) -> whether it is valid; kind is "tenant" or "worker"
Authenticate = Callable[[str, str | None], Awaitable[bool]]


class RequestGate:
    def __init__(
        self,
        app: ASGIApp,
        authenticate: Authenticate,
        limit_for: Callable[[str], int],
        presigned: Callable[[str], bool] = lambda path: False,
    ):
        """`presigned`: paths whose URL carries its own signature (a presigned upload), which their route checks
        before it reads the body: no API key is asked of them."""
        self.app, self.authenticate, self.limit_for, self.presigned = app, authenticate, limit_for, presigned

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (length is not None and length.strip() not in ("", "0"))

        async def refuse(status: int, message: str) -> None:
            await error_response(path, status, message)(scope, receive, send)

        # 1. the key, before the body
        if has_body and not self.presigned(path):
            kind = "worker" if path.startswith("/v1/worker/") else "tenant"
            if not await self.authenticate(kind, _bearer(headers)):
                message = "a worker key is required" if kind == "worker" else "Invalid API key is provided"
                await refuse(401, message)
                return
        # 2. the declared size
        limit_bytes = self.limit_for(path)
        if length is not None and not length.isdigit():
            await refuse(400, f"Content-Length must be a number, got {length!r}")
            return
        if length is not None and int(length) > limit_bytes:
            await refuse(413, f"request body must be at most {limit_bytes} bytes")
            return
        # 3. the streamed size, and JSON read once and checked
        counted = _Counted(receive, limit_bytes)
        app_receive: Receive = counted
        if has_body and "json" in headers.get("content-type", "").lower():
            try:
                body = await counted.read_all()
                strict_json(body)
            except BodyTooLarge as err:
                await refuse(413, err.detail)
                return
            except BadJSON as err:
                await refuse(400, f"body: {err}")
                return
            except ValueError:
                pass  # malformed JSON: the route's own parser answers (422 with the position)
            app_receive = _replay(body, receive)
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, app_receive, watched_send)
        except BodyTooLarge as err:  # a route that read the body itself and let the exception through
            if started:
                raise
            await refuse(413, err.detail)


class _Counted:
    """The request's `receive`, raising BodyTooLarge once more than `limit_bytes` have arrived."""

    def __init__(self, receive: Receive, limit_bytes: int):
        self.receive, self.limit_bytes, self.received_bytes = receive, limit_bytes, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received_bytes += len(message.get("body", b""))
            if self.received_bytes > self.limit_bytes:
                raise BodyTooLarge(self.limit_bytes)
        return message

    async def read_all(self) -> bytes:
        chunks = []
        while True:
            message = await self()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # http.disconnect, when the client goes

    return replay


def _bearer(headers: dict[str, str]) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None
