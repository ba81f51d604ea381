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

router = APIRouter(tags=["shoppers"], dependencies=ADMIN)
log = logging.getLogger("shopsearch.service")

#: How long a client is told to wait before retrying an erasure another process held up.
ERASURE_RETRY_S = 10


@router.delete(
    "/users/{user_id:path}",
    response_model=ForgetResponse,
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
    """Forget a shopper: every stored event and their share of item popularity (admin).

    The erasure is durable: their later events are skipped. When another process holds an
    old snapshot of the store, the rows are deleted and tombstoned but old copies stay in the
    database files until it lets go: that is a 503 with Retry-After; send the same request
    again until it answers 200.
    """
    from personalization.profiles import ForgetIncomplete

    with runtime.pin() as loaded:  # held until done: a reload meanwhile waits to close it
        if loaded.store is None:
            raise HTTPException(409, "this service keeps no profiles: nothing to forget")
        request.state.user = loaded.pseudonymizer.pseudonym(user_id)
        with server_side("the erasure could not run", settings):
            try:
                removed = loaded.store.forget(user_id, loaded.pseudonymizer)
            except ForgetIncomplete as exc:
                log.warning(json.dumps({"event": "erasure_incomplete", "user": request.state.user}))
                raise ServiceUnavailable(
                    "the erasure is recorded (the shopper's events are deleted and their later "
                    "events will be skipped) but not complete: another process is reading the "
                    "profile store, so old copies remain in its files; send this request again",
                    retry_after=ERASURE_RETRY_S,
                ) from exc
    return ForgetResponse(removed=removed)
