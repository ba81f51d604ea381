"""Event logs into a profile directory, and a shopper out of it: what ``shopsearch events ingest``
and ``shopsearch forget-user`` do, callable from Python.

A profile directory holds the SQLite store (``profiles.sqlite``) and the pseudonym key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore

PROFILES_FILE = "profiles.sqlite"
"""The SQLite file inside a profile directory."""

DEFAULT_EVENT_REJECTS = Path("shopsearch-event-rejects.csv")
"""Where rejected events go unless told otherwise."""

_RETRIEVE_BATCH = 1000


def open_profiles(directory: str | os.PathLike[str]) -> tuple[ProfileStore, Pseudonymizer]:
    """The profile store and the pseudonymizer kept in one directory (created when missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return ProfileStore(directory / PROFILES_FILE), Pseudonymizer.from_dir(directory)


def check_profiles(profiles: str | os.PathLike[str]) -> None:
    """Refuses a directory that is not an existing profile store with its pseudonym key.

    Raises:
        ShopsearchError: No ``profiles.sqlite`` there, or no key (file or environment).
    """
    from core.errors import ShopsearchError
    from personalization.privacy import KEY_ENV, KEY_FILE

    if not (Path(profiles) / PROFILES_FILE).exists():
        raise ShopsearchError(
            f"{profiles}: no profile store there (give the directory serving uses)"
        )
    if not (Path(profiles) / KEY_FILE).exists() and not os.environ.get(KEY_ENV, "").strip():
        raise ShopsearchError(
            f"{profiles}: no {KEY_FILE} there and {KEY_ENV} is not set: give the key serving "
            "uses (forgotten shoppers are found by it)"
        )


def without_forgotten(events: list, profiles: str | os.PathLike[str]) -> tuple[list, int]:
    """The events of shoppers the profile store at ``profiles`` has not erased.

    What reads a raw log (``train personal``, ``vocabulary``) filters it through this, so a
    shopper erased with ``forget-user`` stops counting even though the log file keeps their rows.

    Args:
        events: ``personalization.events.Event`` objects (raw user ids).
        profiles: The profile directory serving uses.

    Returns:
        (the kept events, how many distinct shoppers were left out).

    Raises:
        ShopsearchError: No profile store in ``profiles`` (never created there), or no
            pseudonym key (neither its key file nor ``$SHOPSEARCH_PSEUDONYM_KEY``): a new key
            would match no erased shopper.
    """
    check_profiles(profiles)
    store, pz = open_profiles(profiles)
    try:
        gone = {u for u in {e.user_id for e in events} if store.is_forgotten(u, pz)}
    finally:
        store.close()
    return [e for e in events if e.user_id not in gone], len(gone)


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
) -> EventIngestSummary:
    """Validate an event log and add it to the profiles (user ids pseudonymized).

    Products are checked against the index at ``location``; the stored item records (what the
    features read: brand, category, price, vector) of every product the log names are refreshed
    from it.

    Args:
        log_path: Parquet or JSON Lines event log.
        profiles: The profile directory (created when missing).
        location: A ``retrieval.store.IndexLocation``.
        rejects_path: CSV for rejected events (default ``./shopsearch-event-rejects.csv``),
            written only when something was rejected.

    Raises:
        ShopsearchError: An unreadable log or no index at ``location``.
    """
    from catalog.reader import write_rejects
    from personalization.events import read_events
    from retrieval.store import PAYLOAD_PRODUCT_ID, open_backend

    col = open_backend(location).open()
    try:
        known = {p[PAYLOAD_PRODUCT_ID] for p in col.scroll_payloads([PAYLOAD_PRODUCT_ID])}
        store, pz = open_profiles(profiles)
        added = duplicates = forgotten = 0
        bad = []
        seen: set[str] = set()
        for batch in read_events(log_path, known_products=known):
            bad.extend(batch.rejects)
            summary = store.ingest(batch.events, pz)
            added += summary.added
            duplicates += summary.duplicates
            forgotten += summary.forgotten
            seen.update(e.product_id for e in batch.events if e.product_id)
        new_items = sorted(seen)
        for i in range(0, len(new_items), _RETRIEVE_BATCH):
            got = col.retrieve(new_items[i : i + _RETRIEVE_BATCH])
            store.upsert_items(hit.payload for hit in got.values())
        store.close()
    finally:
        col.close()
    path = Path(rejects_path) if rejects_path is not None else DEFAULT_EVENT_REJECTS
    if bad:
        write_rejects(bad, path)
    return EventIngestSummary(
        added=added,
        duplicates=duplicates,
        rejected=len(bad),
        rejects_path=path if bad else None,
        forgotten=forgotten,
    )


@dataclass(frozen=True)
class ForgetSummary:
    """What :func:`forget_user` did: rows removed, and whether the user was already forgotten."""

    removed: int
    already_forgotten: bool


def forget_user(profiles: str | os.PathLike[str], user_id: str) -> ForgetSummary:
    """Remove every trace of ``user_id`` from the profile directory, durably.

    Deletes with SQLite's secure delete and vacuums, so the rows do not linger in free pages,
    and keeps a tombstone (a keyed hash) so a re-ingested log cannot bring the user back.

    Raises:
        ForgetIncomplete: Another connection holds the rows; nothing is claimed done.
    """
    store, pz = open_profiles(profiles)
    try:
        already = store.is_forgotten(user_id, pz)
        return ForgetSummary(store.forget(user_id, pz, vacuum=True), already)
    finally:
        store.close()
