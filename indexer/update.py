"""Live price and stock: change payload fields of indexed products without re-embedding.

    updates = read_updates("prices.csv")        # product_id + the fields to change
    apply_updates(location, updates)            # validated whole, then applied at once

What can change: ``price``, ``in_stock`` and any field the product text does not read (a
catalog's own columns, declared schema fields that are not searchable). A searchable field
(``title``, ``description``, ``brand``, ``category``, ``attributes``) changes what the product's
vectors are made of: it is refused, and the message says to re-index.

How an update lands:

* Embedded index: the builds are immutable and sealed, so an update is a new build: the live
  one copied, the fields set with Qdrant's ``set_payload`` (no vector touched), sealed and
  promoted atomically under the writer lock, like ``tune_index``. An update is acknowledged
  once its build is promoted (``CURRENT`` written and synced): a ``kill -9`` before that leaves
  the previous build live and the staging copy is removed by the next writer; after it nothing
  is lost. Readers open the new build in the background at their next check
  (``Retriever.auto_refresh_s``, 1 s) and switch to it once it is open.
* Server: ``set_payload`` on the live collection (``wait=True``: acknowledged once the server
  applied it, its WAL keeps it).

Kept through ``index --mode upsert|sync``: an update leaves the product's content hash alone,
so an unchanged catalog row leaves the product (and its live values) untouched. Each updated
field records the catalog's value it replaced (payload ``_live``); when the catalog row changed
and gets re-embedded, a live value is kept where the catalog still holds the value it
replaced, and the catalog wins where it changed that field itself (the newer of the two).
``--mode full`` builds from the catalog alone.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from catalog.fields import ATTRIBUTES_PREFIX, Field, FieldSchema
from catalog.reader import Limits, _in_stock, _payload_value, _price, detect_format
from catalog.schema import KNOWN_COLUMNS, RENAMED_PREFIX, is_reserved_column
from core import tables
from core.errors import CatalogError, ShopsearchError
from retrieval.store import PAYLOAD_IN_STOCK, IndexLocation, PointRecord, new_build_id, open_backend
from retrieval.store.base import Backend, Collection

#: Payload key recording, per live-updated field, the catalog value its first update replaced:
#: ``{"price": 10.0, "in_stock": true}`` (flat: Qdrant converts a nested payload much slower).
PAYLOAD_LIVE = "_live"
#: Fields the product text, BM25 or the filter mirrors of the catalog read: changed by indexing.
SEARCHABLE = ("title", "description", "brand", "category", "attributes")
#: Products read from the index per call while checking an update.
RETRIEVE_CHUNK = 2048
#: How long an update waits for another writer (an update or an indexing) to finish.
LOCK_WAIT_S = 30.0


class BadUpdate(ShopsearchError):
    """A row of an update cannot be applied (names the row and field); nothing was applied."""


class IndexBusy(ShopsearchError):
    """Another writer held the index longer than the update would wait."""


@dataclass(frozen=True)
class ProductUpdate:
    """One row of an update: a product and the raw values of the fields to change.

    Attributes:
        where: The row, for messages (``"prices.csv line 3"``).
        product_id: The product.
        values: Field name -> value as read (validated by :func:`apply_updates`).
    """

    where: str
    product_id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class UpdateSummary:
    """What an update did."""

    location: str
    products: int
    fields: tuple[str, ...]
    build_id: str | None
    seconds: float

    @property
    def products_per_s(self) -> float:
        """Products updated per second of the whole call."""
        return self.products / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {**asdict(self), "fields": list(self.fields)}


# -- reading ---------------------------------------------------------------------------------


def _product_id(value: Any, where: str) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (bool, dict, list)) or value is None or not str(value).strip():
        raise BadUpdate(f"{where}: missing product_id: nothing was updated")
    return str(value).strip()


def update_records(
    records: Iterable[dict[str, Any]], source: str = "request"
) -> list[ProductUpdate]:
    """Rows given as dicts (the HTTP body's ``products``), numbered from 1.

    Raises:
        ShopsearchError: a row without a product_id, or an id given twice (names the rows).
    """
    out: list[ProductUpdate] = []
    seen: dict[str, str] = {}
    for i, record in enumerate(records, start=1):
        where = f"{source} row {i}"
        if not isinstance(record, dict):
            raise BadUpdate(f"{where}: not an object: nothing was updated")
        pid = _product_id(record.get("product_id"), where)
        if pid in seen:
            raise BadUpdate(
                f"{where}: product_id {pid!r} is also on {seen[pid]}: give each product once; "
                "nothing was updated"
            )
        seen[pid] = where
        _no_duplicate_columns(map(str, record), where)
        values = {str(k).strip(): v for k, v in record.items() if k != "product_id"}
        out.append(ProductUpdate(where, pid, values))
    return out


def read_updates(path: str | Path) -> list[ProductUpdate]:
    """Reads an update file: CSV/TSV, JSON Lines or Parquet with ``product_id`` and the columns
    to change. A blank cell leaves that field as it is.

    Raises:
        ShopsearchError: unreadable file, no ``product_id`` column, a bad line, an id given
            twice (one line naming the file and row; nothing is applied).
    """
    path = Path(path)
    fmt = detect_format(path)
    tables.check_file(path, CatalogError)

    def check(p: Path, columns: Iterable[str], separator: str | None = None) -> None:
        tables.check_columns(p, columns, ("product_id",), CatalogError, separator)

    rows: list[tuple[str, dict[str, Any]]] = []
    if fmt == "jsonl":
        for batch in tables.jsonl_rows(path, 4096, "utf8", error=CatalogError, check_columns=check):
            for line, record in batch:
                if isinstance(record, str):
                    raise BadUpdate(f"{path} line {line}: {record}: nothing was updated")
                rows.append((f"{path.name} line {line}", record))
    else:
        try:
            if fmt == "csv":
                sep = "\t" if path.suffix.lower() == ".tsv" else ","
                frame = pl.read_csv(path, separator=sep, infer_schema=False)
                _no_duplicate_columns(frame.columns, str(path))
                frame = frame.rename({c: c.strip() for c in frame.columns})
                check(path, frame.columns, sep)
                unit, first = "line", 2
            else:
                frame = pl.read_parquet(path)
                check(path, frame.columns)
                unit, first = "row", 1
        except pl.exceptions.NoDataError:
            raise ShopsearchError(f"{path}: the file is empty: nothing was updated") from None
        except (pl.exceptions.PolarsError, OSError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ShopsearchError(f"{path}: cannot be read ({text})") from None
        for i, record in enumerate(frame.iter_rows(named=True)):
            rows.append((f"{path.name} {unit} {i + first}", record))
    if not rows:
        raise BadUpdate(f"{path}: no row to update")
    out: list[ProductUpdate] = []
    seen: dict[str, str] = {}
    for where, record in rows:
        pid = _product_id(record.get("product_id"), where)
        if pid in seen:
            raise BadUpdate(
                f"{where}: product_id {pid!r} is also on {seen[pid]}: give each product once; "
                "nothing was updated"
            )
        seen[pid] = where
        out.append(
            ProductUpdate(where, pid, {k: v for k, v in record.items() if k != "product_id"})
        )
    return out


_DUPLICATED = re.compile(r"^(.*)_duplicated_\d+$")  # how polars renames a repeated CSV header


def _no_duplicate_columns(columns: Iterable[str], where: str) -> None:
    """Refuses a column given twice (a repeated header, or names equal but for spaces)."""
    columns = list(columns)
    seen: set[str] = set()
    for name in columns:
        repeated = _DUPLICATED.match(name)
        base = repeated.group(1) if repeated and repeated.group(1) in columns else name
        if base.strip() in seen or base is not name:
            raise BadUpdate(
                f"{where}: column {base.strip()!r} is given twice: give each column once; "
                "nothing was updated"
            )
        seen.add(base.strip())


# -- checking --------------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _path_value(payload: dict[str, Any], path: str) -> Any:
    """The value at a payload key, or at ``attributes.<key>`` in the product's attributes."""
    if path.startswith(ATTRIBUTES_PREFIX):
        attributes = payload.get("attributes")
        return (
            attributes.get(path[len(ATTRIBUTES_PREFIX) :]) if isinstance(attributes, dict) else None
        )
    return payload.get(path)


def _source_path(field: Field, stored: dict[str, Any]) -> str:
    """Where a declared field's display value lives in a product's payload, as
    :meth:`Field.value` reads it: its column, else ``attributes.<key>``."""
    source = field.source
    if source.startswith(ATTRIBUTES_PREFIX):
        return source
    attributes = stored.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    if stored.get(source) is None and (source in attributes or source not in stored):
        return ATTRIBUTES_PREFIX + source
    return source


def _extra_columns(stored: dict[str, Any]) -> list[str]:
    """The product's own catalog columns (payload keys that are neither known nor the store's)."""
    return sorted(k for k in stored if k not in KNOWN_COLUMNS and not k.startswith("_"))


def _field_changes(
    update: ProductUpdate, schema: FieldSchema, stored: dict[str, Any]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """One row's changes: field (its payload path, the ``_live`` key) -> (the name the summary
    reports, {payload key: value}: its display value and its filter keys). A payload key
    ``attributes.<key>`` stands for that key of the product's attributes (:func:`_folded`).

    An update changes fields that exist: ``price``, ``in_stock``, a declared schema field
    (by its name) or a catalog column the product's payload holds.

    Raises:
        ShopsearchError: a searchable or unknown field, a bad value (names the row and the
            field).
    """
    searchable = {f.source for f in schema.fields if f.searchable} | set(SEARCHABLE)
    declared = {f.name.casefold(): f for f in schema.fields if f.declared}
    limits = Limits()
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, raw in update.values.items():
        if _blank(raw):
            continue  # a blank cell: no change
        where = f"{update.where} (product_id {update.product_id!r}), field {name!r}"
        if name.startswith("_"):
            raise BadUpdate(
                f"{where}: fields starting with _ are the store's own; nothing was updated"
            )
        field = declared.get(name.casefold())
        if field is not None and field.source in ("price", "in_stock"):
            name, field = field.source, None
        if (
            name in searchable
            or name.startswith(ATTRIBUTES_PREFIX)
            or (field is not None and (field.searchable or field.source in searchable))
        ):
            raise BadUpdate(
                f"{where}: {name} is searchable (the product's vectors and BM25 read it), so it "
                "cannot change live: change it in the catalog and run `shopsearch index CATALOG "
                "--mode upsert`; nothing was updated"
            )
        try:
            if name == "price":
                out[name] = (name, {"price": _price(raw)})
            elif name == "in_stock":
                stock = _in_stock(raw)
                out[name] = (name, {"in_stock": stock, PAYLOAD_IN_STOCK: int(bool(stock))})
            elif field is not None:
                if field.source in KNOWN_COLUMNS:
                    raise tables.Invalid(f"{name} is not a field an update can change")
                value = _payload_value(raw, f"field {name!r}", limits.max_value_chars, 1)
                try:
                    field.normalize(value)  # the type check indexing makes
                    keys = {_source_path(field, stored): value}
                    for f in schema.declared():
                        if f.source == field.source:
                            keys[f.key] = f.normalize(value)
                except ValueError as exc:
                    raise tables.Invalid(str(exc)) from None
                out[_source_path(field, stored)] = (field.name, keys)
            else:
                key = RENAMED_PREFIX + name if is_reserved_column(name) else name
                if key in KNOWN_COLUMNS and key not in ("price", "in_stock"):
                    raise tables.Invalid(f"{name} is not a field an update can change")
                if key not in stored:
                    fields = ["price", "in_stock"]
                    fields += [
                        f.name
                        for f in declared.values()
                        if not f.searchable and f.source not in searchable
                    ]
                    fields += [c for c in _extra_columns(stored) if c not in fields]
                    raise BadUpdate(
                        f"{update.where} (product_id {update.product_id!r}): column {name!r} is "
                        f"not a field of this index: update {', '.join(fields)}; "
                        "nothing was updated"
                    )
                value = _payload_value(raw, f"column {name!r}", limits.max_value_chars, 1)
                keys = {key: value}
                for f in schema.declared():
                    if f.source == key and not f.source.startswith(ATTRIBUTES_PREFIX):
                        try:
                            keys[f.key] = f.normalize(value)
                        except ValueError as exc:
                            raise tables.Invalid(str(exc)) from None
                out[key] = (key, keys)
        except tables.Invalid as exc:
            raise BadUpdate(f"{where}: {exc}; nothing was updated") from None
    return out


def _folded(payload: dict[str, Any], attributes: dict[str, Any] | None) -> dict[str, Any]:
    """A payload to set: its ``attributes.<key>`` entries moved into a copy of the product's
    ``attributes`` (``set_payload`` sets top-level keys: the whole dict is set)."""
    subkeys = [k for k in payload if k.startswith(ATTRIBUTES_PREFIX)]
    if not subkeys:
        return payload
    out = {k: v for k, v in payload.items() if k not in subkeys}
    merged = dict(attributes or {})
    for k in subkeys:
        merged[k[len(ATTRIBUTES_PREFIX) :]] = payload[k]
    out["attributes"] = merged
    return out


def _live_record(old: dict[str, Any], fields: Iterable[str]) -> dict[str, Any] | None:
    """The product's ``_live`` after an update of ``fields``: field -> the catalog value the
    first live update of it replaced; None when it records every field already."""
    live = dict(old.get(PAYLOAD_LIVE) or {})
    if all(f in live for f in fields):
        return None
    for f in fields:
        live.setdefault(f, _path_value(old, f))
    return live


def _written_keys(field: str, schema: FieldSchema) -> list[str]:
    """The payload keys an update of ``field`` writes: the field and its filter mirrors."""
    keys = [field]
    if field == "in_stock":
        keys.append(PAYLOAD_IN_STOCK)
    keys += [
        f.key
        for f in schema.declared()
        if field in (f.source, ATTRIBUTES_PREFIX + f.source) and f.key not in keys
    ]
    return keys


def _planned(
    collection: Collection, updates: Sequence[ProductUpdate], schema: FieldSchema
) -> tuple[list[tuple[str, dict[str, Any]]], set[str], dict[str, dict[str, Any]]]:
    """(product_id, payload keys to set) for every row, after checking all of them; the
    names of the fields changed; the stored attributes of the products whose attributes
    change (for :func:`_folded`).

    Raises:
        ShopsearchError: the first bad row (unknown product or field, searchable field, bad
            value).
    """
    planned: list[tuple[str, dict[str, Any]]] = []
    names: set[str] = set()
    attributes: dict[str, dict[str, Any]] = {}
    for i in range(0, len(updates), RETRIEVE_CHUNK):
        chunk = updates[i : i + RETRIEVE_CHUNK]
        stored = collection.retrieve([u.product_id for u in chunk])
        for u in chunk:
            hit = stored.get(u.product_id)
            if hit is None:
                raise BadUpdate(
                    f"{u.where}: product_id {u.product_id!r} is not in the index (add it to the "
                    "catalog and run `shopsearch index CATALOG --mode upsert`); nothing was updated"
                )
            old = dict(hit.payload or {})
            changes = _field_changes(u, schema, old)
            if not changes:
                continue
            names.update(name for name, _ in changes.values())
            payload = {k: v for _, keys in changes.values() for k, v in keys.items()}
            if any(k.startswith(ATTRIBUTES_PREFIX) for k in payload):
                base = old.get("attributes")
                attributes[u.product_id] = dict(base) if isinstance(base, dict) else {}
            live = _live_record(old, changes)
            if live is not None:
                payload[PAYLOAD_LIVE] = live
            planned.append((u.product_id, payload))
    return planned, names, attributes


# -- applying --------------------------------------------------------------------------------


def apply_updates(
    location: IndexLocation,
    updates: Sequence[ProductUpdate] | str | Path,
    *,
    wait_s: float = LOCK_WAIT_S,
) -> UpdateSummary:
    """Checks every row, then changes the fields of the products at once (vectors untouched).

    Args:
        location: The index (embedded directory or server).
        updates: Rows (:func:`read_updates`, :func:`update_records`) or an update file.
        wait_s: How long to wait for another writer of the index.

    Returns:
        What was done; ``build_id`` is the embedded index's new build (None on a server).

    Raises:
        BadUpdate: a bad row (unknown product, searchable field, negative or non-numeric
            price, non-boolean stock ...; names the row and field). Nothing is applied.
        IndexBusy: another writer kept the index longer than ``wait_s``.
        ShopsearchError: no index, or a damaged one.
    """
    if isinstance(updates, (str, Path)):
        updates = read_updates(updates)
    job = _Job(list(updates))
    _commit(location, [job], wait_s)
    return job.outcome()


class UpdateQueue:
    """Group commit: concurrent :meth:`submit` calls of one process share one commit.

    While a commit runs, the updates submitted meanwhile wait; the next caller to get the turn
    commits all of them at once (one build on the embedded store, whose cost hardly depends on
    how many products it changes). Each submission is checked on its own: a bad row fails its
    own submission only. A product in several submissions gets the later one's values.
    """

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._pending: list[tuple[IndexLocation, _Job]] = []
        self._guard = threading.Lock()

    def submit(
        self,
        location: IndexLocation,
        updates: Sequence[ProductUpdate],
        *,
        wait_s: float = LOCK_WAIT_S,
    ) -> UpdateSummary:
        """:func:`apply_updates`, committed together with the other waiting submissions."""
        job = _Job(list(updates))
        with self._guard:
            self._pending.append((location, job))
        with self._turn:
            if not job.done:
                with self._guard:
                    batch, self._pending = self._pending, []
                groups: dict[str, tuple[IndexLocation, list[_Job]]] = {}
                for loc, queued in batch:
                    groups.setdefault(loc.describe(), (loc, []))[1].append(queued)
                for loc, jobs in groups.values():
                    with contextlib.suppress(Exception):  # each job holds its own outcome
                        _commit(loc, jobs, wait_s)
        return job.outcome()


class _Job:
    """One submission: its rows, then what became of them."""

    def __init__(self, updates: list[ProductUpdate]) -> None:
        self.updates = updates
        self.started = time.perf_counter()
        self.planned: list[tuple[str, dict[str, Any]]] = []
        self.fields: set[str] = set()
        self.error: BaseException | None = None
        self.summary: UpdateSummary | None = None
        self.done = False

    def finish(self, location: IndexLocation, build_id: str | None) -> None:
        self.summary = UpdateSummary(
            location=location.describe(),
            products=len(self.planned),
            fields=tuple(sorted(self.fields)),
            build_id=build_id if self.planned else None,
            seconds=time.perf_counter() - self.started,
        )
        self.done = True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def outcome(self) -> UpdateSummary:
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def _commit(location: IndexLocation, jobs: list[_Job], wait_s: float) -> None:
    """Checks each job against the index, then applies the good ones in one write."""
    try:
        backend = open_backend(location)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(backend.writer_lock(wait_s=wait_s))
            except ShopsearchError as exc:
                raise IndexBusy(str(exc)) from None
            if backend.updates_in_place:
                current = backend.open()
                try:
                    schema = FieldSchema.from_manifest(current.manifest)
                    merged = _plan(current, jobs, schema)
                    if merged:
                        current.set_payloads(merged)
                finally:
                    current.close()
                build_id = None
            else:
                build_id = _new_build(backend, jobs)
    except BaseException as exc:
        for job in jobs:
            if not job.done:
                job.fail(exc)
        raise
    for job in jobs:
        if not job.done:
            job.finish(location, build_id)


def _plan(
    collection: Collection, jobs: list[_Job], schema: FieldSchema
) -> list[tuple[str, dict[str, Any]]]:
    """What the good jobs set, merged per product (a later job's values win); a job with a
    bad row fails alone."""
    merged: dict[str, dict[str, Any]] = {}
    attributes: dict[str, dict[str, Any]] = {}
    for job in jobs:
        try:
            job.planned, job.fields, stored = _planned(collection, job.updates, schema)
        except BadUpdate as exc:
            job.fail(exc)
            continue
        attributes.update(stored)
        for pid, payload in job.planned:
            if pid in merged:
                live = {**payload.get(PAYLOAD_LIVE, {}), **merged[pid].get(PAYLOAD_LIVE, {})}
                merged[pid] = {**merged[pid], **payload}
                if live:
                    merged[pid][PAYLOAD_LIVE] = live
            else:
                merged[pid] = payload
    return [(pid, _folded(payload, attributes.get(pid))) for pid, payload in merged.items()]


def _new_build(backend: Backend, jobs: list[_Job]) -> str | None:
    """A copy of the live build with the payloads set, sealed and promoted (embedded store).

    The rows are checked against the copy (the live build is verified before it is copied);
    a job with a bad row fails alone. Updated points move out of their indexed segment into a
    small unindexed one (Qdrant's copy-on-write): the next ``index --mode upsert|sync``
    indexes them.

    Returns:
        The new build's id; None when nothing changed (no build made).
    """
    manifest = backend.current_manifest()
    live = dict(manifest.get("live") or {})
    manifest.update(build_id=new_build_id(), mode="update")
    staging = backend.begin(manifest, copy_current=True)
    try:
        planned = _plan(staging, jobs, FieldSchema.from_manifest(manifest))
        if not planned:
            backend.discard(staging)
            return None
        staging.set_payloads(planned)
        live.update(
            updated=int(live.get("updated", 0)) + len(planned),
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        manifest["live"] = live
        staging.set_manifest(manifest)
        backend.promote(staging)
    except BaseException:
        backend.discard(staging)
        raise
    return manifest["build_id"]


# -- indexing keeps live values ----------------------------------------------------------------


def keep_live(
    collection: Collection, records: Sequence[PointRecord], schema: FieldSchema | None = None
) -> list[PointRecord]:
    """Records about to replace indexed products, with the live values the catalog left alone.

    For each field an update changed (``_live``): when the new catalog row still holds the
    value the update replaced, the live value (and its filter keys) is kept; when the catalog
    changed that field itself, the catalog's value wins.

    Args:
        collection: The staging copy, still holding the products as they were.
        records: The products about to be written (re-embedded from the catalog).
        schema: The index's fields (None: the collection's manifest's).
    """
    if not records:
        return list(records)
    schema = schema or FieldSchema.from_manifest(collection.manifest)
    old = collection.retrieve([r.product_id for r in records])
    out = []
    for r in records:
        hit = old.get(r.product_id)
        live = (hit.payload or {}).get(PAYLOAD_LIVE) if hit is not None else None
        if not live:
            out.append(r)
            continue
        payload, kept = dict(r.payload), {}
        for field, base in live.items():
            if _path_value(payload, field) != base:
                continue  # the catalog changed it: the catalog wins
            for key in _written_keys(field, schema):
                if key.startswith(ATTRIBUTES_PREFIX):
                    held = hit.payload.get("attributes")
                    held = held if isinstance(held, dict) else {}
                    merged = dict(payload.get("attributes") or {})
                    sub = key[len(ATTRIBUTES_PREFIX) :]
                    if sub in held:
                        merged[sub] = held[sub]
                    else:
                        merged.pop(sub, None)
                    payload["attributes"] = merged or None
                elif key in hit.payload:
                    payload[key] = hit.payload[key]
                else:
                    payload.pop(key, None)
            kept[field] = base
        if kept:
            payload[PAYLOAD_LIVE] = kept
        out.append(replace(r, payload=payload))
    return out


def live_keeping_upsert(staging: Collection) -> Callable[[Sequence[PointRecord]], None]:
    """``staging.upsert`` that keeps live values (:func:`keep_live`); for upsert/sync builds."""
    schema = FieldSchema.from_manifest(staging.manifest)
    return lambda records: staging.upsert(keep_live(staging, records, schema))
