"""The middleware every request goes through: request id, body size bound, a JSON body sent
under another type, bugs as 500s, metrics, and one JSON log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from shopsearch.service.metrics import Metrics

access_log = logging.getLogger("shopsearch.service.access")
log = logging.getLogger("shopsearch.service")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: Declared types a JSON body is taken from when it parses as a JSON object or list: what
#: ``curl -d`` (a form type) and a bare ``fetch()`` with a string body (text/plain) send.
_JSON_ANYWAY = ("", "text/plain", "application/x-www-form-urlencoded")
_LOGGED = ("search_id", "user", "stage_ms", "results", "events", "error")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ServiceMiddleware:
    """Pure ASGI (no buffering of responses): wraps the whole app."""

    def __init__(self, app: Any, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            body = await self._read_body(headers, receive)
            if body is None:
                response = JSONResponse(
                    {"detail": f"request body is larger than {self.max_body_bytes} bytes"},
                    status_code=413,
                )
                await response(scope, receive, send_with_id)
                return
            _json_anyway(scope, headers, body)
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:
            # a bug: its traceback in the log (with the request id), a 500 that names the id
            log.exception("unhandled error in request %s", request_id)
            state["error"] = "internal error"
            if started:
                raise
            response = JSONResponse(
                {"detail": f"internal error: the service logged it (request id {request_id})"},
                status_code=500,
            )
            await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(endpoint, scope["method"], status, seconds)
            entry: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "endpoint": endpoint,
                "status": status,
                "latency_ms": round(seconds * 1000, 2),
            }
            for key in _LOGGED:
                if key in state:
                    entry[key] = state[key]
            access_log.info(json.dumps(entry, sort_keys=False))

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> list | None:
        """The request's messages, body read whole; None when it is too large."""
        length = headers.get(b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body_bytes:
                    return None
            except ValueError:
                return None
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break
        return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay


def _json_anyway(scope: Scope, headers: dict[bytes, bytes], messages: list[Message]) -> None:
    """A body that parses as a JSON object or list, sent with no type, as text or as a form,
    is taken as JSON (the service reads no other body): ``curl -d '{"q": ...}'`` works."""
    if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    declared = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
    if declared not in _JSON_ANYWAY:
        return
    raw = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    if raw.strip()[:1] not in (b"{", b"["):
        return
    try:
        json.loads(raw)
    except ValueError:
        return
    scope["headers"] = [
        (k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"
    ] + [(b"content-type", b"application/json")]
