"""Batch indexing: a catalog file in, a searchable Qdrant index out.

Two passes over the file: the first validates every row (rejects, counts, BM25 document-length
statistics) before the index is touched; the second embeds and writes into a staging version
that is promoted atomically only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from catalog.fields import FieldSchema
from catalog.reader import CatalogBatch, Limits, Reject, read_catalog, write_rejects
from catalog.schema import KNOWN_COLUMNS, Product
from catalog.text import RECIPE_VERSION, product_text
from core.errors import ShopsearchError
from indexer.update import live_keeping_upsert
from retrieval.encoder import BiEncoder
from retrieval.lexical import LexicalEncoder
from retrieval.retriever import QueryTuning
from retrieval.spelling import (
    VOCABULARY_KIND,
    split_vocabulary,
    vocabulary_with_log,
    vocabulary_words,
)
from retrieval.store import (
    SEGMENT_POINTS,
    STORE_FORMAT,
    IndexLocation,
    PointRecord,
    new_build_id,
    open_backend,
    payload_for,
)
from retrieval.store.base import Backend, vocabulary_sha

IndexMode = Literal["full", "upsert", "sync"]
#: 2: points carry normalized brand/category filter keys (``retrieval.store.STORE_FORMAT``).
MANIFEST_FORMAT = STORE_FORMAT
#: Products embedded per encoder call and written per store call. The encoder batches each
#: call by token count, so a larger call pads less: on Home Depot (2 cores, int8 towers, a
#: development script) 4,096 embedded 7% faster than 1,024.
ENCODE_CHUNK = 4096


@dataclass(frozen=True)
class IndexSummary:
    """What an indexing run did."""

    mode: str
    location: str
    build_id: str
    read: int
    indexed: int
    unchanged: int
    deleted: int
    rejected: int
    warnings: int
    total: int
    seconds: float
    encode_seconds: float
    rejects_path: str | None
    store_seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        """Products written per second of the whole run."""
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "items_per_s": round(self.items_per_s, 1)}


def product_payload(product: Product) -> dict[str, Any]:
    """The fields of a product stored with it (everything but vectors)."""
    payload: dict[str, Any] = {
        "product_id": product.product_id,
        "title": product.title,
        "description": product.description,
        "brand": product.brand,
        "category": product.category,
        "price": product.price,
        "in_stock": product.in_stock,
        "attributes": product.attributes or None,
    }
    for key, value in product.extra.items():
        if key not in payload and not key.startswith("_"):
            payload[key] = value
    return payload


def content_hash(product: Product) -> str:
    """Changes exactly when what gets stored for the product changes."""
    blob = json.dumps(
        [RECIPE_VERSION, product_payload(product)], sort_keys=True, default=str, ensure_ascii=False
    )
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def _packed(digest: str) -> bytes:
    """A hex content hash as bytes (half the memory); b"" for a missing or unreadable one."""
    try:
        return bytes.fromhex(digest)
    except (TypeError, ValueError):
        return b""


@dataclass
class _Scan:
    valid: int = 0
    token_total: int = 0
    warnings: int = 0
    rows: int = 0
    words: Counter[str] = field(default_factory=Counter)


def indexed_text(product: Product, schema: FieldSchema) -> str:
    """What BM25 and the product tower read: :func:`product_text`, then the searchable fields
    declared beyond the product's own columns (``name: value``; a value the text already
    holds is not repeated). Which of the own columns it reads is the recipe's choice."""
    text = product_text(product)
    extra = [
        f"{f.name.replace('_', ' ')}: {value}"
        for f in schema.fields
        if f.searchable and f.source not in KNOWN_COLUMNS
        for value in [f.value(product)]
        if value not in (None, "") and str(value) not in text
    ]
    return " | ".join([text, "; ".join(extra)]) if extra else text


def _scan(
    path: Path,
    limits: Limits | None,
    lexical: LexicalEncoder,
    rejects: list[Reject],
    warn: Callable[[str], None] | None = None,
    schema: FieldSchema | None = None,
) -> _Scan:
    """Pass 1: validates every row, collects rejects, measures BM25 document lengths."""
    scan = _Scan()
    schema = schema or FieldSchema.default()
    no_tokens: list[str] = []
    for batch in read_catalog(path, limits=limits, schema=schema):
        rejects.extend(batch.rejects)
        scan.warnings += len(batch.warnings)
        if warn is not None:
            for message in batch.warnings:
                warn(message)
        scan.valid += len(batch.products)
        scan.rows += len(batch.products) + len(batch.rejects)
        for p in batch.products:
            text = indexed_text(p, schema)
            scan.words.update(set(vocabulary_words(text)))
            n = len(lexical.tokenize(text))
            scan.token_total += n
            if n == 0:
                no_tokens.append(p.product_id)
    if no_tokens:
        # BM25 cannot find these products (text of no letter or digit, or of a script the
        # tokeniser drops); the dense tower still can.
        scan.warnings += 1
        if warn is not None:
            shown = ", ".join(repr(i) for i in no_tokens[:5])
            more = f" and {len(no_tokens) - 5} more" if len(no_tokens) > 5 else ""
            warn(
                f"{len(no_tokens)} of {scan.valid} product(s) have no word BM25 can index "
                f"({shown}{more}); they are found by the dense search only"
            )
    return scan


