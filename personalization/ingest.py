"""Events into a profile directory, and a shopper out of it: what ``shopsearch events ingest``,
``POST /events`` and ``shopsearch forget-user`` do, callable from Python.

:func:`ingest_events` is the one ingest path: an event log (:func:`ingest_event_log`) and an
HTTP batch (:func:`ingest_records`) are validated with the same rules and stored by it.

A profile directory holds the SQLite store (``profiles.sqlite``) and the pseudonym key (its
``pseudonym.key`` file, or the key given as ``key=``: hex text, what the command line and the
service read from ``SHOPSEARCH_PSEUDONYM_KEY``; see
:meth:`personalization.privacy.Pseudonymizer.from_dir`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore
from personalization.profiles_pg import is_store_url, open_shared_profiles, require_key

if TYPE_CHECKING:
    from personalization.events import EventBatch

PROFILES_FILE = "profiles.sqlite"
"""The SQLite file inside a profile directory."""

DEFAULT_EVENT_REJECTS = Path("shopsearch-event-rejects.csv")
"""Where rejected events go unless told otherwise."""

_RETRIEVE_BATCH = 1000


def open_profiles(
    directory: str | os.PathLike[str], key: str | None = None
) -> tuple[ProfileStore, Pseudonymizer]:
    """The profile store and the pseudonymizer kept in one directory (created when missing).

    Args:
        directory: The profile directory.
        key: The pseudonym key as hex text; None (or blank): the directory's key file, created
            when missing (:meth:`personalization.privacy.Pseudonymizer.from_dir`).

    Raises:
        ShopsearchError: A key that is not hex, or an unreadable or short key file.

    A ``postgresql://`` URL instead of a directory opens the shared store on that server
    (:mod:`personalization.profiles_pg`); ``key`` is then required.
    """
    if is_store_url(directory):
        return open_shared_profiles(str(directory), key)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pseudonymizer = Pseudonymizer.from_dir(directory, key)
    return ProfileStore(directory / PROFILES_FILE), pseudonymizer


def check_profiles(profiles: str | os.PathLike[str], key: str | None = None) -> None:
    """Refuses a directory that is not an existing profile store with its pseudonym key.

    Args:
        profiles: The profile directory serving uses.
        key: The pseudonym key serving uses (hex text), when it is not kept in the directory.

    Raises:
        ShopsearchError: No ``profiles.sqlite`` there, or no key (neither ``key`` nor the
            directory's key file).
    """
    from core.errors import ShopsearchError
    from personalization.privacy import KEY_ENV, KEY_FILE

    if is_store_url(profiles):
        require_key(str(profiles), key)
        return
    if not (Path(profiles) / PROFILES_FILE).exists():
        raise ShopsearchError(
            f"{profiles}: no profile store there (give the directory serving uses)"
        )
    if not (Path(profiles) / KEY_FILE).exists() and not (key or "").strip():
        raise ShopsearchError(
            f"{profiles}: no {KEY_FILE} there and {KEY_ENV} is not set: give the key serving "
            "uses (forgotten shoppers are found by it)"
        )


def without_forgotten(
    events: list,
    profiles: str | os.PathLike[str],
    key: str | None = None,
    pseudonymous: bool = False,
) -> tuple[list, int]:
    """The events of shoppers the profile store at ``profiles`` has not erased.

    What reads a raw log (``train personal``, ``vocabulary``) filters it through this, so a
    shopper erased with ``forget-user`` stops counting even though the log file keeps their rows.

    Args:
        events: ``personalization.events.Event`` objects (raw user ids).
        profiles: The profile directory serving uses.
        key: The pseudonym key serving uses (hex text); None: the directory's key file.
        pseudonymous: The events' ``user_id`` is already a pseudonym (a service's search log,
            written with the same key), not a raw id.

    Returns:
        (the kept events, how many distinct shoppers were left out).

    Raises:
        ShopsearchError: No profile store in ``profiles`` (never created there), or no
            pseudonym key (neither ``key`` nor the directory's key file): a new key would
            match no erased shopper.
    """
    check_profiles(profiles, key)
    store, pz = open_profiles(profiles, key)
    try:
        users = {e.user_id for e in events}
        if pseudonymous:
            gone = store.forgotten_pseudonyms(users, pz)
        else:
            gone = {u for u in users if store.is_forgotten(u, pz)}
    finally:
        store.close()
    return [e for e in events if e.user_id not in gone], len(gone)


@dataclass(frozen=True)
class IngestResult:
    """What :func:`ingest_events` did with validated batches.

    Attributes:
        added: Events stored.
        duplicates: Events already in the store (skipped).
        forgotten: Events of forgotten shoppers, not stored (erasure is durable).
        rejects: The invalid events (``personalization.events.Reject``: index or line, reason).
        items: Products whose item records (brand, category, price) were refreshed.
        events: The valid events (:func:`ingest_records` only: what the service's search
            log records).
    """

    added: int
    duplicates: int
    forgotten: int
    rejects: list = field(default_factory=list)
    items: int = 0
    events: list = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Valid events kept (stored now, or stored before)."""
        return self.added + self.duplicates

    def notes(self) -> list[str]:
        """What was not stored and why, in words (empty when everything valid was kept)."""
        out = []
        if self.forgotten:
            out.append(
                f"{self.forgotten} events of forgotten shoppers were not stored: an erasure is "
                "durable, their later events are skipped"
            )
        if self.rejects:
            out.append(f"{len(self.rejects)} events were rejected as invalid")
        return out


#: ``lookup(product_ids) -> {product_id: stored payload}``: what the index holds for products.
PayloadLookup = Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]]


