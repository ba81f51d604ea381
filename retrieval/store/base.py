"""Shared types of the store: locations, records, hits, queries and the backend interfaces.

Nothing here imports a Qdrant package; the request builder (``request.py``) and the two
backends (``edge.py``, ``server.py``) do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from catalog.fields import FieldSchema, category_keys, keyword_key
from core.errors import ShopsearchError, first_line
from retrieval.filters import Filters
from retrieval.hits import RankedHit

DENSE = "dense"
SPARSE = "bm25"
#: Reciprocal-rank-fusion constant for hybrid queries (the usual 60; identical on both backends).
RRF_K = 60
#: Payload keys the store itself maintains (prefixed ``_``).
PAYLOAD_PRODUCT_ID = "product_id"
PAYLOAD_HASH = "_hash"
PAYLOAD_CATEGORY_LEVELS = "_category_levels"
#: Normalized mirrors of the keyword fields that filters match (see :func:`keyword_key`).
PAYLOAD_BRAND_KEY = "_brand_key"
PAYLOAD_CATEGORY_KEYS = "_category_keys"
#: In-stock flag as 0/1: qdrant-edge-py 0.9.0 never matches a boolean ``MatchValue`` (a Python
#: ``True`` reaches the engine as the integer 1), so both backends filter on this integer mirror.
PAYLOAD_IN_STOCK = "_in_stock"
#: Extra hits fetched past k (and past each prefetch's depth) so ties at a cut are broken by
#: product_id, not by engine order (BM25 and RRF scores tie often).
TIE_SLACK = 8
#: Scores are compared at this many decimals when ordering ties (float32 noise between engines).
SCORE_DECIMALS = 6
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
#: HNSW beam width at query time (at least the prefetch depth). 128 cost fine-tuned dense 1.1
#: points of Recall@100 on Home Depot against exact search (0.795 vs 0.806); 400 keeps 0.803
#: at about the same latency (scripts/ef_sweep.py).
HNSW_EF_SEARCH = 400
#: With int8-quantized vectors, this many times the wanted hits are scored on the int8 copy and
#: rescored with the float vectors (ignored without quantization), so the int8 copy does not
#: change which products come back (both backends alike).
QUANTIZED_OVERSAMPLING = 3.0
#: Products written into one segment before it is indexed and closed during a build: the HNSW
#: build and the written pages of a segment are what indexing holds in memory, so memory is
#: bounded by this, not by the catalog (embedded backend; a server manages its own segments).
SEGMENT_POINTS = 50_000
#: Below this many KB of vectors (in a segment, or matching a filter) Qdrant scans exactly.
HNSW_FULL_SCAN_KB = 10_000
#: Builds kept besides the current one, so a reader that opened the previous one keeps working.
KEEP_PREVIOUS = 1
#: Payload indexes every version has: (key, kind) with kind keyword/float/integer.
PAYLOAD_INDEXES: tuple[tuple[str, str], ...] = (
    ("brand", "keyword"),
    (PAYLOAD_BRAND_KEY, "keyword"),
    (PAYLOAD_CATEGORY_LEVELS, "keyword"),
    (PAYLOAD_CATEGORY_KEYS, "keyword"),
    ("price", "float"),
    (PAYLOAD_IN_STOCK, "integer"),
    (PAYLOAD_PRODUCT_ID, "keyword"),
)


def payload_indexes(manifest: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Payload indexes of a version: :data:`PAYLOAD_INDEXES` and its declared fields'."""
    return PAYLOAD_INDEXES + FieldSchema.from_manifest(manifest).payload_indexes()


#: Version of what the store writes per point; an index of an older one is rebuilt in full
#: by upsert/sync (its points lack the normalized filter keys).
STORE_FORMAT = 2
_POINT_NAMESPACE = uuid.UUID("6f1c1e0a-58a7-4c8e-9a5e-8f3e1b1f2a10")
_BUILD_ID = re.compile(r"^\d{8}T\d{12}-[0-9a-f]{6}$")

Mode = Literal["dense", "bm25", "hybrid"]


def int8_vectors(manifest: dict[str, Any]) -> bool:
    """Whether a build keeps an int8 copy of its vectors (in RAM; fp32 on disk, memory-mapped)."""
    return (manifest.get("vectors") or {}).get("quantization") == "int8"


