"""Idempotent creates over HTTP: `Idempotency-Key`, and the official SDKs' retries (noor.trust.idempotency).

A create route opts in with one argument, `openapi_extra=IDEMPOTENT`, on a router made with
`route_class=IdempotentRoute` (the Dream Machine, OpenAI Videos and world-session routers are). Around the
route, in order:

1. the key: the client's `Idempotency-Key` (at most 255 characters, else a 400 in the API's error shape naming
   the header), or, with none, an SDK attempt's `x-stainless-retry-count` (lumaai and openai send it: 0 on the
   first attempt, n on the n-th retry); neither: the route runs as it would;
2. the request's fingerprint: method, path and body, the body canonical (JSON re-serialised with sorted keys;
   multipart as its fields and its files' digests: an SDK's retry draws a new multipart boundary);
3. the claim: the first request with the key runs the route; a repeat of a finished one gets its answer again
   (`Idempotent-Replayed: true`); another body under the key is a 409; a repeat while the first is still running
   waits for its answer up to `WAIT_S`, then is a 409 with Retry-After (the SDKs retry a 409 by themselves);
4. the answer: a 2xx is kept for replay; anything else releases the key (the create made nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from noor.api.errors import error_response
from noor.trust import idempotency
from noor.trust.idempotency import HEADER, MAX_KEY_CHARS

RETRY_HEADER = "x-stainless-retry-count"  # what the Stainless-generated SDKs (lumaai, openai) send on every attempt
REPLAYED_HEADER = "Idempotent-Replayed"
# A repeat waits this long for the first request's answer: creates answer in milliseconds (a sync image within
# 60 s), so a double click or a retry that raced its first attempt gets the same 201 rather than an error.
WAIT_S = 10.0
IDEMPOTENT: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": MAX_KEY_CHARS},
            "description": "the same key and body within 24 h returns the first answer and creates nothing; "
            "the same key with another body is a 409",
        }
    ]
}


def conflict(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entry for the 409 an idempotent create may answer, with the error body's schema."""
    why = f"{HEADER} used with another request, or its first request is still in progress"
    return {409: {"model": model, "description": why}}


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class IdempotentRoute(APIRoute):
    """A route class that makes idempotent the routes whose OpenAPI parameters declare the header (those marked
    `openapi_extra=IDEMPOTENT`); the others run as they are."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if not any(p.get("name") == HEADER for p in (self.openapi_extra or {}).get("parameters", [])):
            return handler

        async def idempotent_handler(request: Request) -> Response:
            return await run_once(request, handler)

        return idempotent_handler


async def run_once(request: Request, handler: Handler) -> Response:
    """The route `handler` for this request at most once per key (the module's docstring says how)."""
    from noor.api.app import tenant_or_none  # app.py builds its router with IdempotentRoute

    # 1. the key
    path = request.url.path
    given = request.headers.get(HEADER)
    count = request.headers.get(RETRY_HEADER, "")
    attempt = int(count) if count.isdigit() else None
    if given is None and attempt is None:
        return await handler(request)
    tenant = await tenant_or_none(request)
    if tenant is None:
        return await handler(request)  # the route's own 401: the API key is checked first
    if given is not None:
        try:
            idempotency.check_key(given)
        except idempotency.BadKey as err:
            return error_response(path, 400, str(err), param=HEADER)
    # 2. the request's fingerprint (a multipart body's form is parsed here, and closed here whoever answers)
    try:
        fingerprint = idempotency.fingerprint(request.method, path, await canonical_body(request))
        return await _answer(request, handler, tenant.name, given, attempt, fingerprint)
    finally:
        await request.close()


async def _answer(
    request: Request, handler: Handler, tenant: str, given: str | None, attempt: int | None, fingerprint: str
) -> Response:
    """Steps 3 and 4 of `run_once`: the claim, then the route's answer or the first one's."""
    store, path = request.app.state.ctx.store, request.url.path
    if store.planes:  # a region-bound tenant's kept answers (its requests, prompts included) live in its region
        store = await run_in_threadpool(store.home, tenant)
    # 3. the claim
    if given is None and attempt == 0:  # an SDK's first attempt: always a new request
        key = idempotency.retry_key(fingerprint)
        outcome: idempotency.Outcome = await run_in_threadpool(
            idempotency.take, store, tenant, key, fingerprint, idempotency.RETRY_WINDOW
        )
    else:
        key = given if given is not None else idempotency.retry_key(fingerprint)
        ttl = idempotency.TTL if given is not None else idempotency.RETRY_WINDOW
        outcome = await _claim(store, tenant, key, fingerprint, ttl)
    match outcome:
        case idempotency.Replay(answer):
            return Response(
                answer.body, answer.status_code, media_type=answer.media_type, headers={REPLAYED_HEADER: "true"}
            )
        case idempotency.Mismatch():  # only a client's key: an SDK retry's key is its body's fingerprint
            return error_response(
                path, 409, f"{HEADER} {given!r} was used with another request within 24 h: use a new key for a "
                "new request", param=HEADER, code="idempotency_key_reused", headers={"x-should-retry": "false"},
            )  # fmt: skip
        case idempotency.InProgress():
            first = f"the first request with {HEADER} {given!r}" if given is not None else "the first attempt"
            return error_response(
                path, 409, f"{first} is still in progress; retry in a second", param=HEADER,
                code="idempotency_key_in_progress", headers={"Retry-After": "1"},
            )  # fmt: skip
    # 4. the route, and its answer kept (a 2xx) or the key released
    assert isinstance(outcome, idempotency.Claimed)
    slot = (id(store), tenant, key)
    _running[slot] = done = asyncio.Event()
    try:
        try:
            response = await handler(request)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(idempotency.release, store, outcome)
            raise
        body = getattr(response, "body", None)
        if 200 <= response.status_code < 300 and isinstance(body, bytes):
            answer = idempotency.Answer(response.status_code, response.headers.get("content-type"), body)
            await run_in_threadpool(idempotency.finish, store, outcome, answer)
        else:
            await run_in_threadpool(idempotency.release, store, outcome)
        return response
    finally:
        if _running.get(slot) is done:
            del _running[slot]
        done.set()


# The keys this process is running a create for, and the event each one sets when it has answered or released:
# a repeat on this server waits on it rather than asking the database again and again. (A repeat on another server
# asks the database every 20..250 ms.)
_running: dict[tuple[int, str, str], asyncio.Event] = {}


async def _claim(store: Any, tenant: str, key: str, fingerprint: str, ttl: Any) -> idempotency.Outcome:
    """`idempotency.claim`, waiting up to WAIT_S while another request holds the key (on the event loop: a
    waiting request holds no thread)."""
    deadline = time.monotonic() + WAIT_S
    pause_s = 0.02
    while True:
        outcome = await run_in_threadpool(idempotency.claim, store, tenant, key, fingerprint, ttl)
        left_s = deadline - time.monotonic()
        if not isinstance(outcome, idempotency.InProgress) or left_s <= 0:
            return outcome
        running = _running.get((id(store), tenant, key))
        if running is None:
            await asyncio.sleep(min(pause_s, left_s))
            pause_s = min(2 * pause_s, 0.25)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(running.wait(), left_s)


async def canonical_body(request: Request) -> bytes:
    """The body in a form that two sends of one request share: JSON with sorted keys and no spacing; multipart as
    its fields and its files' SHA-256 (the boundary and the order of parts do not count); else the bytes."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()  # kept on the request: the route reads the same form
        parts: list[list[str]] = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                parts.append([name, value])
            else:
                data = await value.read()
                await value.seek(0)
                digest = hashlib.sha256(data).hexdigest()
                parts.append([name, value.filename or "", value.content_type or "", digest])
        return json.dumps(sorted(parts), ensure_ascii=False).encode()
    body = await request.body()
    try:
        return json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # not JSON: the route answers it; its bytes are its identity
        return body
