"""``DELETE /users/{user_id}``: forget a shopper (admin)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import json
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request

from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    INVALID_RESPONSES,
    NO_PROFILES_RESPONSES,
    UNAVAILABLE_RESPONSES,
    RuntimeDep,
    Settings,
)
from shopsearch.service.errors import ServiceUnavailable, server_side
from shopsearch.service.models import MAX_USER_ID_CHARS, ForgetResponse
from shopsearch.service.routers.search import search_log_of

router = APIRouter(tags=["shoppers"], dependencies=ADMIN)
log = logging.getLogger("shopsearch.service")

#: How long a client is told to wait before retrying an erasure another process held up.
ERASURE_RETRY_S = 10


@router.delete(
    "/users/{user_id:path}",
    response_model=ForgetResponse,
    response_model_exclude_none=True,  # the search log's fields only with a search log
    responses={
        **ADMIN_RESPONSES,
        **NO_PROFILES_RESPONSES,
        **INVALID_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def forget_user(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_CHARS)],
    request: Request,
    runtime: RuntimeDep,
    settings: Settings,
) -> ForgetResponse:
    """Forget a shopper: every stored event and their share of item popularity (admin), and
    their rows in the search log.

    The erasure is durable: their later events are skipped. When another process holds an
    old snapshot of the store, the rows are deleted and tombstoned but old copies stay in the
    database files until it lets go: that is a 503 with Retry-After; send the same request
    again until it answers 200.

    With a search log (``--search-log``) their rows are **removed** from it: every segment
    holding one is rewritten without them (``log_segments``); another replica's live segment
    drops them when it rotates (``log_pending``), and no replica logs them again.
    """
    from personalization.profiles import ForgetIncomplete
    from personalization.searchlog_writer import forget as forget_in_log

    writer = search_log_of(request)
    with runtime.pin() as loaded:  # held until done: a reload meanwhile waits to close it
        if loaded.store is None and writer is None:
            raise HTTPException(409, "this service keeps no profiles: nothing to forget")
        pz = loaded.pseudonymizer
        request.state.user = pz.pseudonym(user_id)
        in_log = None
        if writer is not None:
            with server_side("the erasure from the search log could not run", settings):
                in_log = forget_in_log(
                    writer.directory,
                    {pz.pseudonym(user_id), pz.raw_pseudonym(user_id)},
                    pz,
                    writer=writer,
                )
        removed = 0
        with server_side("the erasure could not run", settings):
            try:
                if loaded.store is not None:
                    removed = loaded.store.forget(user_id, loaded.pseudonymizer)
            except ForgetIncomplete as exc:
                log.warning(json.dumps({"event": "erasure_incomplete", "user": request.state.user}))
                raise ServiceUnavailable(
                    "the erasure is recorded (the shopper's events are deleted and their later "
                    "events will be skipped) but not complete: another process is reading the "
                    "profile store, so old copies remain in its files; send this request again",
                    retry_after=ERASURE_RETRY_S,
                ) from exc
    if in_log is None:
        return ForgetResponse(removed=removed)
    return ForgetResponse(
        removed=removed,
        log_rows=in_log.rows,
        log_segments=in_log.rewritten,
        log_pending=in_log.pending,
    )
