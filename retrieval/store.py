"""The product store: every Qdrant call in shopsearch lives in this module.

Two backends behind one interface:

* ``EdgeBackend`` (default): Qdrant's own engine in-process (``qdrant-edge-py``) in a directory.
* ``ServerBackend``: a Qdrant server or cluster through ``qdrant-client`` (also its local mode,
  ``QdrantClient(":memory:")``, which the tests use in place of a server).

Every write goes to a *staging* version that is promoted atomically when complete: readers keep
answering from the old version until then, and a crash mid-build leaves the old one in place.
Edge keeps versions as directories switched by a ``CURRENT`` file; the server keeps them as
collections switched by an alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from catalog.errors import ShopsearchError
from retrieval.filters import Filters

DENSE = "dense"
SPARSE = "bm25"
#: Reciprocal-rank-fusion constant for hybrid queries (the usual 60; identical on both backends).
RRF_K = 60
#: Payload keys the store itself maintains (prefixed ``_``).
PAYLOAD_PRODUCT_ID = "product_id"
PAYLOAD_HASH = "_hash"
PAYLOAD_CATEGORY_LEVELS = "_category_levels"
#: In-stock flag as 0/1: qdrant-edge-py 0.9.0 never matches a boolean ``MatchValue`` (a Python
#: ``True`` reaches the engine as the integer 1), so both backends filter on this integer mirror.
PAYLOAD_IN_STOCK = "_in_stock"
#: Extra hits fetched past k so ties at the cut are broken by product_id, not by engine order
#: (RRF scores tie often; the engine's order among equal scores varies between loads).
TIE_SLACK = 8
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
#: HNSW beam width at query time (at least the prefetch depth). 128 cost fine-tuned dense 1.1
#: points of Recall@100 on Home Depot against exact search (0.795 vs 0.806); 400 keeps 0.803
#: at about the same latency (scripts/ef_sweep.py).
HNSW_EF_SEARCH = 400
#: Below this many KB of vectors (in a segment, or matching a filter) Qdrant scans exactly.
HNSW_FULL_SCAN_KB = 10_000
#: Builds kept besides the current one, so a reader that opened the previous one keeps working.
KEEP_PREVIOUS = 1
_POINT_NAMESPACE = uuid.UUID("6f1c1e0a-58a7-4c8e-9a5e-8f3e1b1f2a10")

Mode = Literal["dense", "bm25", "hybrid"]


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


@dataclass(frozen=True)
class IndexLocation:
    """Where an index lives: exactly one of ``path`` (embedded), ``url`` or ``client`` (server).

    Attributes:
        path: Directory of an embedded (qdrant-edge) index.
        url: Qdrant server URL, e.g. ``http://localhost:6333``.
        api_key: API key for the server.
        client: A ready ``qdrant_client.QdrantClient`` (e.g. ``QdrantClient(":memory:")``).
        collection: Collection (alias) name on the server.
    """

    path: Path | None = None
    url: str | None = None
    api_key: str | None = None
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

    def describe(self) -> str:
        """Human-readable location for messages."""
        if self.path is not None:
            return str(self.path)
        if self.url:
            return f"{self.url} (collection {self.collection})"
        return f"in-process Qdrant client (collection {self.collection})"


@dataclass(frozen=True)
class PointRecord:
    """One product as stored: dense vector, optional BM25 sparse vector, payload."""

    product_id: str
    dense: np.ndarray
    sparse: tuple[list[int], list[float]] | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class StoreHit:
    """One result from the store."""

    product_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class QuerySpec:
    """One query to the store.

    Attributes:
        k: Hits to return.
        mode: ``dense``, ``bm25`` or ``hybrid`` (RRF of dense and bm25 prefetches).
        dense: Query vector (needed for dense and hybrid).
        sparse: Query sparse vector (needed for bm25 and hybrid).
        filters: Conditions every hit meets.
        candidates: Prefetch depth per source for hybrid (None: max(k, 100)).
        extra_dense: More dense prefetches fused in hybrid/dense RRF, as (vector, weight).
        with_vectors: Return each hit's dense vector (payload key ``"_vector"``) in the same call.
    """

    k: int
    mode: Mode = "dense"
    dense: np.ndarray | None = None
    sparse: tuple[list[int], list[float]] | None = None
    filters: Filters = field(default_factory=Filters)
    candidates: int | None = None
    extra_dense: tuple[tuple[np.ndarray, float], ...] = ()
    with_vectors: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ShopsearchError(f"k must be at least 1, got {self.k}")
        if self.mode not in ("dense", "bm25", "hybrid"):
            raise ShopsearchError(
                f"unknown retrieval mode '{self.mode}': use dense, bm25 or hybrid"
            )
        if self.mode in ("dense", "hybrid") and self.dense is None:
            raise ValueError(f"mode {self.mode} needs a dense query vector")
        if self.mode in ("bm25", "hybrid") and self.sparse is None:
            raise ValueError(f"mode {self.mode} needs a sparse query vector")

    @property
    def depth(self) -> int:
        """Prefetch depth for fused queries."""
        return max(self.candidates or 0, self.k, 100)

    def sources(self) -> list[tuple[str, Any, float]]:
        """(vector name, vector, weight) for each source this query reads."""
        out: list[tuple[str, Any, float]] = []
        if self.mode in ("dense", "hybrid"):
            out.append((DENSE, self.dense, 1.0))
        if self.mode in ("bm25", "hybrid"):
            out.append((SPARSE, self.sparse, 1.0))
        out.extend((DENSE, vec, weight) for vec, weight in self.extra_dense)
        return out


def payload_for(
    product_payload: dict[str, Any], content_hash: str, category_levels: list[str]
) -> dict[str, Any]:
    """Adds the store's own keys to a product's payload."""
    payload = {k: v for k, v in product_payload.items() if v is not None}
    payload[PAYLOAD_HASH] = content_hash
    payload[PAYLOAD_CATEGORY_LEVELS] = category_levels
    in_stock = product_payload.get("in_stock")
    if in_stock is not None:
        payload[PAYLOAD_IN_STOCK] = int(bool(in_stock))
    return payload


def public_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """A stored payload without the store's own keys."""
    return {k: v for k, v in (payload or {}).items() if not k.startswith("_")}


