"""The HTTP search service: a FastAPI app around one :class:`rerank.SearchPipeline`.

    create_app(settings, pipeline_factory=None) -> FastAPI
    create_app_from_env() -> FastAPI          # what each uvicorn worker imports

Endpoints: ``GET|POST /search``, ``POST /events``, ``DELETE /users/{user_id}``,
``POST /admin/reload``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, the OpenAPI docs
(``/docs``, ``/openapi.json``) and a search page at ``/``.

Security: with an API key set, every endpoint but the health checks, the page and the docs
(static, no data) needs ``X-API-Key``; forgetting a shopper and reloading models need
``X-Admin-Key`` (refused when no admin key is set). Keys are compared in constant time. Raw
shopper ids never reach a log line: logs show the route template and the shopper's pseudonym.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at
# run time, and the key dependencies are local to create_app
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from core.errors import ShopsearchError
from shopsearch.service.metrics import Metrics
from shopsearch.service.models import (
    MAX_USER_ID_CHARS,
    Correction,
    EventReject,
    EventsRequest,
    EventsResponse,
    ForgetResponse,
    Health,
    Readiness,
    Reason,
    ReloadRequest,
    ReloadResponse,
    ScoreParts,
    SearchParams,
    SearchResponse,
    SearchResult,
)
from shopsearch.service.runtime import NotReady, PipelineFactory, Runtime
from shopsearch.service.settings import ServiceSettings

access_log = logging.getLogger("shopsearch.service.access")
log = logging.getLogger("shopsearch.service")

LOG_LEVEL_ENV = "SHOPSEARCH_SERVE_LOG_LEVEL"
API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-Key"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _json(model: BaseModel) -> Response:
    """A validated response model as JSON, serialized once by pydantic-core.

    Returning the model itself would have FastAPI dump it, validate it again against
    ``response_model`` and encode it a third time: most of the service's own cost per search.
    """
    return Response(content=model.model_dump_json(by_alias=True), media_type="application/json")


def _same(given: str | None, expected: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class _Service:
    """Middleware for every request: request id, body size bound, metrics, one JSON log line."""

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

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            body_receive = await self._bounded_body(headers, receive)
            if body_receive is None:
                response = JSONResponse(
                    {"detail": f"request body is larger than {self.max_body_bytes} bytes"},
                    status_code=413,
                )
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, body_receive, send_with_id)
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
            for key in ("search_id", "user", "stage_ms", "results", "events", "error"):
                if key in state:
                    entry[key] = state[key]
            access_log.info(json.dumps(entry, sort_keys=False))

    async def _bounded_body(self, headers: dict[bytes, bytes], receive: Receive) -> Receive | None:
        """A receive that replays the body, read whole; None when it is too large."""
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

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        return replay


def create_app(
    settings: ServiceSettings, pipeline_factory: PipelineFactory | None = None
) -> FastAPI:
    """The search service.

    Args:
        settings: Index, model folders, keys and limits.
        pipeline_factory: Builds a ``SearchPipeline`` from settings (at start-up and on each
            reload); None opens every stage from its folder (``SearchPipeline.open``).

    Returns:
        A FastAPI app; the pipeline opens when it starts (in the background unless
        ``settings.background_load`` is False).
    """
    runtime = Runtime(settings, pipeline_factory)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.background_load:
            runtime.load_in_background()
        else:
            runtime.load()
        yield
        runtime.close()

    app = FastAPI(
        title="shopsearch",
        summary="Personalized product search: retrieval, reranking, the shopper's behaviour.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.settings = settings
    app.add_middleware(_Service, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, scheme_name="api_key")
    admin_key_header = APIKeyHeader(
        name=ADMIN_KEY_HEADER, auto_error=False, scheme_name="admin_key"
    )

    def require_key(key: Annotated[str | None, Depends(api_key_header)]) -> None:
        if settings.api_key is not None and not _same(key, settings.api_key):
            raise HTTPException(
                401,
                f"missing or wrong {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": API_KEY_HEADER},
            )

    def require_admin(key: Annotated[str | None, Depends(admin_key_header)]) -> None:
        if settings.admin_key is None:
            raise HTTPException(
                403, "admin endpoints are off: start the service with SHOPSEARCH_ADMIN_KEY set"
            )
        if not _same(key, settings.admin_key):
            raise HTTPException(
                403,
                f"missing or wrong {ADMIN_KEY_HEADER} header",
                headers={"WWW-Authenticate": ADMIN_KEY_HEADER},
            )

    keyed = [Depends(require_key)]
    admin = [Depends(require_key), Depends(require_admin)]

    @app.exception_handler(ShopsearchError)
    async def user_mistake(request: Request, exc: ShopsearchError) -> JSONResponse:
        message = _one_line(exc)
        request.state.error = message
        return JSONResponse({"detail": message}, status_code=400)

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        request.state.error = _one_line(exc)
        return JSONResponse(
            {"detail": f"not ready: {_one_line(exc)}"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(RequestValidationError)
    async def bad_fields(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(_field_error(e) for e in errors[:5])
        request.state.error = message
        # FastAPI's own shape (detail: a list naming each field), plus the message on one line;
        # the rejected input is left out: it may be a shopper's id
        detail = [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]
        return JSONResponse({"detail": detail, "message": message}, status_code=422)

    # -- search --------------------------------------------------------------------------

    def run_search(params: SearchParams, request: Request) -> SearchResponse:
        from rerank.pipeline import DEFAULT_RERANK_DEPTH

        search_id = uuid.uuid4().hex
        request.state.search_id = search_id
        depth = params.offset + params.k
        t0 = time.perf_counter()
        with runtime.use() as loaded:
            if params.user_id is not None:
                request.state.user = loaded.pseudonymizer.pseudonym(params.user_id)
            try:
                hits = loaded.pipeline.search(
                    params.q,
                    user_id=params.user_id,
                    k=depth,
                    rerank_depth=max(settings.rerank_depth or DEFAULT_RERANK_DEPTH, depth),
                    filters=params.filters(),
                    mode=params.mode,
                    explain=params.explain,
                    correct=params.correct,
                )
            except (ShopsearchError, ValueError) as exc:
                # the retriever signals user mistakes (a blank query) with ValueError too
                raise ShopsearchError(_one_line(exc)) from None
            stage_ms = {k: round(v, 3) for k, v in loaded.pipeline.stage_ms.items()}
        took = (time.perf_counter() - t0) * 1000
        metrics.observe_stages(stage_ms)
        request.state.stage_ms = stage_ms
        page = hits[params.offset : depth]
        request.state.results = len(page)
        results = [
            SearchResult(
                rank=params.offset + i + 1,
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
                if params.explain
                else None,
            )
            for i, h in enumerate(page)
        ]
        return SearchResponse(
            search_id=search_id,
            query=params.q,
            corrected=getattr(hits, "corrected", None),
            corrections=[
                Correction(typed=a, to=b)
                for a, b in (hits.correction.changes if getattr(hits, "correction", None) else ())
            ],
            k=params.k,
            offset=params.offset,
            personalized=any(h.personal != 0.0 for h in hits),
            results=results,
            stage_ms=stage_ms,
            took_ms=round(took, 3),
        )

    @app.get("/search", response_model=SearchResponse, dependencies=keyed, tags=["search"])
    def search_get(params: Annotated[SearchParams, Query()], request: Request) -> Response:
        """Ranked products for a query (and a shopper); filters narrow the candidates."""
        return _json(run_search(params, request))

    @app.post("/search", response_model=SearchResponse, dependencies=keyed, tags=["search"])
    def search_post(params: SearchParams, request: Request) -> Response:
        """As ``GET /search``, with the fields in a JSON body (keeps shopper ids out of URLs)."""
        return _json(run_search(params, request))

    # -- behaviour -----------------------------------------------------------------------

    @app.post("/events", response_model=EventsResponse, dependencies=keyed, tags=["shoppers"])
    def post_events(body: EventsRequest, request: Request) -> EventsResponse:
        """Apply a batch of events to the profiles at once: the shopper's next search uses them.

        Each event is validated on its own with the event log's rules; a bad one comes back
        with its index and reason, and the valid ones are applied all the same.
        """
        from personalization.events import validate_records

        ids = sorted(
            {
                str(e["product_id"]).strip()
                for e in body.events
                if isinstance(e, dict) and isinstance(e.get("product_id"), (str, int))
            }
        )
        with runtime.use() as loaded:
            if loaded.store is None:
                raise HTTPException(
                    409, "this service keeps no profiles: start it with --profiles DIR"
                )
            store, pz = loaded.store, loaded.pseudonymizer
            collection = loaded.pipeline.retriever.collection
            products: dict[str, dict[str, Any]] = {}
            for i in range(0, len(ids), 1000):
                products.update(collection.retrieve(ids[i : i + 1000]))
        batch = validate_records(body.events, known_products=products.__contains__)
        summary = store.ingest(batch.events, pz)
        named = {e.product_id for e in batch.events if e.product_id}
        if named:
            store.upsert_items(products[p].payload for p in sorted(named))
        metrics.events.labels("added").inc(summary.added)
        metrics.events.labels("duplicate").inc(summary.duplicates)
        metrics.events.labels("rejected").inc(len(batch.rejects))
        request.state.events = {
            "added": summary.added,
            "duplicates": summary.duplicates,
            "rejected": len(batch.rejects),
        }
        return EventsResponse(
            accepted=len(batch.events),
            added=summary.added,
            duplicates=summary.duplicates,
            rejected=[EventReject(index=r.line, reason=r.reason) for r in batch.rejects],
        )

    @app.delete(
        "/users/{user_id:path}",
        response_model=ForgetResponse,
        dependencies=admin,
        tags=["shoppers"],
    )
    def forget_user(
        user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_CHARS)],
        request: Request,
    ) -> ForgetResponse:
        """Forget a shopper: every stored event and their share of item popularity (admin)."""
        with runtime.use() as loaded:
            if loaded.store is None:
                raise HTTPException(409, "this service keeps no profiles: nothing to forget")
            store, pz = loaded.store, loaded.pseudonymizer
        request.state.user = pz.pseudonym(user_id)
        return ForgetResponse(removed=store.forget(user_id, pz))

    # -- operations ----------------------------------------------------------------------

    @app.post("/admin/reload", response_model=ReloadResponse, dependencies=admin, tags=["admin"])
    def reload(body: Annotated[ReloadRequest | None, Body()] = None) -> ReloadResponse:
        """Load model folders (the configured ones, or those given) and swap them in atomically:
        searches keep being answered by the old models until the new ones are ready."""
        body = body or ReloadRequest()
        try:
            loaded = runtime.reload(reranker=body.reranker, personal=body.personal)
        except (ShopsearchError, ValueError, OSError) as exc:
            metrics.reloads.labels("failed").inc()
            raise ShopsearchError(
                f"reload failed, still serving the old models: {_one_line(exc)}"
            ) from None
        metrics.reloads.labels("ok").inc()
        return ReloadResponse(generation=loaded.generation, models=loaded.models)

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process is alive (says nothing of the index)."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["operations"],
        responses={503: {"model": Readiness, "description": "Still loading, or failed to."}},
    )
    def readyz(response: Response) -> Readiness:
        """Ready when the index and models are loaded."""
        loaded = runtime.current
        if loaded is None:
            response.status_code = 503
            return Readiness(ready=False, detail=runtime.error or "loading")
        return Readiness(
            ready=True,
            generation=loaded.generation,
            index=loaded.index_info(),
            models=loaded.models,
        )

    @app.get("/metrics", dependencies=keyed, tags=["operations"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests, errors, latency per endpoint and per search stage."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    # -- the search page -----------------------------------------------------------------

    static = resources.files("shopsearch.service") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/app.js", include_in_schema=False)
    def page_script() -> Response:
        return Response(
            (static / "app.js").read_text(encoding="utf-8"), media_type="text/javascript"
        )

    return app


def create_app_from_env() -> FastAPI:
    """The app for a uvicorn worker: settings from ``SHOPSEARCH_SERVE_SETTINGS`` (see
    :class:`ServiceSettings.from_env`), logs on stderr (:func:`configure_logging`)."""
    configure_logging(os.environ.get(LOG_LEVEL_ENV, "INFO"))
    return create_app(ServiceSettings.from_env())


def configure_logging(level: str = "INFO") -> None:
    """Request logs on stderr as they are (one JSON object per line), the service's other logs
    with a prefix. Idempotent; each worker process calls it (handlers are per process)."""
    access = logging.getLogger("shopsearch.service.access")
    if not any(getattr(h, "_shopsearch", False) for h in access.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._shopsearch = True  # type: ignore[attr-defined]
        access.addHandler(handler)
        access.propagate = False
        other = logging.StreamHandler(sys.stderr)
        other.setFormatter(logging.Formatter("%(levelname)s: %(name)s: %(message)s"))
        log.addHandler(other)
    log.setLevel(level)


def _field_error(error: dict[str, Any]) -> str:
    """``field: what is wrong`` (just the message for a check on the whole request)."""
    field = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
    return f"{field}: {error.get('msg')}" if field else str(error.get("msg"))


def _jsonable(value: Any) -> Any:
    """Payload values as JSON takes them (numpy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
