"""Server backend: a Qdrant server or cluster through ``qdrant-client`` (or its local mode).

Versions are collections ``<name>__<build>`` behind the alias ``<name>``. One writer at a time:
the lock is a small collection ``<name>__lock`` whose metadata holds the writer's id and an
expiry (renewed while the build writes); creating a collection that exists fails, which makes
taking the lock atomic. A promotion checks that it still holds the lock and that the alias
still points where it pointed when the build began, and never deletes a build in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from core.errors import ShopsearchError, first_line
from retrieval.filters import Filters
from retrieval.hits import RankedHit
from retrieval.store import request as rq
from retrieval.store.base import (
    DENSE,
    HNSW_EF_CONSTRUCT,
    HNSW_FULL_SCAN_KB,
    HNSW_M,
    PAYLOAD_PRODUCT_ID,
    QUANTIZED_OVERSAMPLING,
    SPARSE,
    Backend,
    Collection,
    IndexLocation,
    PointRecord,
    QuerySpec,
    damaged_index,
    int8_vectors,
    is_build_id,
    missing_index,
    payload_indexes,
    point_id,
    stored_hit,
)

#: A writer's lock (and its staging build) expires this long after its last renewal.
LOCK_TTL_S = 600.0
#: A writer renews its lock at most this often while it writes.
LOCK_RENEW_S = 60.0
_META = "shopsearch"
_META_SHA = "shopsearch_sha"
_META_STATE = "shopsearch_state"  # JSON: {"state": "staging"|"live", "expires": epoch s}
_META_VOCABULARY = "shopsearch_vocabulary"  # JSON: {"kind", "counts"}
_META_LOCK = "shopsearch_lock"  # JSON: {"owner": id, "build": id, "expires": epoch s}


def _models():
    from qdrant_client import models

    return models


# -- neutral requests in qdrant-client's types (syntax only: the logic is in request.py) -------


def _filter(conds: Sequence[rq.Condition]):
    m = _models()
    return rq.engine_filter(conds, m, m.Range)


def _vector(name: str, vector: Any):
    if name == SPARSE:
        return _models().SparseVector(
            indices=[int(i) for i in vector[0]], values=[float(v) for v in vector[1]]
        )
    return np.asarray(vector, dtype=np.float32).tolist()


def _request(r: rq.SourceRequest):
    m = _models()
    return m.QueryRequest(
        query=_vector(r.using, r.vector),
        using=r.using,
        limit=r.limit,
        filter=_filter(r.conditions),
        with_payload=r.payload if r.payload is True else list(r.payload),
        with_vector=[DENSE] if r.with_vector else False,
        params=m.SearchParams(
            hnsw_ef=r.hnsw_ef,
            exact=r.exact,
            # exact search reads the fp32 vectors only: the int8 copy is ignored
            quantization=m.QuantizationSearchParams(
                ignore=r.exact, rescore=True, oversampling=QUANTIZED_OVERSAMPLING
            ),
        ),
    )


def _hit(point, score: float | None = None) -> RankedHit:
    payload = dict(point.payload or {})
    return stored_hit(
        payload[PAYLOAD_PRODUCT_ID],
        float(point.score if score is None else score),
        payload,
        rq.as_float32(getattr(point, "vector", None)),
    )


def _sha(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:32]


class ServerCollection(Collection):
    """One version of an index on a server: a collection whose metadata holds the manifest."""

    def __init__(self, backend: ServerBackend, name: str, manifest: dict[str, Any]) -> None:
        self.backend = backend
        self.client = backend.client
        self.name = name
        self.manifest = manifest

    def _call(self, what: str, fn, *args, **kwargs):
        return self.backend._call(what, fn, *args, **kwargs)

    def count(self, filters: Filters | None = None) -> int:
        flt = _filter(rq.conditions(filters, self.schema)) if filters is not None else None
        return int(
            self._call("count", self.client.count, self.name, count_filter=flt, exact=True).count
        )

    def upsert(self, records: Sequence[PointRecord]) -> None:
        m = _models()
        points = []
        for r in records:
            vector: dict[str, Any] = {DENSE: r.dense.tolist()}
            if r.sparse is not None and len(r.sparse[0]):
                vector[SPARSE] = _vector(SPARSE, r.sparse)
            points.append(
                m.PointStruct(id=point_id(r.product_id), vector=vector, payload=r.payload)
            )
        if points:
            self.backend.renew(self.name)
            self._call("write products", self.client.upsert, self.name, points=points, wait=True)

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            m = _models()
            self._call(
                "delete products",
                self.client.delete,
                self.name,
                points_selector=m.PointIdsList(points=[point_id(p) for p in product_ids]),
                wait=True,
            )

    def scroll_payloads(self, keys: Sequence[str], batch: int = 4096) -> Iterator[dict[str, Any]]:
        offset = None
        while True:
            records, offset = self._call(
                "read products",
                self.client.scroll,
                self.name,
                limit=batch,
                offset=offset,
                with_payload=list(keys),
                with_vectors=False,
            )
            for rec in records:
                yield dict(rec.payload or {})
            if offset is None:
                return

    def _run(self, requests: list[rq.SourceRequest]) -> list[list[RankedHit]]:
        responses = self._call(
            "search",
            self.client.query_batch_points,
            self.name,
            requests=[_request(r) for r in requests],
        )
        return [[_hit(p) for p in r.points] for r in responses]

    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[RankedHit]]:
        return rq.search_batch(specs, self._run, self.retrieve, self.schema)

    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, RankedHit]:
        if not product_ids:
            return {}
        records = self._call(
            "read products",
            self.client.retrieve,
            self.name,
            ids=[point_id(p) for p in product_ids],
            with_payload=True,
            with_vectors=[DENSE] if with_vectors else False,
        )
        hits = [_hit(rec, 0.0) for rec in records]
        return {h.product_id: h for h in hits}

    def set_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        self._call(
            "store the manifest",
            self.client.update_collection,
            self.name,
            metadata={_META: json.dumps(manifest, sort_keys=True), _META_SHA: _sha(manifest)},
        )

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Sets payload keys in batches of 1,000 (the server's ``set_payload``, acknowledged
        once applied: ``wait=True``)."""
        m = _models()
        ops = [
            m.SetPayloadOperation(set_payload=m.SetPayload(payload=payload, points=[point_id(pid)]))
            for pid, payload in changes
        ]
        for i in range(0, len(ops), 1000):
            self._call(
                "update products",
                self.client.batch_update_points,
                self.name,
                update_operations=ops[i : i + 1000],
                wait=True,
            )

    def set_vocabulary(self, vocabulary: dict[str, Any]) -> None:
        # a metadata key of its own beside the manifest's: the manifest stays small (it is read
        # on every open and refresh) and records this one's checksum
        self._call(
            "store the spelling vocabulary",
            self.client.update_collection,
            self.name,
            metadata={_META_VOCABULARY: json.dumps(vocabulary, sort_keys=True)},
        )

    def read_vocabulary(self) -> dict[str, Any] | None:
        raw = self.backend._metadata(self.name).get(_META_VOCABULARY)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise damaged_index(
                self.backend.location.describe(), f"the vocabulary of {self.name} is garbled"
            ) from exc