class Collection(ABC):
    """One version of an index: read by searches, written only while staged."""

    manifest: dict[str, Any]

    @abstractmethod
    def count(self) -> int:
        """Number of products stored."""

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
    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[StoreHit]]:
        """Runs several queries; one result list each, in order."""

    @abstractmethod
    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Payloads (and dense vectors under ``"_vector"`` when asked) of the given products."""

    @abstractmethod
    def set_manifest(self, manifest: dict[str, Any]) -> None:
        """Stores the manifest with this version."""

    def finalize(self) -> None:  # noqa: B027 - optional hook
        """Builds indexes and makes everything durable (called before promotion)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases resources."""

    def search(self, spec: QuerySpec) -> list[StoreHit]:
        """Runs one query."""
        return self.search_batch([spec])[0]

    def content_hashes(self) -> dict[str, str]:
        """product_id -> content hash of every stored product (drives upsert/sync)."""
        return {
            p[PAYLOAD_PRODUCT_ID]: p.get(PAYLOAD_HASH, "")
            for p in self.scroll_payloads([PAYLOAD_PRODUCT_ID, PAYLOAD_HASH])
        }


class Backend(ABC):
    """Where versions of an index are kept, and how one is promoted atomically."""

    location: IndexLocation

    @abstractmethod
    def current_version(self) -> str | None:
        """Id of the version searches use now, or None when there is no index."""

    @abstractmethod
    def open(self) -> Collection:
        """Opens the current version for reading."""

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
    def writer_lock(self) -> Iterator[None]:
        """Held while a build runs, so two builds of one index never interleave."""
        yield

    def exists(self) -> bool:
        """True when there is an index here."""
        return self.current_version() is not None


def open_backend(location: IndexLocation) -> Backend:
    """The backend for a location."""
    if location.path is not None:
        return EdgeBackend(location)
    return ServerBackend(location)


def _missing_index(location: IndexLocation) -> ShopsearchError:
    return ShopsearchError(
        f"no shopsearch index at {location.describe()}: build one with "
        "`shopsearch index CATALOG` and the same --index/--qdrant-url"
    )


# --------------------------------------------------------------------------------------------
# Embedded backend: qdrant-edge
# --------------------------------------------------------------------------------------------


def _edge():
    import qdrant_edge

    return qdrant_edge


def _edge_filter(filters: Filters):
    qe = _edge()
    must = []
    if filters.category:
        must.append(
            qe.FieldCondition(
                key=PAYLOAD_CATEGORY_LEVELS, match=qe.MatchValue(value=filters.category)
            )
        )
    if filters.brands:
        must.append(qe.FieldCondition(key="brand", match=qe.MatchAny(any=list(filters.brands))))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(
            qe.FieldCondition(
                key="price", range=qe.RangeFloat(gte=filters.min_price, lte=filters.max_price)
            )
        )
    if filters.in_stock is not None:
        must.append(
            qe.FieldCondition(
                key=PAYLOAD_IN_STOCK, match=qe.MatchValue(value=int(filters.in_stock))
            )
        )
    return qe.Filter(must=must) if must else None


def _edge_vector(name: str, vector: Any):
    qe = _edge()
    if name == SPARSE:
        return qe.SparseVector(indices=list(vector[0]), values=list(vector[1]))
    return np.asarray(vector, dtype=np.float32).tolist()


def _edge_request(spec: QuerySpec):
    qe = _edge()
    flt = _edge_filter(spec.filters)
    params = qe.SearchParams(hnsw_ef=max(HNSW_EF_SEARCH, spec.depth))
    sources = spec.sources()
    if len(sources) == 1:
        name, vec, _ = sources[0]
        return qe.QueryRequest(
            limit=spec.k + TIE_SLACK,
            query=qe.Query.Nearest(_edge_vector(name, vec), using=name),
            filter=flt,
            with_payload=True,
            with_vector=[DENSE] if spec.with_vectors else None,
            params=params,
        )
    prefetches = [
        qe.Prefetch(
            limit=spec.depth,
            query=qe.Query.Nearest(_edge_vector(n, v), using=n),
            filter=flt,
            params=params,
        )
        for n, v, _ in sources
    ]
    weights = [w for _, _, w in sources]
    fusion = qe.Fusion.Rrf(k=RRF_K, weights=None if all(w == 1.0 for w in weights) else weights)
    return qe.QueryRequest(
        limit=spec.k + TIE_SLACK,
        prefetches=prefetches,
        query=fusion,
        filter=flt,
        with_payload=True,
        with_vector=[DENSE] if spec.with_vectors else None,
    )


def _ranked(points, k: int) -> list[StoreHit]:
    """Engine points to hits: score descending, ties by product_id, cut to k."""
    hits = []
    for p in points:
        payload = dict(p.payload)
        vector = getattr(p, "vector", None)
        if vector is not None:
            vec = vector.get(DENSE) if isinstance(vector, dict) else vector
            if vec is not None:
                payload["_vector"] = np.asarray(vec, dtype=np.float32)
        hits.append(StoreHit(payload[PAYLOAD_PRODUCT_ID], float(p.score), payload))
    hits.sort(key=lambda h: (-round(h.score, 6), h.product_id))
    return hits[:k]


class EdgeCollection(Collection):
    """One version of an embedded index: a qdrant-edge shard directory plus its manifest."""

    def __init__(self, root: Path, manifest: dict[str, Any], shard) -> None:
        self.root = root
        self.manifest = manifest
        self.shard = shard

    @classmethod
    def create(cls, root: Path, manifest: dict[str, Any]) -> EdgeCollection:
        qe = _edge()
        dim = int(manifest["model"]["dim"])
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=HNSW_FULL_SCAN_KB
            ),
            # No WAL: a staged version is flushed before promotion, and without the WAL's lock
            # several processes can open the promoted version at once.
            wal_enabled=False,
        )
        shard = qe.EdgeShard.create(str(root / "shard"), config)
        for key, schema in (
            ("brand", qe.PayloadSchemaType.Keyword),
            (PAYLOAD_CATEGORY_LEVELS, qe.PayloadSchemaType.Keyword),
            ("price", qe.PayloadSchemaType.Float),
            (PAYLOAD_IN_STOCK, qe.PayloadSchemaType.Integer),
            (PAYLOAD_PRODUCT_ID, qe.PayloadSchemaType.Keyword),
        ):
            shard.update(qe.UpdateOperation.create_field_index(key, schema))
        col = cls(root, manifest, shard)
        col.set_manifest(manifest)
        return col

    @classmethod
    def load(cls, root: Path) -> EdgeCollection:
        qe = _edge()
        manifest = json.loads((root / "manifest.json").read_text())
        try:
            shard = qe.EdgeShard.load(str(root / "shard"))
        except Exception as exc:
            raise ShopsearchError(f"cannot open the index at {root}: {exc}") from exc
        return cls(root, manifest, shard)

    def count(self) -> int:
        return int(self.shard.count(_edge().CountRequest(exact=True)))

    def upsert(self, records: Sequence[PointRecord]) -> None:
        qe = _edge()
        points = []
        for r in records:
            vector: dict[str, Any] = {DENSE: np.asarray(r.dense, dtype=np.float32).tolist()}
            if r.sparse is not None and len(r.sparse[0]):
                vector[SPARSE] = qe.SparseVector(
                    indices=list(r.sparse[0]), values=list(r.sparse[1])
                )
            points.append(qe.Point(id=point_id(r.product_id), vector=vector, payload=r.payload))
        if points:
            self.shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            self.shard.update(
                _edge().UpdateOperation.delete_points([point_id(p) for p in product_ids])
            )

    def scroll_payloads(self, keys: Sequence[str], batch: int = 4096) -> Iterator[dict[str, Any]]:
        qe = _edge()
        offset = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(
                    offset=offset, limit=batch, with_payload=list(keys), with_vector=False
                )
            )
            for rec in records:
                yield dict(rec.payload or {})
            if offset is None:
                return

    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[StoreHit]]:
        qe = _edge()
        if not specs:
            return []
        if len(specs) == 1:
            return [_ranked(self.shard.query(_edge_request(specs[0])), specs[0].k)]
        results = self.shard.query_batch(qe.QueryBatchRequest([_edge_request(s) for s in specs]))
        return [_ranked(r, s.k) for r, s in zip(results, specs, strict=True)]

    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, dict[str, Any]]:
        if not product_ids:
            return {}
        records = self.shard.retrieve(
            [point_id(p) for p in product_ids], True, [DENSE] if with_vectors else False
        )
        out = {}
        for rec in records:
            payload = dict(rec.payload or {})
            if with_vectors and rec.vector is not None:
                vec = rec.vector[DENSE] if isinstance(rec.vector, dict) else rec.vector
                payload["_vector"] = np.asarray(vec, dtype=np.float32)
            out[payload[PAYLOAD_PRODUCT_ID]] = payload
        return out

    def set_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        _atomic_write(self.root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))

    def finalize(self) -> None:
        self.shard.optimize()  # builds the HNSW graph and payload indexes
        self.shard.flush()

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class EdgeBackend(Backend):
    """Versions as ``DIR/builds/<id>/``; ``DIR/CURRENT`` names the one searches use."""

    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self.root = Path(location.path)  # type: ignore[arg-type]
        if self.root.exists() and not self.root.is_dir():
            raise ShopsearchError(f"--index {self.root} is a file, not a directory")

    @property
    def builds(self) -> Path:
        return self.root / "builds"

    def current_version(self) -> str | None:
        try:
            version = (self.root / "CURRENT").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return version if (self.builds / version / "manifest.json").is_file() else None

    def open(self) -> Collection:
        version = self.current_version()
        if version is None:
            raise _missing_index(self.location)
        return EdgeCollection.load(self.builds / version)

    def begin(self, manifest: dict[str, Any], copy_current: bool = False) -> Collection:
        self.builds.mkdir(parents=True, exist_ok=True)
        target = self.builds / f"{manifest['build_id']}.staging"
        current = self.current_version()
        if copy_current and current is not None:
            shutil.copytree(self.builds / current, target)
            col = EdgeCollection.load(target)
            col.set_manifest(manifest)
            return col
        target.mkdir()
        return EdgeCollection.create(target, manifest)

    def promote(self, staging: Collection) -> None:
        assert isinstance(staging, EdgeCollection)
        staging.close()
        final = staging.root.with_name(staging.root.name.removesuffix(".staging"))
        os.replace(staging.root, final)
        staging.root = final
        _atomic_write(self.root / "CURRENT", final.name + "\n")
        self._drop_old(keep={final.name})

    def discard(self, staging: Collection) -> None:
        assert isinstance(staging, EdgeCollection)
        staging.close()
        shutil.rmtree(staging.root, ignore_errors=True)

    def _drop_old(self, keep: set[str]) -> None:
        versions = sorted(
            p.name for p in self.builds.iterdir() if p.is_dir() and not p.name.endswith(".staging")
        )
        older = [v for v in versions if v not in keep]
        for name in older[: max(0, len(older) - KEEP_PREVIOUS)]:
            shutil.rmtree(self.builds / name, ignore_errors=True)
        # staging folders left by a crashed build (we hold the writer lock, so none is live)
        for p in self.builds.glob("*.staging"):
            shutil.rmtree(p, ignore_errors=True)

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".write.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ShopsearchError(
                    f"another shopsearch process is writing the index at {self.root}: wait for it to finish"
                ) from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Server backend: qdrant-client (a server, a cluster, or its local mode)
# --------------------------------------------------------------------------------------------


def _models():
    from qdrant_client import models

    return models


def _server_filter(filters: Filters):
    m = _models()
    must = []
    if filters.category:
        must.append(
            m.FieldCondition(
                key=PAYLOAD_CATEGORY_LEVELS, match=m.MatchValue(value=filters.category)
            )
        )
    if filters.brands:
        must.append(m.FieldCondition(key="brand", match=m.MatchAny(any=list(filters.brands))))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(
            m.FieldCondition(
                key="price", range=m.Range(gte=filters.min_price, lte=filters.max_price)
            )
        )
    if filters.in_stock is not None:
        must.append(
            m.FieldCondition(key=PAYLOAD_IN_STOCK, match=m.MatchValue(value=int(filters.in_stock)))
        )
    return m.Filter(must=must) if must else None


def _server_vector(name: str, vector: Any):
    if name == SPARSE:
        return _models().SparseVector(indices=list(vector[0]), values=list(vector[1]))
    return np.asarray(vector, dtype=np.float32).tolist()


def _server_request(spec: QuerySpec):
    m = _models()
    flt = _server_filter(spec.filters)
    params = m.SearchParams(hnsw_ef=max(HNSW_EF_SEARCH, spec.depth))
    sources = spec.sources()
    if len(sources) == 1:
        name, vec, _ = sources[0]
        return m.QueryRequest(
            query=_server_vector(name, vec),
            using=name,
            limit=spec.k + TIE_SLACK,
            filter=flt,
            with_payload=True,
            with_vector=[DENSE] if spec.with_vectors else False,
            params=params,
        )
    prefetch = [
        m.Prefetch(query=_server_vector(n, v), using=n, limit=spec.depth, filter=flt, params=params)
        for n, v, _ in sources
    ]
    weights = [w for _, _, w in sources]
    rrf = m.Rrf(k=RRF_K, weights=None if all(w == 1.0 for w in weights) else weights)
    return m.QueryRequest(
        prefetch=prefetch,
        query=m.RrfQuery(rrf=rrf),
        limit=spec.k + TIE_SLACK,
        filter=flt,
        with_payload=True,
        with_vector=[DENSE] if spec.with_vectors else False,
    )


class ServerCollection(Collection):
    """One version of an index on a server: a collection whose metadata holds the manifest."""

    def __init__(self, client, name: str, manifest: dict[str, Any]) -> None:
        self.client = client
        self.name = name
        self.manifest = manifest

    def count(self) -> int:
        return int(self.client.count(self.name, exact=True).count)

    def upsert(self, records: Sequence[PointRecord]) -> None:
        m = _models()
        points = []
        for r in records:
            vector: dict[str, Any] = {DENSE: np.asarray(r.dense, dtype=np.float32).tolist()}
            if r.sparse is not None and len(r.sparse[0]):
                vector[SPARSE] = m.SparseVector(indices=list(r.sparse[0]), values=list(r.sparse[1]))
            points.append(
                m.PointStruct(id=point_id(r.product_id), vector=vector, payload=r.payload)
            )
        if points:
            self.client.upsert(self.name, points=points, wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            m = _models()
            self.client.delete(
                self.name,
                points_selector=m.PointIdsList(points=[point_id(p) for p in product_ids]),
                wait=True,
            )

    def scroll_payloads(self, keys: Sequence[str], batch: int = 4096) -> Iterator[dict[str, Any]]:
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.name, limit=batch, offset=offset, with_payload=list(keys), with_vectors=False
            )
            for rec in records:
                yield dict(rec.payload or {})
            if offset is None:
                return

    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[StoreHit]]:
        if not specs:
            return []
        responses = self.client.query_batch_points(
            self.name, requests=[_server_request(s) for s in specs]
        )
        return [_ranked(r.points, s.k) for r, s in zip(responses, specs, strict=True)]

    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, dict[str, Any]]:
        if not product_ids:
            return {}
        records = self.client.retrieve(
            self.name,
            ids=[point_id(p) for p in product_ids],
            with_payload=True,
            with_vectors=[DENSE] if with_vectors else False,
        )
        out = {}
        for rec in records:
            payload = dict(rec.payload or {})
            if with_vectors and rec.vector is not None:
                vec = rec.vector[DENSE] if isinstance(rec.vector, dict) else rec.vector
                payload["_vector"] = np.asarray(vec, dtype=np.float32)
            out[payload[PAYLOAD_PRODUCT_ID]] = payload
        return out

    def set_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self.client.update_collection(
            self.name, metadata={"shopsearch": json.dumps(manifest, sort_keys=True)}
        )


class ServerBackend(Backend):
    """Versions as collections ``<name>__<build>``; the alias ``<name>`` points at the current one."""

    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self.alias = location.collection
        if location.client is not None:
            self.client = location.client
        else:
            from qdrant_client import QdrantClient

            try:
                self.client = QdrantClient(url=location.url, api_key=location.api_key, timeout=60)
            except Exception as exc:
                raise ShopsearchError(f"cannot connect to Qdrant at {location.url}: {exc}") from exc

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ShopsearchError:
            raise
        except Exception as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ShopsearchError(
                f"Qdrant at {self.location.describe()} failed to {what}: {text}"
            ) from exc

    def _aliases(self) -> dict[str, str]:
        result = self._call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in result.aliases}

    def current_version(self) -> str | None:
        return self._aliases().get(self.alias)

    def _manifest_of(self, name: str) -> dict[str, Any]:
        info = self._call("read the collection", self.client.get_collection, name)
        raw = (info.config.metadata or {}).get("shopsearch")
        if raw is None:
            raise ShopsearchError(
                f"collection {name} at {self.location.describe()} was not built by shopsearch"
            )
        return json.loads(raw)

    def open(self) -> Collection:
        name = self.current_version()
        if name is None:
            raise _missing_index(self.location)
        return ServerCollection(self.client, name, self._manifest_of(name))

    def begin(self, manifest: dict[str, Any], copy_current: bool = False) -> Collection:
        m = _models()
        name = f"{self.alias}__{manifest['build_id']}"
        dim = int(manifest["model"]["dim"])
        self._call(
            "create a collection",
            self.client.create_collection,
            name,
            vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            hnsw_config=m.HnswConfigDiff(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=HNSW_FULL_SCAN_KB
            ),
            metadata={"shopsearch": json.dumps(manifest, sort_keys=True)},
        )
        import warnings

        with warnings.catch_warnings():  # local mode warns that payload indexes are no-ops there
            warnings.simplefilter("ignore")
            for key, schema in (
                ("brand", m.PayloadSchemaType.KEYWORD),
                (PAYLOAD_CATEGORY_LEVELS, m.PayloadSchemaType.KEYWORD),
                ("price", m.PayloadSchemaType.FLOAT),
                (PAYLOAD_IN_STOCK, m.PayloadSchemaType.INTEGER),
                (PAYLOAD_PRODUCT_ID, m.PayloadSchemaType.KEYWORD),
            ):
                self._call(
                    "create a payload index", self.client.create_payload_index, name, key, schema
                )
        staging = ServerCollection(self.client, name, manifest)
        current = self.current_version()
        if copy_current and current is not None:
            source = ServerCollection(self.client, current, manifest)
            offset = None
            while True:
                records, offset = self.client.scroll(
                    current, limit=1024, offset=offset, with_payload=True, with_vectors=True
                )
                if records:
                    self.client.upsert(
                        name,
                        points=[
                            m.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                            for r in records
                        ],
                        wait=True,
                    )
                if offset is None:
                    break
            del source
        return staging

    def promote(self, staging: Collection) -> None:
        assert isinstance(staging, ServerCollection)
        m = _models()
        existing = self.client.collection_exists(self.alias)
        aliases = self._aliases()
        if existing and self.alias not in aliases:
            raise ShopsearchError(
                f"a collection named {self.alias} exists at {self.location.describe()} and is not a "
                "shopsearch alias: choose another --collection"
            )
        ops = []
        if self.alias in aliases:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=self.alias)))
        ops.append(
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=staging.name, alias_name=self.alias)
            )
        )
        self._call(
            "switch the alias", self.client.update_collection_aliases, change_aliases_operations=ops
        )
        prefix = f"{self.alias}__"
        names = sorted(
            c.name for c in self.client.get_collections().collections if c.name.startswith(prefix)
        )
        older = [n for n in names if n != staging.name]
        for name in older[: max(0, len(older) - KEEP_PREVIOUS)]:
            self.client.delete_collection(name)

    def discard(self, staging: Collection) -> None:
        assert isinstance(staging, ServerCollection)
        with contextlib.suppress(Exception):
            self.client.delete_collection(staging.name)
