"""``POST /admin/reload``: swap in model folders without a restart (admin)."""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from typing import Annotated

from fastapi import APIRouter, Body

from core.errors import ShopsearchError, first_line
from shopsearch.service.dependencies import (
    ADMIN,
    ADMIN_RESPONSES,
    BODY_RESPONSES,
    MetricsDep,
    RuntimeDep,
    problem,
)
from shopsearch.service.models import ReloadRequest, ReloadResponse
from shopsearch.service.runtime import MESSAGE_CHARS

router = APIRouter(tags=["admin"], dependencies=ADMIN)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses={
        400: problem("A folder is not a model of its kind: still serving the old models."),
        **ADMIN_RESPONSES,
        **BODY_RESPONSES,
    },
)
def reload(
    runtime: RuntimeDep,
    metrics: MetricsDep,
    body: Annotated[ReloadRequest | None, Body()] = None,
) -> ReloadResponse:
    """Load model folders (the configured ones, or those given) and swap them in atomically:
    searches keep being answered by the old models until the new ones are ready, and every
    request in flight finishes on the models it started with."""
    body = body or ReloadRequest()
    try:
        loaded = runtime.reload(reranker=body.reranker, personal=body.personal)
    except ShopsearchError as exc:
        metrics.reloads.labels("failed").inc()
        raise ShopsearchError(
            f"reload failed, still serving the old models: {first_line(exc, MESSAGE_CHARS)}"
        ) from None
    except Exception:
        metrics.reloads.labels("failed").inc()
        raise
    metrics.reloads.labels("ok").inc()
    return ReloadResponse(generation=loaded.generation, models=loaded.models)
