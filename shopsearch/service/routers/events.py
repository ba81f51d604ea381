"""``POST /events``: shopper behaviour, applied to the profiles at once."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from shopsearch.service.dependencies import (
    BODY_RESPONSES,
    KEYED,
    KEYED_RESPONSES,
    NO_PROFILES_RESPONSES,
    UNAVAILABLE_RESPONSES,
    MetricsDep,
    RuntimeDep,
    Settings,
)
from shopsearch.service.errors import server_side
from shopsearch.service.models import EventReject, EventsRequest, EventsResponse

router = APIRouter(tags=["shoppers"], dependencies=KEYED)

NO_PROFILES = "this service keeps no profiles: start it with --profiles DIR"


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={
        **KEYED_RESPONSES,
        **NO_PROFILES_RESPONSES,
        **BODY_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
)
def post_events(
    body: EventsRequest,
    request: Request,
    runtime: RuntimeDep,
    metrics: MetricsDep,
    settings: Settings,
) -> EventsResponse:
    """Apply a batch of events to the profiles at once: the shopper's next search uses them.

    Each event is validated on its own with the event log's rules; a bad one comes back
    with its index and reason, and the valid ones are applied all the same. Events of a
    forgotten shopper are valid but not stored (``forgotten``, and a note says so).
    """
    from personalization.ingest import ingest_records

    with runtime.pin() as loaded:  # held until stored: a reload meanwhile waits to close it
        if loaded.store is None:
            raise HTTPException(409, NO_PROFILES)
        retriever = loaded.pipeline.retriever

        def lookup(ids: Sequence[str]) -> dict[str, Any]:
            with loaded.search_lock:
                return retriever.payloads(ids)

        with server_side("the events were not stored", settings):
            result = ingest_records(body.events, loaded.store, loaded.pseudonymizer, lookup)
    metrics.events.labels("added").inc(result.added)
    metrics.events.labels("duplicate").inc(result.duplicates)
    metrics.events.labels("forgotten").inc(result.forgotten)
    metrics.events.labels("rejected").inc(len(result.rejects))
    request.state.events = {
        "added": result.added,
        "duplicates": result.duplicates,
        "forgotten": result.forgotten,
        "rejected": len(result.rejects),
    }
    return EventsResponse(
        accepted=result.accepted,
        added=result.added,
        duplicates=result.duplicates,
        forgotten=result.forgotten,
        rejected=[EventReject(index=r.line, reason=r.reason) for r in result.rejects],
        notes=result.notes(),
    )