def _chunks(batches: Iterator[CatalogBatch], size: int) -> Iterator[list[Product]]:
    pending: list[Product] = []
    for batch in batches:
        pending.extend(batch.products)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


def index_catalog(
    catalog: str | os.PathLike[str],
    location: IndexLocation,
    *,
    mode: IndexMode = "full",
    encoder: BiEncoder | None = None,
    model: str | None = None,
    device: str | None = None,
    backend: str = "torch",
    quantize: str | None = None,
    threads: int | None = None,
    quantize_vectors: str | None = None,
    limits: Limits | None = None,
    rejects_path: str | os.PathLike[str] | None = None,
    progress: bool | Callable[[int], None] = True,
    warn: Callable[[str], None] | None = None,
    segment_points: int | None = None,
    tuning: QueryTuning | None = None,
    schema: FieldSchema | None = None,
) -> IndexSummary:
    """Indexes a catalog file.

    Args:
        catalog: Parquet, CSV or JSON Lines file (see ``catalog.reader``).
        location: Where the index lives (embedded directory or server).
        mode: ``full`` rebuilds (atomically); ``upsert`` re-embeds new and changed products;
            ``sync`` also deletes products that are no longer in the file.
        encoder: A loaded bi-encoder (else one is loaded from ``model``/``device``).
        model: Product-tower model folder; None is the packaged all-MiniLM-L6-v2.
        device: Torch device; None picks CUDA when present.
        backend: Encoder backend when loading from ``model``: torch, onnx or openvino.
        quantize: None or ``int8`` (the quantized onnx/openvino copy), recorded in the manifest.
        threads: Intra-op CPU threads of the encoder loaded from ``model``; None: the physical
            cores.
        quantize_vectors: None, or ``int8``: Qdrant keeps an int8 scalar-quantized copy of the
            dense vectors in RAM (quantile 0.99), searches it and rescores with the fp32
            vectors, which stay on disk (memory-mapped); recorded in the manifest
            (``vectors.quantization``). Upsert/sync keep the index's setting.
        limits: Text length limits for validation.
        rejects_path: Where rejected rows go (CSV); None: ``shopsearch-rejects.csv`` here.
        progress: Show a progress bar (or a callback receiving products done).
        warn: Receives warnings (truncations); None drops them after counting.
        segment_points: Products written before the store indexes them as one segment and
            releases their build memory; None is ``SEGMENT_POINTS`` (50,000). Memory while
            indexing is bounded by this, not by the catalog.
        tuning: Fusion weights and the dense tower's reading of corrected queries, recorded in
            the manifest; None keeps what the current index records (upsert/sync) or the
            defaults.
        schema: The fields the index declares (``catalog.fields``; a row whose declared
            value does not fit its type is rejected), recorded in the manifest; None keeps
            what the current index records (upsert/sync) or the defaults. ``sync`` with
            another schema than the index's rewrites every product; ``upsert`` refuses.

    The words of the product texts are stored with the index as the spelling vocabulary
    (``retrieval.spelling``); ``upsert`` merges them into the current vocabulary (a word's
    count is then the larger of the two, an approximation). Words a search log added
    (:func:`add_log_vocabulary`) are kept by ``upsert`` and ``sync``; ``full`` starts anew.

    Raises:
        ShopsearchError: unreadable catalog, no valid row, model mismatch on upsert/sync,
            another schema than the index's on upsert.
    """
    if quantize_vectors not in (None, "int8"):
        raise ShopsearchError(f"unknown vector quantization '{quantize_vectors}': use int8")
    if mode not in ("full", "upsert", "sync"):
        raise ShopsearchError(f"unknown index mode '{mode}': use full, upsert or sync")
    start = time.perf_counter()
    path = Path(catalog)
    lexical = LexicalEncoder()
    rejects: list[Reject] = []
    if schema is None and mode != "full":
        schema = _recorded_schema(location)
    schema = schema or FieldSchema.default()
    scan = _scan(path, limits, lexical, rejects, warn, schema)
    rejects_file = Path(rejects_path) if rejects_path else Path("shopsearch-rejects.csv")
    written_rejects = None
    if rejects:
        write_rejects(rejects, rejects_file)
        written_rejects = str(rejects_file)
    if scan.valid == 0:
        where = f"; see {written_rejects} for why each row was rejected" if written_rejects else ""
        raise ShopsearchError(
            f"{path}: no valid product in {scan.rows} row(s){where}; the index was not changed"
        )
    # "or 1.0": a catalog none of whose text BM25 can index still builds (dense only)
    lexical = LexicalEncoder(avg_doc_len=scan.token_total / scan.valid or 1.0)

    per_segment = SEGMENT_POINTS if segment_points is None else int(segment_points)
    if per_segment < 1:
        raise ShopsearchError(f"segment_points must be at least 1, not {segment_points}")
    model_backend, backend = backend, open_backend(location)  # backend: the store from here on
    with backend.writer_lock():
        current = backend.open() if mode != "full" and backend.exists() else None
        encoder = encoder or BiEncoder(
            model, device=device, backend=model_backend, quantize=quantize, threads=threads
        )
        # product_id -> 8-byte content hash of what the index holds; entries are popped as the
        # catalog is read, so what is left at the end is what sync deletes (no second set of ids)
        existing: dict[str, bytes] = {}
        words = dict(scan.words)
        log_counts: dict[str, int] = {}  # words a search log added (add_log_vocabulary)
        from_log = None
        recorded_tuning = None
        if current is not None:
            if current.manifest["model"]["fingerprint"] != encoder.fingerprint:
                raise ShopsearchError(
                    f"the index at {location.describe()} was built with model "
                    f"'{current.manifest['model']['name']}'; --mode {mode} must use the same model: "
                    "pass it with --model, or rebuild with --mode full"
                )
            encoder.check_probes(current.manifest, location.describe())
            same_schema = FieldSchema.from_manifest(current.manifest) == schema
            if not same_schema and mode == "upsert":
                current.close()
                raise ShopsearchError(
                    f"the index at {location.describe()} was built with other fields than "
                    "--schema declares; --mode upsert cannot change them (every product must "
                    "be written again): use --mode sync or --mode full"
                )
            if current.manifest.get("format", 1) == MANIFEST_FORMAT and same_schema:
                existing = {pid: _packed(h) for pid, h in current.content_hashes().items()}
            # else: written by an older shopsearch (no normalized filter keys), or with other
            # fields (sync): write every product again, into an empty staging version
            # keep the BM25 length normalisation stable across incremental updates
            lexical = LexicalEncoder.from_config(current.manifest["lexical"])
            recorded_tuning = current.manifest.get("query")
            # the words a search log added are no product's: a new catalog keeps them
            try:
                old_words, log_counts = split_vocabulary(current.vocabulary() or {})
                from_log = (current.manifest.get("spelling") or {}).get("from_log")
            except ShopsearchError:
                if mode == "upsert":
                    raise
                old_words = {}  # sync writes the catalog's part anew anyway
            if mode == "upsert":
                words = {w: max(c, words.get(w, 0)) for w, c in old_words.items()} | {
                    w: max(c, old_words.get(w, 0)) for w, c in words.items()
                }
            quantize_vectors = (current.manifest.get("vectors") or {}).get("quantization")
            current.close()
        vocabulary = vocabulary_with_log(words, log_counts)
        build_id = new_build_id()
        manifest = {
            "format": MANIFEST_FORMAT,
            "build_id": build_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": encoder.describe(),
            # the query tower that opens this index must embed these within min_cosine
            "probes": encoder.probes(),
            "vectors": {"quantization": quantize_vectors},
            "recipe": RECIPE_VERSION,
            "lexical": lexical.config(),
            "source": str(path.resolve()),
            "mode": mode,
            "segment_points": per_segment,
            "spelling": spelling_record(vocabulary),
            "fields": schema.to_manifest(),
        }
        if from_log:
            manifest["spelling"]["from_log"] = from_log
        if tuning is not None:
            manifest["query"] = tuning.as_dict()
        elif recorded_tuning:
            manifest["query"] = recorded_tuning
        t_store = time.perf_counter()
        staging = backend.begin(manifest, copy_current=bool(existing))
        # live price/stock updates the catalog left alone stay (indexer/update.py)
        write = live_keeping_upsert(staging) if existing else staging.upsert
        store_seconds = time.perf_counter() - t_store  # time inside Qdrant calls
        indexed = unchanged = deleted = 0
        in_segment = 0
        encode_seconds = 0.0
        bar = _progress(progress, scan.valid, f"indexing ({mode})")
        try:
            batches = read_catalog(path, limits=limits, schema=schema)
            for chunk in _chunks(batches, min(ENCODE_CHUNK, per_segment)):
                todo = []
                for product in chunk:
                    digest = content_hash(product)
                    if existing.pop(product.product_id, None) == _packed(digest):
                        unchanged += 1
                    else:
                        todo.append((product, digest))
                if todo:
                    texts = [indexed_text(p, schema) for p, _ in todo]
                    t0 = time.perf_counter()
                    dense = encoder.encode_document(texts)
                    encode_seconds += time.perf_counter() - t0
                    sparse = lexical.encode_documents(texts)
                    t_store = time.perf_counter()
                    write(
                        [
                            PointRecord(
                                p.product_id,
                                dense[i],
                                sparse[i],
                                payload_for(product_payload(p), d, p.category_levels())
                                | schema.payload(p),
                            )
                            for i, (p, d) in enumerate(todo)
                        ]
                    )
                    indexed += len(todo)
                    in_segment += len(todo)
                    if in_segment >= per_segment:
                        staging.flush_segment()
                        in_segment = 0
                    store_seconds += time.perf_counter() - t_store
                bar(len(chunk))
            t_store = time.perf_counter()
            if mode == "sync":
                gone = list(existing)
                for i in range(0, len(gone), 1000):
                    staging.delete(gone[i : i + 1000])
                deleted = len(gone)
            staging.finalize()
            total = staging.count()
            manifest.update(count=total, indexed=indexed, rejected=len(rejects))
            staging.set_vocabulary(vocabulary)
            staging.set_manifest(manifest)
            backend.promote(staging)
            store_seconds += time.perf_counter() - t_store
        except BaseException:
            backend.discard(staging)
            raise
        finally:
            bar(None)
    return IndexSummary(
        mode=mode,
        location=location.describe(),
        build_id=build_id,
        read=scan.rows,
        indexed=indexed,
        unchanged=unchanged,
        deleted=deleted,
        rejected=len(rejects),
        warnings=scan.warnings,
        total=total,
        seconds=time.perf_counter() - start,
        encode_seconds=encode_seconds,
        rejects_path=written_rejects,
        store_seconds=store_seconds,
    )


