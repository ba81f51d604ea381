"""What a search service is started with: one ``SHOPSEARCH_*`` environment variable per setting.

:class:`ServiceSettings` is a ``pydantic_settings.BaseSettings``: every field is read from the
variable of its name (``index`` from ``SHOPSEARCH_INDEX``, ``api_key`` from
``SHOPSEARCH_API_KEY``, ...). ``shopsearch serve`` sets those variables from its options, and
each uvicorn worker reads them back with :meth:`ServiceSettings.from_env`: the parent and its
workers read one set of variables, the same way. Keys are ``SecretStr`` (never in a ``repr``,
a log line or a process list) and are given by the environment only. docs/configuration.md has
the table.

An API or admin key that is set but unusable (blank, spaces, characters an HTTP header cannot
carry) is refused: a security setting never falls back to "no key". (A blank
``SHOPSEARCH_QDRANT_API_KEY``, the key the service sends to a Qdrant server, is "none": it
guards nothing here; so is a blank ``SHOPSEARCH_PSEUDONYM_KEY``: the profile directory's key
file, as everywhere else.)

``threads`` and ``pseudonym_key`` are read here and passed to the library as parameters
(``SearchPipeline.open(threads=, pseudonym_key=)``, ``open_profiles(key=)``): the library reads
no environment variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ShopsearchError

ENV_PREFIX = "SHOPSEARCH_"
API_KEY_ENV = "SHOPSEARCH_API_KEY"
ADMIN_KEY_ENV = "SHOPSEARCH_ADMIN_KEY"
QDRANT_API_KEY_ENV = "SHOPSEARCH_QDRANT_API_KEY"
#: Largest request body accepted (bytes); a larger one is a 413.
DEFAULT_MAX_BODY_BYTES = 1_000_000
SECRETS = ("api_key", "admin_key", "qdrant_api_key", "pseudonym_key")
#: The keys that guard the service's own endpoints.
GUARDS = ("api_key", "admin_key")
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x21, 0x7F))


def env_name(field: str) -> str:
    """The environment variable of a setting: ``rerank_depth`` -> ``SHOPSEARCH_RERANK_DEPTH``."""
    return ENV_PREFIX + field.upper()


class ServiceSettings(BaseSettings):
    """Everything a service process needs to open its pipeline.

    Attributes:
        index: Embedded index directory (or ``qdrant_url``).
        qdrant_url: A Qdrant server, instead of ``index``.
        qdrant_api_key: The Qdrant server's API key.
        collection: Collection (alias) name on a server.
        reranker: Cross-encoder folder; None: relevance is the first stage's.
        ranker: A learned final stage folder (``shopsearch train ranker``): its score is the
            relevance, in place of the blend; None: the blend.
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
            None: ``rerank.pipeline.DEFAULT_RERANK_DEPTH`` (50).
        log_level: Level of the service's logs (one JSON line per request at INFO).
        threads: Intra-op CPU threads of the query tower and the reranker; None: the physical
            cores (``serve --workers N`` sets cores/N).
        pseudonym_key: The profiles' pseudonym key (hex), when it is not kept in the profile
            directory's key file; None (or blank): the key file.
        rules_dir: Where the shop's merchandising rules (``rules.json``) and synonyms
            (``synonyms.json``) are kept; None: beside an embedded index (a server index then
            has none). Edits are picked up at the next search.
        search_log: A folder for the search log: every served search and posted event, one row
            each (:mod:`personalization.searchlog`), what ``train personal``, ``vocabulary``
            and the analytics read; None: nothing is recorded. Several replicas may share it.
        interleave_share: Share of shoppers (0..1) whose searches are served as a team-draft
            interleaving of this ranker (A) and the challenger (B); 0: no experiment.
        interleave_name: The experiment's name (in the search log; needed with a share).
        interleave_personal: B's personalization model folder, or ``none`` for B without
            personalization; None: A's.
        interleave_reranker: B's cross-encoder folder, or ``none`` for B without one; None: A's.
        interleave_ranker: B's learned final stage folder (``shopsearch train ranker``), or
            ``none`` for B with the blend; None: A's.
        interleave_anonymous: Interleave anonymous searches too (drawn by session, or query
            without one, since they have no shopper); False: never.
        suggest_min_shoppers: Distinct shoppers a logged query needs before ``/suggest``
            offers it (k-anonymity, ``analytics.suggest``).
        suggest_refresh_s: Seconds between rebuilds of the suggestions from a grown search log
            (a forgotten shopper or a reload rebuilds at once); 0: only those.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False
    )

    index: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    collection: str = "products"
    reranker: str | None = None
    ranker: str | None = None
    personal: str | None = None
    profiles: str | None = None
    device: str | None = None
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    quantize: Literal["int8"] | None = None
    api_key: SecretStr | None = None
    admin_key: SecretStr | None = None
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    background_load: bool = True
    load_wait_s: float = Field(60.0, ge=0)
    state_dir: str | None = None
    rerank_depth: int | None = Field(None, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    threads: int | None = Field(None, ge=1)
    pseudonym_key: SecretStr | None = None
    rules_dir: str | None = None
    search_log: str | None = None
    interleave_share: float = Field(0.0, ge=0.0, le=1.0)
    interleave_name: str | None = Field(None, max_length=100)
    interleave_personal: str | None = None
    interleave_reranker: str | None = None
    interleave_ranker: str | None = None
    interleave_anonymous: bool = False
    suggest_min_shoppers: int = Field(5, ge=1)
    suggest_refresh_s: float = Field(300.0, ge=0)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ShopsearchError(_one_line(exc)) from None

    @field_validator(
        "index", "qdrant_url", "reranker", "personal", "profiles", "device", "state_dir",
        "quantize", "rules_dir", "search_log", "ranker", mode="before",
    )  # fmt: skip
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # a blank folder or URL is "not given" (these are not security settings)
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("rerank_depth", "threads", mode="before")
    @classmethod
    def _blank_number(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("qdrant_api_key", "pseudonym_key", mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: Any) -> Any:
        # the key the service sends to Qdrant: blank is "none" (a server with a key refuses
        # us, nothing opens); docker/compose.yaml passes it blank when there is none. The
        # pseudonym key: blank is the profile directory's key file (as for the command line)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*GUARDS, mode="after")
    @classmethod
    def _usable_key(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        # the keys that guard the service: set but unusable never means "no key"
        if value is None:
            return None
        key = value.get_secret_value()
        name = env_name(info.field_name)
        if not key.strip():
            raise ValueError(
                f"{name} is set but blank: give a key, or unset the variable to serve without one"
            )
        if not set(key) <= _PRINTABLE_ASCII:
            raise ValueError(
                f"{name} holds spaces or characters an HTTP header cannot carry: use printable "
                "ASCII without spaces (e.g. `openssl rand -hex 32`)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if (self.index is None) == (self.qdrant_url is None):
            raise ValueError(
                "give the index as a directory (--index) or a Qdrant server (--qdrant-url), "
                "one of them (is SHOPSEARCH_QDRANT_URL set in the environment?)"
            )
        if self.personal is not None and self.profiles is None:
            raise ValueError(
                "a personalization model (--personal) needs a profile directory (--profiles)"
            )
        if self.quantize is not None and self.backend == "torch":
            raise ValueError("quantize int8 runs on the onnx or openvino backend, not torch")
        return self

    @field_validator(
        "interleave_name",
        "interleave_personal",
        "interleave_reranker",
        "interleave_ranker",
        mode="before",
    )
    @classmethod
    def _blank_interleave_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _interleave(self) -> ServiceSettings:
        if self.interleave_share == 0.0:
            return self
        if self.interleave_name is None:
            raise ValueError(
                "SHOPSEARCH_INTERLEAVE_NAME (interleave_name): an interleaving experiment needs "
                "a name (--interleave-name), the one 'shopsearch interleave report' shows"
            )
        if (
            self.interleave_personal is None
            and self.interleave_reranker is None
            and self.interleave_ranker is None
        ):
            raise ValueError(
                "SHOPSEARCH_INTERLEAVE_SHARE (interleave_share): give the challenger ranker B "
                "(--interleave-personal, --interleave-reranker or --interleave-ranker, a folder "
                "or 'none'), or a share of 0"
            )
        personal = self.interleave_personal
        if personal is not None and personal.lower() != "none" and self.profiles is None:
            raise ValueError(
                "SHOPSEARCH_INTERLEAVE_PERSONAL (interleave_personal): a personalization model "
                "needs a profile directory (--profiles)"
            )
        return self

    # -- keys ------------------------------------------------------------------------------

    def secret(self, name: str) -> str | None:
        """A key's value (``api_key``, ``admin_key``, ``qdrant_api_key``), or None."""
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None

    # -- the environment -------------------------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """The ``SHOPSEARCH_*`` variables that make :meth:`from_env` return these settings
        (only the settings that differ from their defaults; keys included)."""
        env: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or value == info.default:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[env_name(name)] = str(value)
        return env

    @classmethod
    def variables(cls) -> list[str]:
        """Every variable a service reads its settings from."""
        return [env_name(name) for name in cls.model_fields]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """The settings in the environment (``os.environ``, or ``environ`` when given).

        Raises:
            ShopsearchError: A variable is not a valid value (one line naming it).
        """
        if environ is None:
            return cls()
        given = {
            name: environ[var] for name in cls.model_fields if (var := env_name(name)) in environ
        }
        # every field given (None where unset): the process's own environment plays no part
        return cls(**{name: None for name in cls.model_fields if name not in given}, **given)

    @model_validator(mode="before")
    @classmethod
    def _unset_to_default(cls, data: Any) -> Any:
        # from_env passes None for an unset variable: that is the default, not "null"
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (
                    v is None and k in cls.model_fields and cls.model_fields[k].default is not None
                )
            }
        return data


def _one_line(exc: ValidationError) -> str:
    """The first problem, naming the variable: ``SHOPSEARCH_RERANK_DEPTH (rerank_depth): ...``."""
    error = exc.errors()[0]
    message = str(error.get("msg", exc)).removeprefix("Value error, ")
    loc = [str(p) for p in error.get("loc", ()) if p]
    if not loc:
        return message
    if message.startswith(ENV_PREFIX):
        return message
    return f"{env_name(loc[0])} ({loc[0]}): {message}"
