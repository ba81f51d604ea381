"""``GET /healthz``, ``GET /readyz``, ``GET /metrics``: what probes and scrapers read.

The health checks are open (a probe has no key) and say only what a probe needs: alive, ready
or not. The details (generation, index build, model folders, why a load failed) are for a
caller with the API key, or for everyone when the service has none.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from shopsearch.service.dependencies import (
    KEYED,
    KEYED_RESPONSES,
    MetricsDep,
    RuntimeDep,
    Settings,
    caller_has_key,
)
from shopsearch.service.errors import public_message
from shopsearch.service.models import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive (says nothing of the index)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={503: {"model": Readiness, "description": "Still loading, or failed to (retried)."}},
    openapi_extra={"x-key-optional": True},
)
def readyz(
    response: Response,
    runtime: RuntimeDep,
    settings: Settings,
    keyed: Annotated[bool, Depends(caller_has_key)],
) -> Readiness:
    """Ready when the index and models are loaded. Without the API key: ``ready`` and, when
    not, ``detail`` (``loading`` or ``failed``); with it, the generation, the index build,
    the models and why a load failed."""
    loaded = runtime.current
    if loaded is None:
        response.status_code = 503
        state = runtime.state
        if keyed and runtime.error:
            return Readiness(
                ready=False, detail=f"{state}: {public_message(runtime.error, settings)}"
            )
        return Readiness(ready=False, detail=state)
    if not keyed:
        return Readiness(ready=True)
    return Readiness(
        ready=True,
        generation=loaded.generation,
        index=loaded.index_info(),
        models=loaded.models,
    )


@router.get("/metrics", dependencies=KEYED, response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text format."},
    **KEYED_RESPONSES,
})  # fmt: skip
def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format: requests, errors, latency per endpoint and per search stage."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