def point_id(product_id: str) -> str:
    """Stable Qdrant point id for a product id (so re-indexing the same product overwrites it)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, product_id))


def new_build_id() -> str:
    """Unique id for a build that sorts in creation order (microsecond clock + random tail)."""
    global _LAST_BUILD_US
    now_us = max(time.time_ns() // 1000, _LAST_BUILD_US + 1)
    _LAST_BUILD_US = now_us
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_us / 1e6))
    return f"{stamp}{now_us % 1_000_000:06d}-{uuid.uuid4().hex[:6]}"


_LAST_BUILD_US = 0


def is_build_id(text: str) -> bool:
    """True for a string :func:`new_build_id` could have made."""
    return bool(_BUILD_ID.match(text))


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def redact_url(url: str | None) -> str | None:
    """The URL with any password (``user:pass@``) replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and "@" not in parts.netloc:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    netloc = f"{user}:***@{host}" if user else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class IndexLocation:
    """Where an index lives: exactly one of ``path`` (embedded), ``url`` or ``client`` (server).

    ``repr`` and :meth:`describe` never show the API key or a password inside ``url``.

    Attributes:
        path: Directory of an embedded (qdrant-edge) index.
        url: Qdrant server URL, e.g. ``http://localhost:6333``.
        api_key: API key for the server.
        client: A ready ``qdrant_client.QdrantClient`` (e.g. ``QdrantClient(":memory:")``).
        collection: Collection (alias) name on the server.
    """

    path: Path | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    client: Any = field(default=None, compare=False, repr=False)
    collection: str = "products"

    def __post_init__(self) -> None:
        given = [
            n for n, v in (("path", self.path), ("url", self.url), ("client", self.client)) if v
        ]
        if len(given) > 1:
            raise ShopsearchError(
                "Only one of --index (a directory), --qdrant-url or a client should be specified, "
                f"not {' and '.join(given)}"
            )
        if not given:
            raise ShopsearchError(
                "no index given: pass --index DIR for the embedded store or --qdrant-url URL "
                "(or SHOPSEARCH_QDRANT_URL) for a Qdrant server"
            )
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path).expanduser())

    def __repr__(self) -> str:
        return (
            f"IndexLocation(path={self.path!r}, url={redact_url(self.url)!r}, "
            f"api_key={'***' if self.api_key else None}, collection={self.collection!r})"
        )

    __str__ = __repr__

    def describe(self) -> str:
        """Human-readable location for messages (secrets redacted)."""
        if self.path is not None:
            return str(self.path)
        if self.url:
            return f"{redact_url(self.url)} (collection {self.collection})"
        return f"in-process Qdrant client (collection {self.collection})"

    def secrets(self) -> list[str]:
        """The secret strings of this location (API key, URL password), for redaction."""
        out = []
        if self.api_key:
            out.append(self.api_key)
        if self.url:
            with contextlib.suppress(ValueError):
                password = urlsplit(self.url).password
                if password:
                    out.append(password)
        return out

    def redact(self, text: str) -> str:
        """``text`` with every secret of this location replaced by ``***``."""
        if self.url:
            text = text.replace(self.url, redact_url(self.url) or "")
        for secret in sorted(self.secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


# --------------------------------------------------------------------------------------------
# Engine calls
# --------------------------------------------------------------------------------------------


def is_engine_panic(exc: BaseException) -> bool:
    """True for a Rust panic surfaced by pyo3 (``pyo3_runtime.PanicException``)."""
    return type(exc).__name__ == "PanicException"


@contextlib.contextmanager
def engine_errors(what: str, where: str, damaged: bool = False) -> Iterator[None]:
    """Turns engine failures inside the block into one-line errors.

    A panic (a ``BaseException`` in pyo3) never escapes: it becomes a ``ShopsearchError`` when
    ``damaged`` (reading files that may be broken: re-index) and a ``RuntimeError`` otherwise
    (a bug: the chained traceback is kept). ``KeyboardInterrupt`` and the like pass through.

    Args:
        what: What was being done, e.g. ``"search"``.
        where: The index, for the message.
        damaged: True when a failure means the files on disk are broken.
    """
    try:
        yield
    except ShopsearchError:
        raise
    except BaseException as exc:
        if not (isinstance(exc, Exception) or is_engine_panic(exc)):
            raise
        if damaged:
            raise ShopsearchError(
                f"the index at {where} is damaged ({what} failed: {first_line(exc)}): "
                "re-index it with `shopsearch index CATALOG --mode full`"
            ) from exc
        if is_engine_panic(exc):
            raise RuntimeError(
                f"qdrant-edge panicked during {what} on {where}: {first_line(exc)}"
            ) from exc
        raise


# --------------------------------------------------------------------------------------------
# Records, hits, queries
# --------------------------------------------------------------------------------------------


def _finite_vector(name: str, vector: Any) -> np.ndarray:
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d vector, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return arr


def _check_sparse(name: str, sparse: tuple[Sequence[int], Sequence[float]]) -> None:
    indices, values = sparse
    if len(indices) != len(values):
        raise ValueError(f"{name}: {len(indices)} indices but {len(values)} values")
    if len(indices) and min(indices) < 0:
        raise ValueError(f"{name} has a negative index")
    if len(values) and not np.isfinite(np.asarray(values, dtype=np.float64)).all():
        raise ValueError(f"{name} has NaN or infinite values")


@dataclass(frozen=True)
class PointRecord:
    """One product as stored: dense vector, optional BM25 sparse vector, payload.

    Raises:
        ValueError: a NaN/infinite or empty vector (never handed to the engine).
    """

    product_id: str
    dense: np.ndarray
    sparse: tuple[list[int], list[float]] | None
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense", _finite_vector(f"product {self.product_id}", self.dense))
        if self.sparse is not None:
            _check_sparse(f"product {self.product_id} sparse vector", self.sparse)
        bad = _non_finite_key(self.payload)
        if bad is not None:
            raise ValueError(f"product {self.product_id}: payload field {bad} is NaN or infinite")


def _non_finite_key(value: Any, path: str = "") -> str | None:
    """The path of the first NaN/infinite float inside a payload (JSON cannot hold one)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "value")
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_key(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _non_finite_key(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def stored_hit(
    product_id: str, score: float, payload: dict[str, Any], vector: np.ndarray | None = None
) -> RankedHit:
    """A product as the store returns it: a search result, or a point fetched by id.

    Args:
        product_id: The product's id.
        score: The query's score (0.0 for a point fetched by id); also its ``retrieval`` part.
        payload: Stored fields, the store's own ``_`` keys included (the retriever drops them,
            :func:`public_payload`).
        vector: The dense vector, shape ``(dim,)`` float32, when asked for; else None.

    Returns:
        A :class:`~retrieval.hits.RankedHit` whose ``retrieval_rank`` is 0 until the retriever
        numbers the list it is in.
    """
    return RankedHit(product_id, score, score, 0, payload=payload, vector=vector)


@dataclass(frozen=True)
class QuerySpec:
    """One query to the store.

    Attributes:
        k: Hits to return.
        mode: ``dense``, ``bm25`` or ``hybrid`` (RRF of dense and bm25 prefetches).
        dense: Query vector, shape ``(dim,)`` (needed for dense and hybrid).
        sparse: Query sparse vector as (indices, values) (needed for bm25 and hybrid).
        filters: Conditions every hit meets.
        candidates: Prefetch depth per source for fused queries (None: max(k, 100)).
        extra_dense: More dense sources fused by RRF, as (vector, weight).
        with_vectors: Return each hit's dense vector (:attr:`RankedHit.vector`) in the same call.
        dense_weight: RRF weight of the dense source in hybrid mode.
        sparse_weight: RRF weight of the BM25 source in hybrid mode.
        exact: Every dense source is scanned exactly (no HNSW) over the fp32 vectors (an int8
            quantized copy, when the index keeps one, is not read): the reference that
            approximate search is measured against. BM25 sources are exact either way.

    Raises:
        ShopsearchError: k < 1 or an unknown mode.
        ValueError: a missing, NaN or infinite query vector.
    """

    k: int
    mode: Mode = "dense"
    dense: np.ndarray | None = None
    sparse: tuple[list[int], list[float]] | None = None
    filters: Filters = field(default_factory=Filters)
    candidates: int | None = None
    extra_dense: tuple[tuple[np.ndarray, float], ...] = ()
    with_vectors: bool = False
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    exact: bool = False

    def __post_init__(self) -> None:
        for name in ("dense_weight", "sparse_weight"):
            weight = getattr(self, name)
            if not (math.isfinite(weight) and weight >= 0):
                raise ShopsearchError(f"{name} must be finite and >= 0, got {weight}")
        if self.k < 1:
            raise ShopsearchError(f"k must be at least 1, got {self.k}")
        if self.mode not in ("dense", "bm25", "hybrid"):
            raise ShopsearchError(
                f"unknown retrieval mode '{self.mode}': use dense, bm25 or hybrid"
            )
        if self.mode in ("dense", "hybrid"):
            if self.dense is None:
                raise ValueError(f"mode {self.mode} needs a dense query vector")
            object.__setattr__(self, "dense", _finite_vector("query vector", self.dense))
        if self.mode in ("bm25", "hybrid"):
            if self.sparse is None:
                raise ValueError(f"mode {self.mode} needs a sparse query vector")
            _check_sparse("query sparse vector", self.sparse)
        extra = []
        for vec, weight in self.extra_dense:
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"extra dense weight must be finite and > 0, got {weight}")
            extra.append((_finite_vector("extra dense vector", vec), float(weight)))
        object.__setattr__(self, "extra_dense", tuple(extra))

    @property
    def depth(self) -> int:
        """Prefetch depth for fused queries."""
        return max(self.candidates or 0, self.k, 100)

    def sources(self) -> list[tuple[str, Any, float]]:
        """(vector name, vector, weight) for each source this query reads."""
        out: list[tuple[str, Any, float]] = []
        if self.mode in ("dense", "hybrid"):
            out.append((DENSE, self.dense, self.dense_weight))
        if self.mode in ("bm25", "hybrid"):
            out.append((SPARSE, self.sparse, self.sparse_weight))
        out.extend((DENSE, vec, weight) for vec, weight in self.extra_dense)
        return out


def payload_for(
    product_payload: dict[str, Any], content_hash: str, category_levels: list[str]
) -> dict[str, Any]:
    """Adds the store's own keys to a product's payload (hash and filter mirrors)."""
    payload = {k: v for k, v in product_payload.items() if v is not None}
    payload[PAYLOAD_HASH] = content_hash
    payload[PAYLOAD_CATEGORY_LEVELS] = category_levels
    category = product_payload.get("category")
    payload[PAYLOAD_CATEGORY_KEYS] = category_keys(category)
    brand = product_payload.get("brand")
    if brand:
        payload[PAYLOAD_BRAND_KEY] = keyword_key(brand)
    in_stock = product_payload.get("in_stock")
    if in_stock is not None:
        payload[PAYLOAD_IN_STOCK] = int(bool(in_stock))
    return payload


def public_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """A stored payload without the store's own keys."""
    return {k: v for k, v in (payload or {}).items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------------
# Interfaces
# --------------------------------------------------------------------------------------------


class Collection(ABC):
    """One version of an index: read by searches, written only while staged."""

    manifest: dict[str, Any]

    @property
    def schema(self) -> FieldSchema:
        """The fields this version records (the defaults for an index built before schemas)."""
        cached = getattr(self, "_schema", None)
        if cached is None or cached[0] is not self.manifest:
            cached = (self.manifest, FieldSchema.from_manifest(self.manifest))
            self._schema = cached
        return cached[1]

    @abstractmethod
    def count(self, filters: Filters | None = None) -> int:
        """Number of products stored (that meet ``filters``, when given)."""

    @abstractmethod
    def upsert(self, records: Sequence[PointRecord]) -> None:
        """Inserts or replaces products (point id derived from product_id)."""

    @abstractmethod
    def delete(self, product_ids: Sequence[str]) -> None:
        """Removes products."""

    @abstractmethod
    def scroll_payloads(self, keys: Sequence[str], batch: int = 4096) -> Iterator[dict[str, Any]]:
        """Yields the given payload keys of every stored product."""

    @abstractmethod
    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[RankedHit]]:
        """Runs several queries; one result list each, in order."""

    @abstractmethod
    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, RankedHit]:
        """The stored products among ``product_ids`` (score 0.0; vectors when asked)."""

    @abstractmethod
    def set_manifest(self, manifest: dict[str, Any]) -> None:
        """Stores the manifest with this version."""

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Sets payload keys of stored products, vectors untouched (live price and stock).

        Args:
            changes: (product_id, {key: value}) pairs; the keys given replace the stored ones,
                the others stay.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot update payloads")

    def flush_segment(self) -> None:  # noqa: B027 - optional hook
        """Indexes what was written so far as its own segment and releases its build memory."""

    @abstractmethod
    def set_vocabulary(self, vocabulary: dict[str, Any]) -> None:
        """Stores the spelling vocabulary with this version (before :meth:`set_manifest`)."""

    @abstractmethod
    def read_vocabulary(self) -> dict[str, Any] | None:
        """The stored spelling vocabulary, or None when this version has none.

        Raises:
            ShopsearchError: It is stored but unreadable (the index is damaged).
        """

    def vocabulary(self) -> dict[str, Any] | None:
        """The spelling vocabulary the manifest names, checked against its checksum.

        Returns:
            ``{"kind", "counts"}``; None for an index built without one (older shopsearch).

        Raises:
            ShopsearchError: Missing or not matching the manifest's checksum (damaged).
        """
        recorded = self.manifest.get("spelling")
        if not recorded:
            return None
        stored = self.read_vocabulary()
        where = self._describe()
        if stored is None:
            raise damaged_index(where, "its spelling vocabulary is missing")
        if vocabulary_sha(stored) != recorded.get("sha"):
            raise damaged_index(where, "its spelling vocabulary does not match its checksum")
        return stored

    def _describe(self) -> str:
        return str(getattr(self, "root", None) or getattr(self, "name", "the index"))

    def finalize(self) -> None:  # noqa: B027 - optional hook
        """Builds indexes and makes everything durable (called before promotion)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""

    def search(self, spec: QuerySpec) -> list[RankedHit]:
        """Runs one query."""
        return self.search_batch([spec])[0]

    def content_hashes(self) -> dict[str, str]:
        """product_id -> content hash of every stored product (drives upsert/sync)."""
        return {
            p[PAYLOAD_PRODUCT_ID]: p.get(PAYLOAD_HASH, "")
            for p in self.scroll_payloads([PAYLOAD_PRODUCT_ID, PAYLOAD_HASH])
        }

    def why_empty(self, filters: Filters | dict | None) -> str | None:
        """Why ``filters`` match nothing, for a shopper; None when some product meets them.

        Costs one count per condition: call it only when a search came back empty.

        Returns:
            e.g. ``"no product has brand 'dewalt'"``, or ``"no product meets all of: ..."``.
        """
        flt = Filters.coerce(filters)
        if flt.is_empty() or self.count(flt) > 0:
            return None
        parts = flt.parts()
        for name, single in parts:
            if self.count(single) == 0:
                return f"no product has {name}"
        return "no product meets all of: " + ", ".join(name for name, _ in parts)


class Backend(ABC):
    """Where versions of an index are kept, and how one is promoted atomically."""

    location: IndexLocation

    @abstractmethod
    def current_version(self) -> str | None:
        """Id of the version searches use now, or None when there is no index."""

    @abstractmethod
    def open(self) -> Collection:
        """Opens the current version for reading (checks it for damage)."""

    def current_manifest(self) -> dict[str, Any]:
        """The current version's manifest.

        Raises:
            ShopsearchError: No index, or a damaged one.
        """
        col = self.open()
        try:
            return dict(col.manifest)
        finally:
            col.close()

    @abstractmethod
    def begin(self, manifest: dict[str, Any], copy_current: bool = False) -> Collection:
        """Creates a staging version (empty, or a copy of the current one)."""

    @abstractmethod
    def promote(self, staging: Collection) -> None:
        """Makes ``staging`` the current version atomically and drops old versions."""

    @abstractmethod
    def discard(self, staging: Collection) -> None:
        """Throws a staging version away."""

    @contextlib.contextmanager
    def writer_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Held while a build runs, so two builds of one index never interleave.

        Args:
            wait_s: How long to wait for another writer to finish before refusing.
        """
        yield

    #: True when payload updates go to the live version itself (a server applies them
    #: atomically and durably); False when they need a new version (the embedded store's
    #: builds are immutable and sealed).
    updates_in_place: bool = False

    def exists(self) -> bool:
        """True when there is an index here."""
        return self.current_version() is not None


def vocabulary_sha(vocabulary: dict[str, Any]) -> str:
    """Checksum of a stored vocabulary (recorded in the manifest)."""
    blob = json.dumps(vocabulary, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def missing_index(location: IndexLocation) -> ShopsearchError:
    """The error for a location without an index."""
    return ShopsearchError(
        f"no shopsearch index at {location.describe()}: build one with "
        "`shopsearch index CATALOG` and the same --index/--qdrant-url"
    )


def damaged_index(where: str, what: str) -> ShopsearchError:
    """The error for an index whose stored data does not match what was promoted."""
    return ShopsearchError(
        f"the index at {where} is damaged ({what}): "
        "re-index it with `shopsearch index CATALOG --mode full`"
    )