def _recorded_schema(location: IndexLocation) -> FieldSchema | None:
    """The schema the index at ``location`` records (None: no index there yet)."""
    backend = open_backend(location)
    if not backend.exists():
        return None
    current = backend.open()
    try:
        return current.schema
    finally:
        current.close()


def _progress(
    progress: bool | Callable[[int], None], total: int, desc: str
) -> Callable[[int | None], None]:
    """A ``step(n)`` function; ``step(None)`` closes the bar."""
    if callable(progress):
        return lambda n: None if n is None else progress(n)
    if not progress:
        return lambda n: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="products", desc=desc, dynamic_ncols=True, smoothing=0.1)
    return lambda n: bar.close() if n is None else bar.update(n)


def tune_index(location: IndexLocation, tuning: QueryTuning) -> str:
    """Records query tuning (fusion weights, what dense reads) in a new build of an index.

    The new build is a copy of the current one (no product is re-embedded) with the tuning in
    its manifest, promoted atomically like any build; searches pick it up on their next
    refresh.

    Args:
        location: The index.
        tuning: What to record.

    Returns:
        The new build's id.

    Raises:
        ShopsearchError: No index at ``location``.
    """
    backend = open_backend(location)
    with backend.writer_lock():
        current = backend.open()
        manifest = dict(current.manifest)
        vocabulary = current.vocabulary()
        current.close()
        manifest.update(build_id=new_build_id(), query=tuning.as_dict(), mode="tune")
        promote_copy(backend, manifest, vocabulary)
    return manifest["build_id"]


def spelling_record(vocabulary: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``spelling`` entry for a stored vocabulary (its size and checksum)."""
    return {
        "kind": VOCABULARY_KIND,
        "words": len(vocabulary["counts"]),
        "sha": vocabulary_sha(vocabulary),
    }


def promote_copy(
    backend: Backend, manifest: dict[str, Any], vocabulary: dict[str, Any] | None
) -> None:
    """A new build that copies the current one's points (nothing re-embedded) with this
    manifest and vocabulary, promoted atomically; discarded if anything fails. Call it
    holding the backend's writer lock."""
    staging = backend.begin(manifest, copy_current=True)
    try:
        if vocabulary is not None:
            staging.set_vocabulary(vocabulary)
        staging.finalize()
        staging.set_manifest(manifest)
        backend.promote(staging)
    except BaseException:
        backend.discard(staging)
        raise
