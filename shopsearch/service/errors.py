"""What each failure is answered with.

* :class:`~core.errors.ShopsearchError` raised while reading the request (a blank query,
  ``min_price`` above ``max_price``, a reload folder that is not a model): the user's mistake,
  400 with its one line.
* A bad field: 422 naming it (FastAPI's list in ``detail``, one line in ``message``); a body
  that is not JSON at all: 415 saying so.
* A condition on the server's side (nothing loaded yet, a profile store another process
  holds, an erasure that could not finish): 503 with ``Retry-After``
  (:class:`ServiceUnavailable`, :class:`~shopsearch.service.runtime.NotReady`). Never a 4xx:
  a client must retry it.
* Anything else is a bug: 500 with the request id, its traceback in the service's log
  (:mod:`shopsearch.service.middleware`).

No response carries a server file path: :func:`public_message` puts the setting's name in
place of each configured folder, and ``<path>`` in place of any other absolute path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import ShopsearchError, first_line
from shopsearch.service.runtime import MESSAGE_CHARS, NotReady
from shopsearch.service.settings import ServiceSettings

log = logging.getLogger("shopsearch.service")

#: Seconds a client is told to wait before retrying a 503.
RETRY_AFTER_S = 2
#: FastAPI's detail for a body it could not parse at all (not UTF-8, not a form).
_UNPARSABLE = "There was an error parsing the body"
_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`,;()<>\[\]{}]+")
_PLACES = (
    ("profiles", "<profiles>"),
    ("personal", "<personal model>"),
    ("reranker", "<reranker>"),
    ("index", "<index>"),
    ("state_dir", "<state dir>"),
)


class ServiceUnavailable(Exception):
    """A condition on the server's side that a retry can outlast: 503 with Retry-After.

    Args:
        message: One line in the service's terms (what is wrong, that a retry will do).
        retry_after: Seconds to wait before retrying.
    """

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@contextlib.contextmanager
def server_side(what: str, settings: ServiceSettings) -> Iterator[None]:
    """Around work on the server's own state (the index, the profile store): a
    ``ShopsearchError`` there is not the request's fault, so it becomes a 503 that says
    ``what`` could not be done (the library's words, paths replaced, in the log)."""
    try:
        yield
    except ShopsearchError as exc:
        text = public_message(exc, settings)
        log.warning(
            json.dumps(
                {"event": "unavailable", "what": what, "error": first_line(exc, MESSAGE_CHARS)}
            )
        )
        raise ServiceUnavailable(f"{what}: {text}; retry shortly") from exc


def public_message(exc: BaseException | str, settings: ServiceSettings | None) -> str:
    """One line without server paths: configured folders by their setting's name, any other
    absolute path as ``<path>`` (a string: a line already, :attr:`Runtime.error`)."""
    text = exc if isinstance(exc, str) else first_line(exc, MESSAGE_CHARS)
    if settings is not None:
        for name, label in _PLACES:
            folder = getattr(settings, name)
            if folder:
                folder = folder.rstrip("/")
                text = re.sub(re.escape(folder) + r"(/[^\s'\"`,;()<>]*)?", label, text)
    return _PATH.sub("<path>", text)


def install(app: FastAPI, settings: ServiceSettings) -> None:
    """The exception handlers of the service."""

    @app.exception_handler(ShopsearchError)
    async def user_mistake(request: Request, exc: ShopsearchError) -> JSONResponse:
        message = public_message(exc, settings)
        request.state.error = message
        return JSONResponse({"detail": message}, status_code=400)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        message = f"not ready: {public_message(exc, settings)}"
        request.state.error = message
        return JSONResponse(
            {"detail": message}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        message = str(exc)
        request.state.error = message
        return JSONResponse(
            {"detail": message}, status_code=503, headers={"Retry-After": str(exc.retry_after)}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE:
            # FastAPI's answer to a body that is not even text: a bad body, as "{not json" is
            message = "body: the body is not JSON (UTF-8 text)"
            request.state.error = message
            problem = [{"type": "json_invalid", "loc": ["body"], "msg": message[6:]}]
            return JSONResponse({"detail": problem, "message": message}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def bad_fields(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        not_json = _not_json(request, errors)
        if not_json is not None:
            request.state.error = not_json
            return JSONResponse({"detail": not_json}, status_code=415)
        message = "; ".join(_field_error(e) for e in errors[:5])
        request.state.error = message
        # FastAPI's own shape (detail: a list naming each field), plus the message on one line;
        # the rejected input is left out: it may be a shopper's id
        detail = [
            {
                "type": str(e.get("type", "")),
                "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
            }
            for e in errors
        ]
        return JSONResponse({"detail": detail, "message": message}, status_code=422)


def _not_json(request: Request, errors: list[Any]) -> str | None:
    """The message for a body that did not arrive as JSON (a form, a text that is not JSON),
    rather than one about the fields it does not have; None when the body was JSON."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    if not any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return None
    kind = request.headers.get("content-type", "")
    if kind.split(";")[0].strip().lower().endswith(("/json", "+json")):
        return None
    sent = kind.split(";")[0].strip() or "no Content-Type"
    return (
        "the body must be a JSON object (Content-Type: application/json); this one came as "
        f"{sent} and is not JSON"
    )


def _field_error(error: Any) -> str:
    """``field: what is wrong`` (just the message for a check on the whole request)."""
    field = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
    return f"{field}: {error.get('msg')}" if field else str(error.get("msg"))
