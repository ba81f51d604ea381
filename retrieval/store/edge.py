"""Embedded backend: Qdrant's engine in-process (``qdrant-edge-py``), versions as directories.

Layout of an index directory ``DIR``::

    DIR/CURRENT                 the live build's id
    DIR/builds/<id>/            one build: manifest.json, integrity.json, shard/
    DIR/builds/<id>.staging/    a build being written (only while its writer holds the lock)
    DIR/.write.lock             the writer lock (flock)

Crash safety: any crash leaves at most a staging folder, a promoted-but-never-live build or a
temporary file; the next writer removes them under the lock, and promotion keeps the build that
was live before it (readers may still have it open), never the newest leftover.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from core.errors import ShopsearchError
from core.io import atomic_write
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
    SEGMENT_POINTS,
    SPARSE,
    Backend,
    Collection,
    IndexLocation,
    PointRecord,
    QuerySpec,
    damaged_index,
    engine_errors,
    int8_vectors,
    missing_index,
    payload_indexes,
    point_id,
    stored_hit,
)

INTEGRITY = "integrity.json"
MANIFEST = "manifest.json"
#: The spelling vocabulary of a build (its checksum is in the manifest).
VOCABULARY = "vocabulary.json"
_COPY_CHUNK = 1 << 20
_ZEROS = bytes(_COPY_CHUNK)


def _edge():
    import qdrant_edge

    return qdrant_edge


# -- neutral requests in qdrant-edge's types (syntax only: the logic is in request.py) --------


def _filter(conds: Sequence[rq.Condition]):
    qe = _edge()
    return rq.engine_filter(conds, qe, qe.RangeFloat)


def _vector(name: str, vector: Any):
    if name == SPARSE:
        return _edge().SparseVector(
            indices=[int(i) for i in vector[0]], values=[float(v) for v in vector[1]]
        )
    return vector.tolist()


def _request(r: rq.SourceRequest):
    qe = _edge()
    return qe.QueryRequest(
        limit=r.limit,
        query=qe.Query.Nearest(_vector(r.using, r.vector), using=r.using),
        filter=_filter(r.conditions),
        with_payload=r.payload if r.payload is True else list(r.payload),
        with_vector=[DENSE] if r.with_vector else None,
        params=qe.SearchParams(
            hnsw_ef=r.hnsw_ef,
            exact=r.exact,
            # exact search reads the fp32 vectors only: the int8 copy is ignored
            quantization=qe.QuantizationSearchParams(
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


class EdgeCollection(Collection):
    """One version of an embedded index: a qdrant-edge shard directory plus its manifest."""

    def __init__(self, root: Path, manifest: dict[str, Any], shard) -> None:
        self.root = root
        self.manifest = manifest
        self.shard = shard
        #: Files copied from a verified build, unchanged since (see :func:`seal`).
        self.copied: dict[str, tuple[int, int, str]] = {}

    @classmethod
    def create(cls, root: Path, manifest: dict[str, Any]) -> EdgeCollection:
        """A new, empty version in ``root`` (an existing empty directory)."""
        qe = _edge()
        dim = int(manifest["model"]["dim"])
        quantized = int8_vectors(manifest)
        points = int(manifest.get("segment_points", SEGMENT_POINTS))
        config = qe.EdgeConfig(
            vectors={
                DENSE: qe.EdgeVectorParams(
                    size=dim,
                    distance=qe.Distance.Cosine,
                    # with an int8 copy in RAM, the fp32 vectors (read only to rescore the top
                    # candidates) stay on disk, memory-mapped: what makes int8 save memory
                    on_disk=quantized,
                    # int8 scalar quantization (rescored with the fp32 vectors), when asked
                    quantization_config=(
                        qe.ScalarQuantizationConfig(
                            type=qe.ScalarType.Int8, quantile=0.99, always_ram=True
                        )
                        if quantized
                        else None
                    ),
                )
            },
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=HNSW_FULL_SCAN_KB
            ),
            # Segments flushed during a build stay apart: merging two full ones would exceed this
            # size (KB of dense vectors), so no optimize rebuilds the whole catalog in memory.
            # Every segment is indexed when flushed, however small (searches still scan the ones
            # under HNSW_FULL_SCAN_KB exactly), so a flush always starts a new segment.
            optimizers=qe.EdgeOptimizersConfig(
                max_segment_size=max(1, dim * 4 * points // 1024), indexing_threshold=1
            ),
            # No WAL: a staged version is flushed before promotion, and without the WAL's lock
            # several processes can open the promoted version at once.
            wal_enabled=False,
        )
        kinds = {
            "keyword": qe.PayloadSchemaType.Keyword,
            "float": qe.PayloadSchemaType.Float,
            "integer": qe.PayloadSchemaType.Integer,
        }
        with engine_errors("create the index", str(root)):
            shard = qe.EdgeShard.create(str(root / "shard"), config)
            for key, kind in payload_indexes(manifest):
                shard.update(qe.UpdateOperation.create_field_index(key, kinds[kind]))
        col = cls(root, manifest, shard)
        col.set_manifest(manifest)
        return col

    @classmethod
    def load(cls, root: Path, verify: bool = True) -> EdgeCollection:
        """Opens the version in ``root``.

        Args:
            root: The build directory.
            verify: Check the files and the count against what was recorded at promotion.

        Raises:
            ShopsearchError: missing, truncated or garbled files (names the file; re-index).
        """
        seal = verify_files(root) if verify else None
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise damaged_index(str(root), f"{root / MANIFEST} is unreadable: {exc}") from exc
        with engine_errors("open the index", str(root), damaged=True):
            shard = _edge().EdgeShard.load(str(root / "shard"))
        col = cls(root, manifest, shard)
        if seal is not None and seal.get("count") is not None:
            with engine_errors("count the points", str(root), damaged=True):
                count = col.count()
            if count != seal["count"]:
                col.close()
                raise damaged_index(
                    str(root), f"{count} products found, {seal['count']} were indexed"
                )
        return col

    def _where(self) -> str:
        return str(self.root)

    def count(self, filters: Filters | None = None) -> int:
        qe = _edge()
        flt = _filter(rq.conditions(filters, self.schema)) if filters is not None else None
        with engine_errors("count", self._where()):
            return int(self.shard.count(qe.CountRequest(exact=True, filter=flt)))

    def upsert(self, records: Sequence[PointRecord]) -> None:
        qe = _edge()
        points = []
        for r in records:
            vector: dict[str, Any] = {DENSE: r.dense.tolist()}
            if r.sparse is not None and len(r.sparse[0]):
                vector[SPARSE] = _vector(SPARSE, r.sparse)
            points.append(qe.Point(id=point_id(r.product_id), vector=vector, payload=r.payload))
        if points:
            with engine_errors("write products", self._where()):
                self.shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, product_ids: Sequence[str]) -> None:
        if product_ids:
            with engine_errors("delete products", self._where()):
                self.shard.update(
                    _edge().UpdateOperation.delete_points([point_id(p) for p in product_ids])
                )

    def scroll_payloads(self, keys: Sequence[str], batch: int = 4096) -> Iterator[dict[str, Any]]:
        qe = _edge()
        offset = None
        while True:
            with engine_errors("read products", self._where()):
                records, offset = self.shard.scroll(
                    qe.ScrollRequest(
                        offset=offset, limit=batch, with_payload=list(keys), with_vector=False
                    )
                )
            for rec in records:
                yield dict(rec.payload or {})
            if offset is None:
                return

    def _run(self, requests: list[rq.SourceRequest]) -> list[list[RankedHit]]:
        qe = _edge()
        with engine_errors("search", self._where()):
            if len(requests) == 1:
                results = [self.shard.query(_request(requests[0]))]
            else:
                results = self.shard.query_batch(
                    qe.QueryBatchRequest([_request(r) for r in requests])
                )
        return [[_hit(p) for p in points] for points in results]

    def search_batch(self, specs: Sequence[QuerySpec]) -> list[list[RankedHit]]:
        return rq.search_batch(specs, self._run, self.retrieve, self.schema)

    def retrieve(
        self, product_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, RankedHit]:
        if not product_ids:
            return {}
        with engine_errors("read products", self._where()):
            records = self.shard.retrieve(
                [point_id(p) for p in product_ids], True, [DENSE] if with_vectors else False
            )
        hits = [_hit(rec, 0.0) for rec in records]
        return {h.product_id: h for h in hits}

    def set_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        atomic_write(
            self.root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True), durable=True
        )

    def set_payloads(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Sets payload keys (one engine call per distinct change), then flushes.

        Only ever called on a staging version: a promoted build is never written again.
        """
        qe = _edge()
        groups: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for product_id, payload in changes:
            key = json.dumps(payload, sort_keys=True, default=str)
            groups.setdefault(key, (payload, []))[1].append(point_id(product_id))
        with engine_errors("update products", self._where()):
            for payload, ids in groups.values():
                self.shard.update(qe.UpdateOperation.set_payload(ids, payload))
            self.shard.flush()

    def flush_segment(self) -> None:
        """Indexes the segment written so far, then closes and reopens the shard.

        Reopening drops the mapped pages of what was written, so a build holds one segment's
        worth of memory, not the catalog's.
        """
        qe = _edge()
        with engine_errors("build the index", self._where()):
            self.shard.optimize()
            self.shard.flush()
            self.shard.close()
            self.shard = None
            self.shard = qe.EdgeShard.load(str(self.root / "shard"))

    def set_vocabulary(self, vocabulary: dict[str, Any]) -> None:
        atomic_write(self.root / VOCABULARY, json.dumps(vocabulary, sort_keys=True), durable=True)

    def read_vocabulary(self) -> dict[str, Any] | None:
        path = self.root / VOCABULARY
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise damaged_index(str(self.root), f"{path} is unreadable: {exc}") from exc

    def finalize(self) -> None:
        with engine_errors("build the index", self._where()):
            self.shard.optimize()  # builds the HNSW graph and payload indexes
            self.shard.flush()

    def close(self) -> None:
        if self.shard is not None:
            with engine_errors("close the index", self._where()):
                self.shard.close()
            self.shard = None