def ingest_events(
    batches: Iterable[EventBatch],
    store: ProfileStore,
    pseudonymizer: Pseudonymizer,
    lookup: PayloadLookup,
) -> IngestResult:
    """The one way validated events get into a profile store (``POST /events`` and
    ``shopsearch events ingest`` both come here).

    Each batch is stored (user ids pseudonymized; duplicates and forgotten shoppers'
    events skipped, and counted), then the item records of every product the stored events
    name are refreshed from the index (what the features read: brand, category, price).

    Args:
        batches: Validated events (``read_events`` of a log, or ``validate_records``).
        store: The profile store.
        pseudonymizer: Its pseudonymizer.
        lookup: Payloads of products by id (the index); called in chunks.
    """
    added = duplicates = forgotten = 0
    rejects: list = []
    named: set[str] = set()
    for batch in batches:
        rejects.extend(batch.rejects)
        summary = store.ingest(batch.events, pseudonymizer)
        added += summary.added
        duplicates += summary.duplicates
        forgotten += summary.forgotten
        named.update(e.product_id for e in batch.events if e.product_id)
    ids = sorted(named)
    items = 0
    for i in range(0, len(ids), _RETRIEVE_BATCH):
        found = lookup(ids[i : i + _RETRIEVE_BATCH])
        items += store.upsert_items(found[p] for p in ids[i : i + _RETRIEVE_BATCH] if p in found)
    return IngestResult(added, duplicates, forgotten, rejects, items)


