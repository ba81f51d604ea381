"""``GET|POST /search``: ranked products for a query (and a shopper)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import hashlib
import json
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from core.errors import ShopsearchError
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
from shopsearch.service.interleaving import interleave
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
from shopsearch.service.runtime import Loaded, Runtime
from shopsearch.service.settings import ServiceSettings

if TYPE_CHECKING:
    from personalization.searchlog_writer import SearchLogWriter
    from retrieval.filters import Filters
    from retrieval.hits import Hits, RankedHit

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
        # an interleaving experiment's searches: A's and B's rankings merged (for the log)
        with server_side("search is unavailable", settings):
            served = interleave(loaded, params, hits, filters)
        hits, experiment, teams = served.hits, served.experiment, served.teams
    if experiment is not None:
        metrics.interleaved.labels(experiment).inc()
    took = (time.perf_counter() - t0) * 1000
    log_search(request, params, loaded, hits, filters, search_id, took, experiment, teams)
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


#: The search log's clock (epoch seconds); tests move it.
_clock = time.time
#: Per generation (Loaded): its stages' fingerprints as the log's ``models`` JSON text.
_MODELS: "weakref.WeakKeyDictionary[Loaded, str]" = weakref.WeakKeyDictionary()


def open_search_log(settings: ServiceSettings, metrics: Metrics) -> "SearchLogWriter | None":
    """The process's search log writer (``settings.search_log``), or None without one.

    Its rows' outcomes go to ``shopsearch_search_log_rows_total{outcome}``; a folder that
    cannot be created or written is logged once and counted, never raised: searches go on.
    """
    if settings.search_log is None:
        return None
    from personalization.searchlog_writer import SearchLogWriter, log_pseudonymizer

    try:
        pz = log_pseudonymizer(
            settings.search_log, settings.profiles, settings.secret("pseudonym_key")
        )
    except (OSError, ShopsearchError):  # the key comes again with the pipeline's load
        pz = None
    return SearchLogWriter(
        settings.search_log,
        count=lambda outcome, n: metrics.search_log.labels(outcome).inc(n),
        pseudonymizer=pz,
    )


def search_log_of(request: Request) -> "SearchLogWriter | None":
    """The app's search log writer, or None when the service keeps none."""
    return getattr(request.app.state, "search_log", None)


def log_search(
    request: Request,
    params: SearchParams,
    loaded: Loaded,
    hits: "Hits",
    filters: "Filters",
    search_id: str,
    took_ms: float,
    experiment: str | None = None,
    teams: "Sequence[str | None] | None" = None,
) -> None:
    """Appends what a search served to the search log (no-op without one): the one place a
    served list is logged. Never blocks and never raises (a full queue drops the row, counted).

    Args:
        hits: The page served, in order (``hits[i]`` at rank ``params.offset + i + 1``).
        filters: The search's filters (logged in the filter expression's text form).
        took_ms: Time to answer, milliseconds.
        experiment: The interleaving experiment that served it, or None.
        teams: Per shown product, the team (``"A"``/``"B"``, None for a pinned one) when
            interleaved; None otherwise.
    """
    writer = search_log_of(request)
    if writer is None:
        return
    pz = loaded.pseudonymizer
    writer.append(
        {
            "event": "search",
            "timestamp": _clock(),
            "search_id": search_id,
            "pseudonym": getattr(request.state, "user", None) if params.user_id else None,
            "session": pz.session_pseudonym(params.session_id or ""),
            "query": params.q,
            "corrected": hits.corrected,
            "filter": filters.text(),
            "sort": params.sort if params.sort not in (None, "", "relevance") else None,
            "offset": params.offset,
            "k": params.k,
            "results": [h.product_id for h in hits],
            "scores": [float(h.score) for h in hits],
            "relevance": [_number(h.relevance) for h in hits],
            "personal": [_number(h.personal) for h in hits],
            "total_candidates": hits.total_candidates,
            "models": models_text(loaded),
            "rules": list(hits.rules),
            "experiment": experiment,
            "teams": list(teams) if teams is not None else None,
            "took_ms": round(took_ms, 3),
        }
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def models_text(loaded: Loaded) -> str:
    """What ranked a generation's searches, as the log's ``models`` JSON: the index build and
    each stage's weights fingerprint (None for a stage it runs without). Computed once per
    generation."""
    text = _MODELS.get(loaded)
    if text is None:
        pipeline = loaded.pipeline
        manifest = pipeline.retriever.manifest
        models = {
            "index": manifest.get("build_id"),
            "retriever": (manifest.get("model") or {}).get("fingerprint"),
            "reranker": getattr(pipeline.reranker, "fingerprint", None),
            "personal": _file_fingerprint(loaded.settings.personal, "personal.pt"),
            "ranker": getattr(pipeline.ranker, "fingerprint", None),
        }
        challenger = getattr(loaded, "interleave", None)
        if challenger is not None:
            models["B"] = challenger.models
        text = _MODELS[loaded] = json.dumps(models, sort_keys=True, default=str)
    return text


def _file_fingerprint(folder: str | None, name: str) -> str | None:
    if folder is None:
        return None
    try:
        return hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


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