# -- files ------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data region of a file (holes skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        try:
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:
            end = size
        yield start, min(end, size)
        pos = end


def _digest(path: Path) -> str:
    """Checksum of a file's content that does not depend on how sparse it is on disk.

    Hashes each non-zero aligned block with its offset; holes and all-zero blocks read alike.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        fd = fh.fileno()
        size = os.fstat(fd).st_size
        digest.update(size.to_bytes(8, "little"))
        done = 0
        for start, end in _extents(fd, size):
            block = max(done, start - start % _COPY_CHUNK)
            while block < end:
                fh.seek(block)
                buf = fh.read(_COPY_CHUNK)
                if buf and buf != _ZEROS[: len(buf)]:
                    digest.update(block.to_bytes(8, "little"))
                    digest.update(buf)
                block += _COPY_CHUNK
            done = block
    return digest.hexdigest()


#: Files qdrant-edge rewrites or removes when it opens a shard (not part of the seal).
def _volatile(path: Path) -> bool:
    return path.name == "edge_config.json" or "journal" in path.name


def _shard_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "shard").rglob("*") if p.is_file() and not _volatile(p))


def seal(
    root: Path, count: int | None, known: dict[str, tuple[int, int, str]] | None = None
) -> None:
    """Records the count and a checksum of the manifest and of every shard file of a build.

    Args:
        root: The build directory.
        count: Products in the build.
        known: relative path -> (size, mtime in ns, checksum) of files copied from a verified
            build: a file still of that size and time was not written since, and keeps its
            checksum without being read again.
    """
    files = {}
    for p in _shard_files(root):
        name, stat = str(p.relative_to(root)), p.stat()
        prior = (known or {}).get(name)
        unchanged = prior is not None and prior[:2] == (stat.st_size, stat.st_mtime_ns)
        files[name] = [stat.st_size, prior[2] if prior is not None and unchanged else _digest(p)]
    record = {"count": count, MANIFEST: _digest(root / MANIFEST), "files": files}
    atomic_write(root / INTEGRITY, json.dumps(record, indent=1, sort_keys=True), durable=True)


def _copied(root: Path, sealed: dict[str, Any]) -> dict[str, tuple[int, int, str]]:
    """(size, mtime in ns, checksum) of the files of a fresh copy of a verified build."""
    out = {}
    for name, (size, digest) in sealed.items():
        with contextlib.suppress(OSError):
            stat = (root / name).stat()
            if stat.st_size == size:
                out[name] = (size, stat.st_mtime_ns, digest)
    return out


def verify_files(root: Path) -> dict[str, Any] | None:
    """Checks a build's files against its seal; returns the seal (None for an unsealed build).

    Raises:
        ShopsearchError: a file missing, of another size or with another checksum (named).
    """
    path = root / INTEGRITY
    if not path.exists():
        if (root / MANIFEST).exists() and not (root / "shard").is_dir():
            raise damaged_index(str(root), f"{root / 'shard'} is missing")
        return None  # built before seals existed
    try:
        record = json.loads(path.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise damaged_index(str(root), f"{path} is unreadable") from exc
    checks = [(MANIFEST, None, record.get(MANIFEST))] + [
        (name, size, digest) for name, (size, digest) in sorted(files.items())
    ]
    for name, size, digest in checks:
        file = root / name
        try:
            actual_size = file.stat().st_size
        except FileNotFoundError:
            raise damaged_index(str(root), f"{file} is missing") from None
        if size is not None and actual_size != size:
            raise damaged_index(str(root), f"{file} has {actual_size} bytes, {size} were written")
        if _digest(file) != digest:
            raise damaged_index(str(root), f"{file} does not match its checksum")
    return record


def sparse_copy(src: str, dst: str, *, follow_symlinks: bool = True) -> str:
    """Copies a file without writing its holes or all-zero blocks (stays sparse on disk)."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fd = fi.fileno()
        size = os.fstat(fd).st_size
        for start, end in _extents(fd, size):
            fi.seek(start)
            offset = start
            while offset < end:
                buf = fi.read(min(_COPY_CHUNK, end - offset))
                if not buf:
                    break
                if buf != _ZEROS[: len(buf)]:
                    fo.seek(offset)
                    fo.write(buf)
                offset += len(buf)
        fo.truncate(size)
    shutil.copystat(src, dst)
    return dst


