"""``POST /events``: shopper behaviour, applied to the profiles at once."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
from shopsearch.service.routers.search import search_log_of

if TYPE_CHECKING:
    from personalization.events import Event
    from personalization.searchlog_writer import SearchLogWriter

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

    With a search log (``--search-log``), the valid clicks, add-to-carts, purchases and views
    are recorded there too (``logged``): a click needs only ``user_id``, ``timestamp``,
    ``event``, ``product_id`` and the ``search_id`` its search answered; the log has the page
    the search showed. A service with a search log and no profiles records them there only.
    """
    from personalization.ingest import IngestResult, ingest_records, validate_known

    writer = search_log_of(request)
    with runtime.pin() as loaded:  # held until stored: a reload meanwhile waits to close it
        if loaded.store is None and writer is None:
            raise HTTPException(409, NO_PROFILES)
        retriever = loaded.pipeline.retriever

        def lookup(ids: Sequence[str]) -> dict[str, Any]:
            with loaded.search_lock:
                return retriever.payloads(ids)

        with server_side("the events were not stored", settings):
            if loaded.store is not None:
                result = ingest_records(body.events, loaded.store, loaded.pseudonymizer, lookup)
            else:
                batch, _ = validate_known(body.events, lookup)
                result = IngestResult(0, 0, 0, batch.rejects, events=list(batch.events))
        logged = log_events(writer, result.events, loaded.pseudonymizer)
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
    notes = result.notes()
    if loaded.store is None:
        notes.append("this service keeps no profiles: the events are recorded in the search log")
    return EventsResponse(
        accepted=result.accepted if loaded.store is not None else logged,
        logged=logged,
        added=result.added,
        duplicates=result.duplicates,
        forgotten=result.forgotten,
        rejected=[EventReject(index=r.line, reason=r.reason) for r in result.rejects],
        notes=notes,
    )


def log_events(writer: "SearchLogWriter | None", events: Sequence["Event"], pz: Any) -> int:
    """Appends valid posted events to the search log as interaction rows (pseudonyms only).
    A posted ``search`` event is not logged: the service logs the searches it serves.

    Returns:
        The rows queued (0 without a search log).
    """
    if writer is None:
        return 0
    n = 0
    for e in events:
        if e.event == "search":
            continue
        n += writer.append(
            {
                "event": e.event,
                "timestamp": e.timestamp,
                "search_id": e.search_id,
                "pseudonym": pz.pseudonym(e.user_id),
                "session": pz.session_pseudonym(e.session_id),
                "product_id": e.product_id,
                "position": e.position,
            }
        )
    return n
