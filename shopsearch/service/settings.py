"""What a search service is started with, and how it travels to uvicorn's worker processes.

Several uvicorn workers import the app by name (``create_app_from_env``), so the settings go
through the environment: :data:`SETTINGS_ENV` holds them as JSON, without secrets; the keys
stay in their own variables (:data:`API_KEY_ENV`, :data:`ADMIN_KEY_ENV`,
:data:`QDRANT_API_KEY_ENV`), which is also the only way to give them, so that they never show
in a process list.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import ShopsearchError

SETTINGS_ENV = "SHOPSEARCH_SERVE_SETTINGS"
API_KEY_ENV = "SHOPSEARCH_API_KEY"
ADMIN_KEY_ENV = "SHOPSEARCH_ADMIN_KEY"
QDRANT_API_KEY_ENV = "SHOPSEARCH_QDRANT_API_KEY"
#: Largest request body accepted (bytes); a larger one is a 413.
DEFAULT_MAX_BODY_BYTES = 1_000_000
_SECRETS = ("api_key", "admin_key", "qdrant_api_key")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a service process needs to open its pipeline.

    Attributes:
        index: Embedded index directory (or ``qdrant_url``).
        qdrant_url: A Qdrant server, instead of ``index``.
        qdrant_api_key: The Qdrant server's API key.
        collection: Collection (alias) name on a server.
        reranker: Cross-encoder folder; None: relevance is the first stage's.
        personal: Personalization model folder (needs ``profiles``).
        profiles: Profile directory (SQLite store and pseudonym key). Without ``personal``
            the service still stores events (``POST /events``) but does not personalize.
        device: Torch device; None picks CUDA when present.
        backend: How the query tower and reranker run: torch, onnx, openvino.
        quantize: None or ``int8`` (the quantized onnx/openvino copies).
        api_key: When set, every endpoint but the health checks needs ``X-API-Key``.
        admin_key: Needed (``X-Admin-Key``) to forget a shopper and to reload models; when
            unset those endpoints are refused.
        max_body_bytes: Largest request body (bytes).
        background_load: Open the pipeline in a thread after start-up (``/healthz`` answers at
            once, ``/readyz`` once loaded); False opens it before the first request.
        load_wait_s: How long a request that arrives while the pipeline is loading waits for
            it before a 503 (``/readyz`` never waits).
        state_dir: A directory the workers of one service share (model reloads are announced
            there, so that every worker follows); None for a single process.
        rerank_depth: Candidates the reranker reads per search (at least ``offset + k`` are);
            None: ``rerank.pipeline.DEFAULT_RERANK_DEPTH`` (50). On 2 cores the distilled
            reranker at 20 keeps search under 50 ms p99 (README, "Fast on a CPU").
    """

    index: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)
    collection: str = "products"
    reranker: str | None = None
    personal: str | None = None
    profiles: str | None = None
    device: str | None = None
    backend: str = "torch"
    quantize: str | None = None
    api_key: str | None = field(default=None, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    background_load: bool = True
    load_wait_s: float = 60.0
    state_dir: str | None = None
    rerank_depth: int | None = None

    def __post_init__(self) -> None:
        if (self.index is None) == (self.qdrant_url is None):
            raise ShopsearchError(
                "give the index as a directory (--index) or a Qdrant server (--qdrant-url), "
                "one of them (is SHOPSEARCH_QDRANT_URL set in the environment?)"
            )
        if self.personal is not None and self.profiles is None:
            raise ShopsearchError(
                "a personalization model (--personal) needs a profile directory (--profiles)"
            )
        if self.rerank_depth is not None and self.rerank_depth < 1:
            raise ShopsearchError(f"rerank_depth must be at least 1, got {self.rerank_depth}")
        if self.max_body_bytes < 1024:
            raise ShopsearchError(
                f"max_body_bytes must be at least 1024, got {self.max_body_bytes}"
            )
        for name in _SECRETS:
            value = getattr(self, name)
            if value is not None and not value.strip():
                object.__setattr__(self, name, None)

    def public_json(self) -> str:
        """The settings as JSON, secrets left out (they travel in their own variables)."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SECRETS}
        return json.dumps(data, sort_keys=True)

    def to_env(self) -> dict[str, str]:
        """Environment variables that make :meth:`from_env` return these settings."""
        env = {SETTINGS_ENV: self.public_json()}
        for name, var in zip(
            _SECRETS, (API_KEY_ENV, ADMIN_KEY_ENV, QDRANT_API_KEY_ENV), strict=True
        ):
            if getattr(self, name):
                env[var] = getattr(self, name)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Settings from :data:`SETTINGS_ENV` and the key variables.

        Raises:
            ShopsearchError: The variable is missing or not settings.
        """
        environ = os.environ if environ is None else environ
        text = environ.get(SETTINGS_ENV)
        if not text:
            raise ShopsearchError(
                f"{SETTINGS_ENV} is not set: start the service with `shopsearch serve`"
            )
        try:
            data = json.loads(text)
            known = {f.name for f in dataclasses.fields(cls)} - set(_SECRETS)
            data = {k: v for k, v in data.items() if k in known}
        except (ValueError, AttributeError):
            raise ShopsearchError(f"{SETTINGS_ENV} is not a JSON object of settings") from None
        return cls(
            **data,
            api_key=environ.get(API_KEY_ENV) or None,
            admin_key=environ.get(ADMIN_KEY_ENV) or None,
            qdrant_api_key=environ.get(QDRANT_API_KEY_ENV) or None,
        )
