"""The HTTP search service: a FastAPI app around one :class:`rerank.SearchPipeline`.

    create_app(settings, pipeline_factory=None) -> FastAPI
    create_app_from_env() -> FastAPI          # what each uvicorn worker imports

The app is assembled here (middleware, exception handlers, one router per feature); the
endpoints live in :mod:`shopsearch.service.routers`: ``GET|POST /search``, ``POST /events``,
``DELETE /users/{user_id}``, ``POST /admin/reload``, ``PATCH /admin/products``,
``GET|POST /admin/rules``, ``DELETE /admin/rules/{id}``, ``GET /admin/rules/test``,
``GET /admin/analytics``, ``GET /suggest``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``, the OpenAPI docs (``/docs``, ``/openapi.json``), a search page at ``/`` and
its analytics view at ``/analytics``.

Security (:mod:`shopsearch.service.dependencies`): with an API key set, every endpoint but the
health checks, the page and the docs (static, no data) needs ``X-API-Key``; forgetting a
shopper and reloading models need ``X-Admin-Key`` (refused when no admin key is set). Raw
shopper ids never reach a log line: logs show the route template and the shopper's pseudonym.
Errors: :mod:`shopsearch.service.errors`.
"""

from __future__ import annotations

import logging
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shopsearch.service import errors
from shopsearch.service.metrics import Metrics
from shopsearch.service.middleware import ServiceMiddleware
from shopsearch.service.routers import (
    admin,
    analytics,
    events,
    ops,
    page,
    products,
    rules,
    search,
    suggest,
    synonyms,
    users,
)
from shopsearch.service.runtime import PipelineFactory, Runtime
from shopsearch.service.settings import ServiceSettings
from shopsearch.service.suggestions import SuggestionService

log = logging.getLogger("shopsearch.service")


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
        ``settings.background_load`` is False), and a failed load is retried by itself.
    """
    runtime = Runtime(settings, pipeline_factory)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.search_log = search.open_search_log(settings, metrics)
        runtime.start(background=settings.background_load)
        app.state.suggestions.start()  # built in the background once the index is loaded
        yield
        app.state.suggestions.close()
        runtime.close()
        if app.state.search_log is not None:  # flush and rotate: nothing queued is lost
            app.state.search_log.close()

    app = FastAPI(
        title="shopsearch",
        summary="Personalized product search: retrieval, reranking, the shopper's behaviour.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.suggestions = SuggestionService(runtime, settings)  # GET /suggest's
    app.state.search_log = None  # the writer: opened at start-up with settings.search_log
    app.state.metrics = metrics
    app.state.settings = settings
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    errors.install(app, settings)
    for feature in (
        search, suggest, events, users, admin, synonyms, rules, products, analytics, ops, page,
    ):  # fmt: skip
        app.include_router(feature.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document with the security requirements as they are: the admin endpoints need
    both keys (FastAPI lists each key as an alternative), and an endpoint marked
    ``x-key-optional`` (``/readyz``) answers without one too."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = FastAPI.openapi(app)
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            needs = operation.get("security")
            if not needs:
                continue
            merged = {name: scopes for need in needs for name, scopes in need.items()}
            optional = operation.pop("x-key-optional", False)
            operation["security"] = [{}, merged] if optional else [merged]
    app.openapi_schema = doc
    return doc


def create_app_from_env() -> FastAPI:
    """The app for a uvicorn worker: settings from the ``SHOPSEARCH_*`` variables (see
    :class:`ServiceSettings`), logs on stderr (:func:`configure_logging`)."""
    settings = ServiceSettings.from_env()
    configure_logging(settings.log_level)
    return create_app(settings)


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