def ingest_records(
    records: Sequence[Any],
    store: ProfileStore,
    pseudonymizer: Pseudonymizer,
    lookup: PayloadLookup,
) -> IngestResult:
    """Validate events given as objects (an HTTP request's batch) with the event log's rules
    (products must be in the index) and :func:`ingest_events` them.

    A bad event is rejected with its index and reason; the valid ones are stored all the same.
    """
    batch, products = validate_known(records, lookup)

    def known(part: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        return {p: products[p] for p in part if p in products}

    result = ingest_events([batch], store, pseudonymizer, known)
    return replace(result, events=list(batch.events))


def validate_known(
    records: Sequence[Any], lookup: PayloadLookup
) -> tuple[EventBatch, dict[str, Mapping[str, Any]]]:
    """Validate events given as objects with the event log's rules, their products checked
    against the index (``lookup``).

    Returns:
        The batch (valid events, rejects by index) and the payloads of the named products found.
    """
    from personalization.events import validate_records

    ids = sorted(
        {
            str(r["product_id"]).strip()
            for r in records
            if isinstance(r, dict) and isinstance(r.get("product_id"), (str, int))
        }
    )
    products: dict[str, Mapping[str, Any]] = {}
    for i in range(0, len(ids), _RETRIEVE_BATCH):
        products.update(lookup(ids[i : i + _RETRIEVE_BATCH]))
    return validate_records(records, known_products=products.__contains__), products


@dataclass(frozen=True)
class EventIngestSummary:
    """What :func:`ingest_event_log` did.

    Attributes:
        added: Events stored.
        duplicates: Events already in the store (skipped).
        rejected: Events refused (unknown product, bad timestamp, unknown type, ...).
        rejects_path: The CSV the rejects were written to (None when there were none).
        forgotten: Events of forgotten shoppers, skipped (erasure is durable).
    """

    added: int
    duplicates: int
    rejected: int
    rejects_path: Path | None
    forgotten: int = 0


def ingest_event_log(
    log_path: str | os.PathLike[str],
    profiles: str | os.PathLike[str],
    location,
    rejects_path: str | os.PathLike[str] | None = None,
    key: str | None = None,
) -> EventIngestSummary:
    """Validate an event log and add it to the profiles (user ids pseudonymized).

    Products are checked against the index at ``location``; the stored item records (what the
    features read: brand, category, price, vector) of every product the log names are refreshed
    from it (:func:`ingest_events`, as ``POST /events`` does).

    Args:
        log_path: Parquet or JSON Lines event log.
        profiles: The profile directory (created when missing).
        location: A ``retrieval.store.IndexLocation``.
        rejects_path: CSV for rejected events (default ``./shopsearch-event-rejects.csv``),
            written only when something was rejected.
        key: The pseudonym key (hex text); None: the profile directory's key file.

    Raises:
        ShopsearchError: An unreadable log, no index at ``location``, or a bad key.
    """
    from catalog.reader import write_rejects
    from core.errors import EventLogError
    from core.tables import check_file
    from personalization.events import detect_format, read_events
    from retrieval.store import PAYLOAD_PRODUCT_ID, open_backend

    detect_format(log_path)  # a log that cannot be read is refused before anything is created
    check_file(Path(log_path), EventLogError)
    col = open_backend(location).open()
    try:
        known = {p[PAYLOAD_PRODUCT_ID] for p in col.scroll_payloads([PAYLOAD_PRODUCT_ID])}

        def lookup(ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
            return {pid: hit.payload for pid, hit in col.retrieve(list(ids)).items()}

        store, pz = open_profiles(profiles, key)
        try:
            result = ingest_events(read_events(log_path, known_products=known), store, pz, lookup)
        finally:
            store.close()
    finally:
        col.close()
    path = Path(rejects_path) if rejects_path is not None else DEFAULT_EVENT_REJECTS
    if result.rejects:
        write_rejects(result.rejects, path)
    return EventIngestSummary(
        added=result.added,
        duplicates=result.duplicates,
        rejected=len(result.rejects),
        rejects_path=path if result.rejects else None,
        forgotten=result.forgotten,
    )


@dataclass(frozen=True)
class ForgetSummary:
    """What :func:`forget_user` did: rows removed, and whether the user was already forgotten."""

    removed: int
    already_forgotten: bool


def forget_user(
    profiles: str | os.PathLike[str], user_id: str, key: str | None = None
) -> ForgetSummary:
    """Remove every trace of ``user_id`` from the profile directory, durably.

    Deletes with SQLite's secure delete and vacuums, so the rows do not linger in free pages,
    and keeps a tombstone (a keyed hash) so a re-ingested log cannot bring the user back.

    Args:
        profiles: The profile directory.
        user_id: The shopper's id, as the shop sends it.
        key: The pseudonym key serving uses (hex text); None: the directory's key file. The
            wrong key finds nobody: give the one the events were stored with.

    Raises:
        ForgetIncomplete: Another connection holds the rows; nothing is claimed done.
    """
    store, pz = open_profiles(profiles, key)
    try:
        already = store.is_forgotten(user_id, pz)
        return ForgetSummary(store.forget(user_id, pz, vacuum=True), already)
    finally:
        store.close()