class ServerBackend(Backend):
    """Versions as collections ``<name>__<build>``; the alias ``<name>`` points at the current one."""

    updates_in_place = True  # payload updates go to the live collection (the server's WAL)

    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self.alias = location.collection
        self.lock_name = f"{self.alias}__lock"
        self._owner: str | None = None
        self._renewed = 0.0
        self._base: dict[str, str | None] = {}  # staging name -> alias target when it began
        if location.client is not None:
            self.client = location.client
        else:
            from qdrant_client import QdrantClient

            try:
                self.client = QdrantClient(url=location.url, api_key=location.api_key, timeout=60)
            except Exception as exc:
                raise ShopsearchError(
                    f"cannot connect to Qdrant at {location.describe()}: "
                    f"{location.redact(first_line(exc))}"
                ) from None

    def _call(self, what: str, fn, *args, **kwargs):
        """Runs a client call; a failure becomes a one-line error with secrets redacted."""
        try:
            return fn(*args, **kwargs)
        except ShopsearchError:
            raise
        except Exception as exc:
            text = self.location.redact(first_line(exc))
            raise ShopsearchError(
                f"Qdrant at {self.location.describe()} failed to {what}: {text}"
            ) from None

    def _aliases(self) -> dict[str, str]:
        result = self._call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in result.aliases}

    def _metadata(self, name: str) -> dict[str, Any]:
        info = self._call("read the collection", self.client.get_collection, name)
        return dict(info.config.metadata or {})

    def current_version(self) -> str | None:
        return self._aliases().get(self.alias)

    def _manifest_of(self, name: str) -> dict[str, Any]:
        meta = self._metadata(name)
        raw = meta.get(_META)
        if raw is None:
            raise ShopsearchError(
                f"collection {name} at {self.location.describe()} was not built by shopsearch"
            )
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise damaged_index(
                self.location.describe(), f"the manifest of {name} is garbled"
            ) from exc
        sha = meta.get(_META_SHA)
        if sha is not None and sha != _sha(manifest):
            raise damaged_index(
                self.location.describe(), f"the manifest of {name} does not match its checksum"
            )
        return manifest

    def open(self) -> Collection:
        name = self.current_version()
        if name is None:
            raise missing_index(self.location)
        col = ServerCollection(self, name, self._manifest_of(name))
        expected = col.manifest.get("count")
        if expected is not None:
            found = col.count()
            if found != expected:
                raise damaged_index(
                    self.location.describe(),
                    f"collection {name} holds {found} products, {expected} were indexed",
                )
        return col

    # -- the writer lock ------------------------------------------------------------------------

    def _lock_record(self) -> dict[str, Any] | None:
        if not self._call("look for the lock", self.client.collection_exists, self.lock_name):
            return None
        with contextlib.suppress(ShopsearchError, ValueError, TypeError):
            return json.loads(self._metadata(self.lock_name).get(_META_LOCK, "null"))
        return None

    @contextlib.contextmanager
    def writer_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        deadline = time.monotonic() + wait_s
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(self._writer_lock())
                    break
                except ShopsearchError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
            yield

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        owner = uuid.uuid4().hex
        record = json.dumps({"owner": owner, "expires": time.time() + LOCK_TTL_S})
        for attempt in range(2):
            try:
                self.client.create_collection(
                    self.lock_name, vectors_config={}, metadata={_META_LOCK: record}
                )
                break
            except Exception as exc:
                held = self._lock_record()
                if held is None and not self._call(
                    "look for the lock", self.client.collection_exists, self.lock_name
                ):
                    raise ShopsearchError(
                        f"Qdrant at {self.location.describe()} failed to take the writer lock: "
                        f"{self.location.redact(first_line(exc))}"
                    ) from None
                expires = float((held or {}).get("expires", 0))
                if attempt == 0 and expires < time.time():  # a crashed writer's lock
                    with contextlib.suppress(Exception):
                        self.client.delete_collection(self.lock_name)
                    continue
                raise ShopsearchError(
                    f"another shopsearch process is writing the index at "
                    f"{self.location.describe()} (lock {self.lock_name}, expires in "
                    f"{max(0, expires - time.time()):.0f} s): wait for it to finish"
                ) from None
        self._owner, self._renewed = owner, time.time()
        try:
            yield
        finally:
            held = self._lock_record()
            if held is not None and held.get("owner") == owner:
                with contextlib.suppress(Exception):
                    self.client.delete_collection(self.lock_name)
            self._owner = None

    def renew(self, staging: str | None = None, force: bool = False) -> None:
        """Extends this writer's lock (and its staging build's expiry) while it writes."""
        if self._owner is None or (not force and time.time() - self._renewed < LOCK_RENEW_S):
            return
        expires = time.time() + LOCK_TTL_S
        self._check_lock()
        self._call(
            "renew the writer lock",
            self.client.update_collection,
            self.lock_name,
            metadata={_META_LOCK: json.dumps({"owner": self._owner, "expires": expires})},
        )
        if staging is not None:
            self._call(
                "renew the staging build",
                self.client.update_collection,
                staging,
                metadata={_META_STATE: json.dumps({"state": "staging", "expires": expires})},
            )
        self._renewed = time.time()

    def _check_lock(self) -> None:
        if self._owner is None:
            return
        held = self._lock_record()
        if held is None or held.get("owner") != self._owner:
            raise ShopsearchError(
                f"this build lost the writer lock of {self.location.describe()} (it expired and "
                "another writer took it): run the indexing again"
            )

    # -- versions -------------------------------------------------------------------------------

    def begin(self, manifest: dict[str, Any], copy_current: bool = False) -> Collection:
        m = _models()
        name = f"{self.alias}__{manifest['build_id']}"
        dim = int(manifest["model"]["dim"])
        quantized = int8_vectors(manifest)
        current = self.current_version()
        self._base[name] = current
        state = {"state": "staging", "expires": time.time() + LOCK_TTL_S}
        self._call(
            "create a collection",
            self.client.create_collection,
            name,
            vectors_config={
                DENSE: m.VectorParams(
                    size=dim,
                    distance=m.Distance.COSINE,
                    # with an int8 copy in RAM, the fp32 vectors (read only to rescore the top
                    # candidates) stay on disk, memory-mapped: what makes int8 save memory
                    on_disk=quantized,
                    # int8 scalar quantization (rescored with the fp32 vectors), when asked
                    quantization_config=(
                        m.ScalarQuantization(
                            scalar=m.ScalarQuantizationConfig(
                                type=m.ScalarType.INT8, quantile=0.99, always_ram=True
                            )
                        )
                        if quantized
                        else None
                    ),
                )
            },
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            hnsw_config=m.HnswConfigDiff(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=HNSW_FULL_SCAN_KB
            ),
            metadata={
                _META: json.dumps(manifest, sort_keys=True),
                _META_SHA: _sha(manifest),
                _META_STATE: json.dumps(state),
            },
        )
        kinds = {
            "keyword": m.PayloadSchemaType.KEYWORD,
            "float": m.PayloadSchemaType.FLOAT,
            "integer": m.PayloadSchemaType.INTEGER,
        }
        with warnings.catch_warnings():
            # local mode warns that payload indexes are no-ops there; only that warning is muted
            warnings.filterwarnings("ignore", message=".*[Pp]ayload index.*")
            for key, kind in payload_indexes(manifest):
                self._call(
                    "create a payload index",
                    self.client.create_payload_index,
                    name,
                    key,
                    kinds[kind],
                )
        staging = ServerCollection(self, name, manifest)
        if copy_current and current is not None:
            offset = None
            while True:
                records, offset = self._call(
                    "read products",
                    self.client.scroll,
                    current,
                    limit=1024,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                if records:
                    self.renew(name)
                    self._call(
                        "copy products",
                        self.client.upsert,
                        name,
                        points=[
                            m.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                            for r in records
                        ],
                        wait=True,
                    )
                if offset is None:
                    break
        return staging

    def promote(self, staging: Collection) -> None:
        """Switches the alias to ``staging`` after checking the lock and the alias's target.

        Raises:
            ShopsearchError: the lock was lost, or another build was promoted meanwhile, or
                a collection (not an alias) already has the index's name.
        """
        assert isinstance(staging, ServerCollection)
        m = _models()
        self._check_lock()
        expected = staging.manifest.get("count")
        if expected is not None and staging.count() != expected:
            raise ShopsearchError(
                f"build {staging.name} holds {staging.count()} products, {expected} were written: "
                "run the indexing again"
            )
        aliases = self._aliases()
        if self.alias not in aliases and self._call(
            "look for the collection", self.client.collection_exists, self.alias
        ):
            raise ShopsearchError(
                f"a collection named {self.alias} exists at {self.location.describe()} and is not a "
                "shopsearch alias: choose another --collection"
            )
        previous = aliases.get(self.alias)
        base = self._base.pop(staging.name, previous)
        if previous != base:
            raise ShopsearchError(
                f"another build ({previous}) was promoted at {self.location.describe()} while "
                f"this one ran (it began from {base}): run the indexing again"
            )
        ops = []
        if previous is not None:
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=self.alias)))
        ops.append(
            m.CreateAliasOperation(
                create_alias=m.CreateAlias(collection_name=staging.name, alias_name=self.alias)
            )
        )
        self._call(
            "switch the alias",
            self.client.update_collection_aliases,
            change_aliases_operations=ops,
        )
        self._call(
            "mark the build live",
            self.client.update_collection,
            staging.name,
            metadata={_META_STATE: json.dumps({"state": "live"})},
        )
        self._drop_old(keep={staging.name, previous} - {None})  # type: ignore[arg-type]

    def builds(self) -> list[str]:
        """Names of every build collection of this index (not the lock)."""
        prefix = f"{self.alias}__"
        result = self._call("list collections", self.client.get_collections)
        return sorted(
            c.name
            for c in result.collections
            if c.name.startswith(prefix) and is_build_id(c.name[len(prefix) :])
        )

    def _in_progress(self, name: str) -> bool:
        try:
            state = json.loads(self._metadata(name).get(_META_STATE, "null")) or {}
        except (ShopsearchError, ValueError, TypeError):
            return False
        return state.get("state") == "staging" and float(state.get("expires", 0)) > time.time()

    def _drop_old(self, keep: set[str]) -> None:
        for name in self.builds():
            if name in keep or self._in_progress(name):
                continue
            with contextlib.suppress(Exception):
                self.client.delete_collection(name)

    def discard(self, staging: Collection) -> None:
        assert isinstance(staging, ServerCollection)
        self._base.pop(staging.name, None)
        with contextlib.suppress(Exception):
            if self.current_version() != staging.name:  # never the live build
                self.client.delete_collection(staging.name)
