"""What the routers depend on: the key checks, and the app's runtime, metrics and settings.

Keys are ``SecretStr`` settings compared in constant time (``hmac.compare_digest``). With an
API key set, every endpoint but the health checks, the page and the docs needs ``X-API-Key``;
forgetting a shopper and reloading models need ``X-Admin-Key`` too (refused when no admin key
is set).
"""

# no `from __future__ import annotations`: FastAPI reads these annotations at run time
import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from shopsearch.service.metrics import Metrics
from shopsearch.service.models import Problem, ValidationProblem
from shopsearch.service.runtime import Runtime
from shopsearch.service.settings import ServiceSettings

API_KEY_HEADER = "X-API-Key"
ADMIN_KEY_HEADER = "X-Admin-Key"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="api_key",
    description="Needed by every endpoint but the health checks when the service has a key "
    "(SHOPSEARCH_API_KEY).",
)
admin_key_header = APIKeyHeader(
    name=ADMIN_KEY_HEADER,
    auto_error=False,
    scheme_name="admin_key",
    description="Needed, with the API key, to forget a shopper and to reload models "
    "(SHOPSEARCH_ADMIN_KEY; without it those endpoints are refused).",
)


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


Settings = Annotated[ServiceSettings, Depends(get_settings)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def same(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a header with a key."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def has_api_key(settings: ServiceSettings, given: str | None) -> bool:
    """True when the caller may see data: the right key, or a service without one."""
    expected = settings.secret("api_key")
    return expected is None or same(given, expected)


def require_key(settings: Settings, key: Annotated[str | None, Depends(api_key_header)]) -> None:
    if not has_api_key(settings, key):
        raise HTTPException(
            401,
            f"missing or wrong {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


def require_admin(
    settings: Settings, key: Annotated[str | None, Depends(admin_key_header)]
) -> None:
    expected = settings.secret("admin_key")
    if expected is None:
        raise HTTPException(
            403, "admin endpoints are off: start the service with SHOPSEARCH_ADMIN_KEY set"
        )
    if not same(key, expected):
        raise HTTPException(
            403,
            f"missing or wrong {ADMIN_KEY_HEADER} header",
            headers={"WWW-Authenticate": ADMIN_KEY_HEADER},
        )


def caller_has_key(settings: Settings, key: Annotated[str | None, Depends(api_key_header)]) -> bool:
    """For open endpoints that say more to a caller with the key (``/readyz``)."""
    return has_api_key(settings, key)


#: Dependencies of an endpoint that needs the API key, and of an admin endpoint.
KEYED = [Depends(require_key)]
ADMIN = [Depends(require_key), Depends(require_admin)]


def problem(description: str) -> dict:
    return {"model": Problem, "description": description}


#: The error answers every keyed endpoint can give (OpenAPI ``responses``).
KEYED_RESPONSES: dict[int | str, dict] = {
    401: problem(f"Missing or wrong {API_KEY_HEADER} (when the service has an API key)."),
}
ADMIN_RESPONSES: dict[int | str, dict] = {
    **KEYED_RESPONSES,
    403: problem(f"Missing or wrong {ADMIN_KEY_HEADER}, or no admin key set on the service."),
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
#: A condition on the server's side: retry.
UNAVAILABLE_RESPONSES: dict[int | str, dict] = {
    503: {
        **problem(
            "Not ready yet (loading, or recovering by itself), or the index or profile store "
            "is busy: retry after Retry-After seconds."
        ),
        "headers": RETRY_AFTER,
    },
}
#: An endpoint of the shoppers' profiles on a service started without them.
NO_PROFILES_RESPONSES: dict[int | str, dict] = {
    409: problem("The service keeps no profiles (started without --profiles)."),
}
#: A bad field (422), or a request body too large (413) or not JSON (415).
INVALID_RESPONSES: dict[int | str, dict] = {
    422: {
        "model": ValidationProblem,
        "description": "A field is not valid: detail names each one, message on one line.",
    },
}
BODY_RESPONSES: dict[int | str, dict] = {
    413: problem("The request body is larger than the service takes (max_body_bytes)."),
    415: problem("The body is not JSON (send a JSON object, Content-Type: application/json)."),
    **INVALID_RESPONSES,
}


def lists_dir(settings: ServiceSettings, what: str) -> Path:
    """Where the shop's edited lists (``rules.json``, ``synonyms.json``) live: beside an
    embedded index, or ``SHOPSEARCH_RULES_DIR``.

    Raises:
        HTTPException: 409 for a Qdrant server index without ``SHOPSEARCH_RULES_DIR``.
    """
    from core.managed import side_dir

    if settings.index is None and settings.rules_dir is None:
        raise HTTPException(
            409,
            f"an index on a Qdrant server keeps its {what} in a directory of yours: start the "
            "service with SHOPSEARCH_RULES_DIR (serve --rules-dir)",
        )
    return side_dir(settings.index, settings.rules_dir)


def no_lists_dir_responses(what: str) -> dict[int | str, dict]:
    """The OpenAPI answer of :func:`lists_dir`'s 409."""
    return {
        409: problem(
            f"The service has no place for {what}: a Qdrant server index without "
            "SHOPSEARCH_RULES_DIR."
        )
    }
