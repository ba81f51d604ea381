"""``GET|POST /search``: ranked products for a query (and a shopper)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from shopsearch.service.dependencies import (
    BODY_RESPONSES,
    INVALID_RESPONSES,
    KEYED,
    KEYED_RESPONSES,
    UNAVAILABLE_RESPONSES,
    MetricsDep,
    RuntimeDep,
    Settings,
    problem,
)
from shopsearch.service.errors import server_side
from shopsearch.service.metrics import Metrics
from shopsearch.service.models import (
    Correction,
    FacetValue,
    Merchandising,
    Reason,
    ScoreParts,
    SearchParams,
    SearchResponse,
    SearchResult,
)
from shopsearch.service.runtime import Runtime
from shopsearch.service.settings import ServiceSettings

if TYPE_CHECKING:
    from retrieval.hits import RankedHit

router = APIRouter(tags=["search"], dependencies=KEYED)

_USER_MISTAKE = {
    400: problem(
        "The query has no letter or digit, the filters contradict each other "
        "(min_price above max_price), the filter expression does not parse or has a value "
        "its field's type cannot take, or a filter, facet, sort or diversify names a field "
        "that cannot take it (the message names the fields that can)."
    )
}
RESPONSES = {**_USER_MISTAKE, **KEYED_RESPONSES, **INVALID_RESPONSES, **UNAVAILABLE_RESPONSES}


def json_response(model: Any) -> Response:
    """A validated response model as JSON, serialized once by pydantic-core.

    Returning the model itself would have FastAPI dump it, validate it again against
    ``response_model`` and encode it a third time: most of the service's own cost per search.
    """
    return Response(content=model.model_dump_json(by_alias=True), media_type="application/json")


def single_values(request: Request) -> None:
    """A field that takes one value given twice (``?max_price=10&max_price=500``) is refused,
    not read as its last value: only ``brands`` is a list."""
    counts = Counter(key for key, _ in request.query_params.multi_items())
    repeated = sorted(key for key, n in counts.items() if n > 1 and key in _SINGLE)
    if repeated:
        raise RequestValidationError(
            [
                {
                    "type": "repeated",
                    "loc": ("query", key),
                    "msg": "given more than once; it takes one value",
                }
                for key in repeated
            ]
        )


_SINGLE = frozenset(SearchParams.model_fields) - {"brands", "facets"}


@router.get(
    "/search",
    response_model=SearchResponse,
    responses=RESPONSES,
    dependencies=[Depends(single_values)],
)
def search_get(
    params: Annotated[SearchParams, Query()],
    request: Request,
    runtime: RuntimeDep,
    metrics: MetricsDep,
    settings: Settings,
) -> Response:
    """Ranked products for a query (and a shopper); filters narrow the candidates."""
    return json_response(run_search(params, request, runtime, metrics, settings))


@router.post("/search", response_model=SearchResponse, responses={**RESPONSES, **BODY_RESPONSES})
def search_post(
    params: SearchParams,
    request: Request,
    runtime: RuntimeDep,
    metrics: MetricsDep,
    settings: Settings,
) -> Response:
    """As ``GET /search``, with the fields in a JSON body (keeps shopper ids out of URLs)."""
    return json_response(run_search(params, request, runtime, metrics, settings))


def run_search(
    params: SearchParams,
    request: Request,
    runtime: Runtime,
    metrics: Metrics,
    settings: ServiceSettings,
) -> SearchResponse:
    from rerank import storefront
    from rerank.pipeline import DEFAULT_RERANK_DEPTH
    from retrieval.filters import Filters
    from retrieval.retriever import check_query

    # the request's own mistakes first (a 400): what follows works on the server's state
    check_query(params.q)
    filters = Filters.coerce(params.filters())
    search_id = uuid.uuid4().hex
    request.state.search_id = search_id
    depth = params.offset + params.k
    note = None
    t0 = time.perf_counter()
    with runtime.pin() as loaded:
        # a filter on a field this index lacks is the request's mistake (a 400), not the index's
        filters.check(loaded.pipeline.retriever.schema)
        # so is a facet, sort or diversify on a field that cannot take it
        storefront.check(
            loaded.pipeline.retriever.schema, params.facets, params.sort, params.diversify
        )
        if params.user_id is not None:
            request.state.user = loaded.pseudonymizer.pseudonym(params.user_id)
        with loaded.search_lock, server_side("search is unavailable", settings):
            hits = loaded.pipeline.search(
                params.q,
                user_id=params.user_id,
                k=params.k,
                offset=params.offset,
                rerank_depth=max(settings.rerank_depth or DEFAULT_RERANK_DEPTH, depth),
                filters=filters,
                mode=params.mode,
                explain=params.explain,
                correct=params.correct,
                facets=params.facets,
                sort=params.sort,
                diversify=params.diversify,
            )
            stage_ms = {k: round(v, 3) for k, v in hits.stage_ms.items()}
            if not hits and not filters.is_empty():
                # what the CLI prints as "note: ..." (a few counts: only for an empty result)
                note = loaded.pipeline.retriever.why_empty(filters)
    took = (time.perf_counter() - t0) * 1000
    metrics.observe_stages(stage_ms)
    request.state.stage_ms = stage_ms
    page = hits
    request.state.results = len(page)
    results = [
        result_of(h, params.offset + i + 1, explain=params.explain) for i, h in enumerate(page)
    ]
    return SearchResponse(
        search_id=search_id,
        query=params.q,
        corrected=hits.corrected,
        corrections=[
            Correction(typed=a, to=b)
            for a, b in (hits.correction.changes if hits.corrected else ())
        ],
        suggestion=hits.suggestion,
        k=params.k,
        offset=params.offset,
        personalized=any(h.personal != 0.0 for h in hits),
        results=results,
        stage_ms=stage_ms,
        took_ms=round(took, 3),
        note=note,
        facets={
            name: [FacetValue(**c.to_dict()) for c in counts]
            for name, counts in hits.facets.items()
        },
        total_candidates=hits.total_candidates,
        rules=list(hits.rules),
        redirected=hits.redirected,
    )


def result_of(h: "RankedHit", rank: int, explain: bool) -> SearchResult:
    """One ranked hit as the service answers it."""
    return SearchResult(
        rank=rank,
        product_id=h.product_id,
        score=h.score,
        scores=ScoreParts(
            retrieval=h.retrieval,
            retrieval_rank=h.retrieval_rank,
            relevance=h.relevance,
            cross=h.cross,
            personal=h.personal,
        ),
        product=_jsonable(h.payload),
        because=[Reason(feature=n, value=v, contribution=c) for n, v, c in h.because]
        if explain
        else None,
        merchandising=[Merchandising(rule=r, action=a) for r, a in h.rule] if h.rule else None,
    )


def _jsonable(value: Any) -> Any:
    """Payload values as JSON takes them (numpy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