# -- versions -----------------------------------------------------------------------------------


class EdgeBackend(Backend):
    """Versions as ``DIR/builds/<id>/``; ``DIR/CURRENT`` names the one searches use."""

    updates_in_place = False  # a payload update is a new build (copied, updated, sealed)

    def __init__(self, location: IndexLocation) -> None:
        self.location = location
        self.root = Path(location.path)  # type: ignore[arg-type]
        if self.root.exists() and not self.root.is_dir():
            raise ShopsearchError(f"--index {self.root} is a file, not a directory")
        self._locked = False

    @property
    def builds(self) -> Path:
        """The folder holding one directory per build."""
        return self.root / "builds"

    def _read_current(self) -> str | None:
        """The build ``CURRENT`` names, or None (no index, or an unreadable file)."""
        try:
            version = (self.root / "CURRENT").read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return version or None

    def current_version(self) -> str | None:
        """The live build's id; None when there is no index.

        Raises:
            ShopsearchError: ``CURRENT`` is unreadable or names a missing build.
        """
        path = self.root / "CURRENT"
        try:
            version = path.read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise damaged_index(str(self.root), f"{path} is unreadable") from exc
        if not version:
            return None
        if not (self.builds / version).is_dir():
            raise damaged_index(str(self.root), f"{path} names build {version!r}, which is missing")
        return version

    def open(self) -> Collection:
        version = self.current_version()
        if version is None:
            raise missing_index(self.location)
        return EdgeCollection.load(self.builds / version)

    def current_manifest(self) -> dict[str, Any]:
        """The live build's manifest, read without opening its shard (not verified: a copy of
        the build verifies it, :meth:`begin`)."""
        version = self.current_version()
        if version is None:
            raise missing_index(self.location)
        path = self.builds / version / MANIFEST
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise damaged_index(str(self.root), f"{path} is unreadable: {exc}") from exc

    def begin(self, manifest: dict[str, Any], copy_current: bool = False) -> Collection:
        self.builds.mkdir(parents=True, exist_ok=True)
        if self._locked:
            self.clean_leftovers()
        target = self.builds / f"{manifest['build_id']}.staging"
        current = self.current_version() if copy_current else None
        if copy_current and current is not None:
            # a damaged build is never copied and re-sealed
            record = verify_files(self.builds / current) or {}
            shutil.copytree(self.builds / current, target, copy_function=sparse_copy)
            (target / INTEGRITY).unlink(missing_ok=True)
            copied = _copied(target, record.get("files") or {})
            col = EdgeCollection.load(target, verify=False)
            col.copied = copied
            col.set_manifest(manifest)
            return col
        target.mkdir()
        return EdgeCollection.create(target, manifest)

    def promote(self, staging: Collection) -> None:
        """Seals ``staging``, renames it into place and points ``CURRENT`` at it.

        Keeps the build that was live before (readers may have it open); removes every other
        build, including leftovers of crashed writers.
        """
        assert isinstance(staging, EdgeCollection)
        previous = self._read_current()  # kept even if damaged: a full rebuild repairs the index
        staging.close()
        self._seal(staging)
        final = staging.root.with_name(staging.root.name.removesuffix(".staging"))
        self._rename(staging.root, final)
        staging.root = final
        self._write_current(final.name)
        self._drop_old(keep={final.name, previous} - {None})  # type: ignore[arg-type]

    # the steps of a promotion, separate so that tests can crash between them
    def _seal(self, staging: EdgeCollection) -> None:
        # qdrant-edge rewrites a few files on its first open: open once so the seal holds after
        EdgeCollection.load(staging.root, verify=False).close()
        count = staging.manifest.get("count")
        seal(staging.root, None if count is None else int(count), known=staging.copied)

    def _rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)
        _fsync_dir(self.builds)

    def _write_current(self, name: str) -> None:
        atomic_write(self.root / "CURRENT", name + "\n", durable=True)

    def _drop_old(self, keep: set[str]) -> None:
        for p in self.builds.iterdir():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        self._drop_temp_files()

    def _drop_temp_files(self) -> None:
        for p in self.root.glob(".CURRENT.*.tmp"):
            p.unlink(missing_ok=True)

    def clean_leftovers(self) -> None:
        """Removes what crashed writers left: staging folders and temporary files.

        Call only while holding :meth:`writer_lock` (then no other writer is live).
        """
        if not self.builds.is_dir():
            return
        for p in self.builds.glob("*.staging"):
            shutil.rmtree(p, ignore_errors=True)
        for p in self.builds.glob("*/.*.tmp"):
            p.unlink(missing_ok=True)
        self._drop_temp_files()

    def discard(self, staging: Collection) -> None:
        assert isinstance(staging, EdgeCollection)
        with contextlib.suppress(Exception):
            staging.close()
        if staging.root.name.endswith(".staging"):  # never a promoted (maybe live) build
            shutil.rmtree(staging.root, ignore_errors=True)

    @contextlib.contextmanager
    def writer_lock(self, wait_s: float = 0.0) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".write.lock", "w") as fh:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() < deadline:
                        time.sleep(0.02)
                        continue
                    raise ShopsearchError(
                        f"another shopsearch process is writing the index at {self.root}: wait for it to finish"
                    ) from exc
            self._locked = True
            try:
                self.clean_leftovers()
                yield
            finally:
                self._locked = False
                fcntl.flock(fh, fcntl.LOCK_UN)
