"""Pseudonymous user profiles and item popularity in one SQLite file.

Tables (one file, WAL mode, ``secure_delete`` on):

* ``events(pseudonym, ts, session, event, product_id, query, position)`` - every ingested
  event, keyed by the user's pseudonym (never the raw id; sessions are pseudonymised too).
  Missing ``product_id``/``query`` are stored as ``''`` so that the unique index
  ``events_by_user_time(pseudonym, ts, event, product_id, query)`` makes re-ingesting the
  same log a no-op. Its leading columns ``(pseudonym, ts)`` make it the per-user time index
  too, and it covers the profile query (no table lookups); a second ``(pseudonym, ts)``
  index would only double the write cost.
* ``items(product_id, brand, category, price)`` - what the profiles need about products,
  filled by the caller with :meth:`ProfileStore.upsert_items`. Product vectors are not
  kept here: the index is their one home (``Retriever.vectors``), so a re-index with
  another model can never leave a stale copy behind.
* ``item_stats(product_id, views, clicks, carts, purchases)`` - interaction counts kept by
  triggers on ``events``: incremented for each row actually inserted, decremented for each
  row deleted, so :meth:`ProfileStore.forget` removes a user's contribution exactly.

* ``forgotten(tombstone, at)`` - users erased by :meth:`ProfileStore.forget`, as a keyed
  hash of their pseudonym (:meth:`Pseudonymizer.tombstone`; nothing else, and never the
  pseudonym itself). :meth:`ProfileStore.ingest` skips their
  events, so re-ingesting a log (the documented crash recovery) does not bring them back.

Privacy: :meth:`ProfileStore.forget` deletes every row of the user, decrements the counts,
drops count rows that reach zero, records the tombstone and truncates the WAL.
``secure_delete`` overwrites the freed content with zeros, so no trace of the user's rows
stays in the file even without ``VACUUM`` (``forget(..., vacuum=True)`` also shrinks the
file; it rewrites the whole database, so it is off by default). While another connection
reads an older snapshot the WAL cannot be checkpointed and the old pages stay in the files:
``forget`` then raises :class:`ForgetIncomplete` (the deletion itself stands) instead of
reporting success; running it again once the reader is gone completes it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from catalog.schema import CATEGORY_SEPARATOR, Product, normalize_category
from core.errors import ForgetIncomplete, ShopsearchError
from personalization.events import EVENT_TYPES, MAX_CLOCK_SKEW_S, PRODUCT_EVENTS, Event
from personalization.privacy import Pseudonymizer

SCHEMA_VERSION = 2  # 2: the forgotten table (older code would not honour it)
#: How much each interaction counts towards affinities.
EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
DEFAULT_HALF_LIFE_DAYS = 30.0
DEFAULT_MAX_EVENTS = 200
MAX_RECENT_ITEMS = 20
#: Pseudo-count of the popularity smoothing (how many exposures the prior is worth).
DEFAULT_POPULARITY_ALPHA = 10.0
#: How long :meth:`ProfileStore.forget` waits for other readers before giving up.
CHECKPOINT_WAIT_S = 5.0
#: How long a statement waits for another process's write lock before the store is "busy".
BUSY_TIMEOUT_S = 10.0
_PLENTY_FREE_BYTES = 1 << 30  # with this much free, "disk is full" means a damaged file
_DAY = 86400.0
_IN_CHUNK = 500

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    pseudonym TEXT NOT NULL,
    ts REAL NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    event TEXT NOT NULL CHECK (event IN ({", ".join(f"'{e}'" for e in EVENT_TYPES)})),
    product_id TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL DEFAULT '',
    position INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_user_time
    ON events (pseudonym, ts, event, product_id, query);
CREATE TABLE IF NOT EXISTS items (
    product_id TEXT PRIMARY KEY,
    brand TEXT,
    category TEXT,
    price REAL
);
CREATE TABLE IF NOT EXISTS item_stats (
    product_id TEXT PRIMARY KEY,
    views INTEGER NOT NULL DEFAULT 0,
    clicks INTEGER NOT NULL DEFAULT 0,
    carts INTEGER NOT NULL DEFAULT 0,
    purchases INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS forgotten (
    tombstone TEXT PRIMARY KEY,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS events_stats_insert AFTER INSERT ON events
WHEN NEW.event != 'search' BEGIN
    INSERT INTO item_stats (product_id, views, clicks, carts, purchases)
    VALUES (NEW.product_id, NEW.event = 'view', NEW.event = 'click',
            NEW.event = 'add_to_cart', NEW.event = 'purchase')
    ON CONFLICT (product_id) DO UPDATE SET
        views = views + excluded.views,
        clicks = clicks + excluded.clicks,
        carts = carts + excluded.carts,
        purchases = purchases + excluded.purchases;
END;
CREATE TRIGGER IF NOT EXISTS events_stats_delete AFTER DELETE ON events
WHEN OLD.event != 'search' BEGIN
    UPDATE item_stats SET
        views = views - (OLD.event = 'view'),
        clicks = clicks - (OLD.event = 'click'),
        carts = carts - (OLD.event = 'add_to_cart'),
        purchases = purchases - (OLD.event = 'purchase')
    WHERE product_id = OLD.product_id;
END;
"""
_INSERT_EVENT = (
    "INSERT INTO events (pseudonym, ts, session, event, product_id, query, position) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_PRODUCT_EVENT_SQL = ", ".join(f"'{e}'" for e in PRODUCT_EVENTS)
_PROFILE_COLUMNS = (
    "SELECT e.ts, e.event, e.product_id, i.brand, i.category, i.price "
    "FROM events AS e LEFT JOIN items AS i ON i.product_id = e.product_id "
)
_PROFILE_BEFORE_SQL = (
    _PROFILE_COLUMNS + f"WHERE e.pseudonym = ? AND e.ts < ? AND e.event IN ({_PRODUCT_EVENT_SQL}) "
    "ORDER BY e.ts DESC LIMIT ?"
)
_UPSERT_ITEM = (
    "INSERT INTO items (product_id, brand, category, price) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (product_id) DO UPDATE SET brand = excluded.brand, "
    "category = excluded.category, price = excluded.price"
)


@dataclass(frozen=True)
class IngestSummary:
    """What :meth:`ProfileStore.ingest` did.

    Attributes:
        added: Events stored.
        duplicates: Events already stored (skipped).
        users: Distinct users among the ingested events.
        forgotten: Events of users erased by :meth:`ProfileStore.forget` (skipped).
    """

    added: int
    duplicates: int
    users: int
    forgotten: int = 0


@dataclass(frozen=True)
class UserProfile:
    """A user's interests at a point in time, from their most recent interactions.

    Affinities weight each interaction by :data:`EVENT_WEIGHTS` times an exponential time
    decay ``0.5 ** (age / half_life)`` (age relative to ``as_of``).

    Attributes:
        pseudonym: The user's pseudonym.
        n_events: Interactions (view/click/add_to_cart/purchase) the profile is built from.
        brand_affinity: Brand -> weight share; values sum to 1 (``{}`` without brands).
        category_affinity: Category path prefix -> share of the weight of interactions
            under that prefix (every level of an item's category is credited). Values nest
            (a parent is >= each child); the top-level values sum to 1.
        price_mean_log: Weighted mean of ``log(price)`` of priced items, or None.
        price_std_log: Weighted standard deviation of ``log(price)``, or None.
        recent_items: Product ids, most recent first, deduplicated, at most 20.
        interactions: Product id -> event type -> count (undecayed).
        as_of: The reference time of the decay (``before``, else the latest event that is
            not in the future).
    """

    pseudonym: str
    n_events: int
    brand_affinity: dict[str, float] = field(default_factory=dict)
    category_affinity: dict[str, float] = field(default_factory=dict)
    price_mean_log: float | None = None
    price_std_log: float | None = None
    recent_items: tuple[str, ...] = ()
    interactions: dict[str, dict[str, int]] = field(default_factory=dict)
    as_of: float | None = None

    @property
    def is_cold(self) -> bool:
        """True when there is no interaction to personalise from."""
        return self.n_events == 0


def is_warm(profile: UserProfile | None) -> bool:
    """True for a shopper with interactions to personalise from (not anonymous, not cold).

    The one test of it: the personal features, the taste vector and the explanations all ask
    this, so an anonymous and a cold shopper get exactly the relevance-only ranking.
    """
    return profile is not None and not profile.is_cold


class ProfileStore:
    """Event store, profiles and popularity on one SQLite file.

    Safe to share between threads (calls are serialised); several processes may open the
    same file (SQLite WAL: readers never block the writer).

    Args:
        path: The SQLite file (created with mode 0600, parent directories too).
        half_life_days: Half-life of the affinity time decay.
        popularity_alpha: Pseudo-count of the popularity smoothing.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
        popularity_alpha: float = DEFAULT_POPULARITY_ALPHA,
    ) -> None:
        if half_life_days <= 0:
            raise ShopsearchError(f"half_life_days must be positive, got {half_life_days}")
        if popularity_alpha <= 0:
            raise ShopsearchError(f"popularity_alpha must be positive, got {popularity_alpha}")
        self.path = Path(path)
        self.half_life_days = float(half_life_days)
        self.popularity_alpha = float(popularity_alpha)
        self._lock = threading.Lock()
        self._prior: tuple[tuple[int, int], float] | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            self._setup()
        except sqlite3.DatabaseError as exc:
            raise _store_error(self.path, exc) or ShopsearchError(
                f"{self.path}: not a usable profile store ({exc})"
            ) from None

    def _setup(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ShopsearchError(
                f"{self.path}: profile store schema {version} is newer than this shopsearch "
                f"({SCHEMA_VERSION}); upgrade shopsearch"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------

    def ingest(
        self, events: Iterable[Event], pseudonymizer: Pseudonymizer, chunk_size: int = 5000
    ) -> IngestSummary:
        """Store events under their users' pseudonyms; already stored events are skipped.

        Each chunk is its own transaction, so an interrupted ingest keeps the chunks before
        it and running it again completes it (nothing is counted twice).

        Raises:
            ValueError: An event has an unknown type or lacks a required product id
                (events from :func:`personalization.events.read_events` never do).
        """
        pseudonyms: dict[str, str] = {}
        sessions: dict[str, str] = {}
        added = total = skipped = 0
        for chunk in _chunks(events, chunk_size):
            rows = event_rows(chunk, pseudonymizer, pseudonyms, sessions)
            with self._lock, self._guard(), self._transaction():
                # inside the write transaction: a concurrent forget cannot slip in between
                erased = self._forgotten({row[0] for row in rows}, pseudonymizer)
                if erased:
                    kept = [row for row in rows if row[0] not in erased]
                    skipped += len(rows) - len(kept)
                    rows = kept
                added += self._conn.executemany(_INSERT_EVENT, rows).rowcount
            total += len(rows)
        if added:
            self._prior = None
        return IngestSummary(
            added=added, duplicates=total - added, users=len(pseudonyms), forgotten=skipped
        )

    def upsert_items(self, records: Iterable[Product | Mapping[str, Any]]) -> int:
        """Insert or update what the features need about products.

        Args:
            records: :class:`~catalog.schema.Product` objects, or mappings with
                ``product_id`` and optional ``brand``, ``category`` and ``price`` (other
                keys, such as a product store payload's, are ignored).

        Returns:
            The number of records written.
        """
        rows = [_item_row(r) for r in records]
        with self._lock, self._guard(), self._transaction():
            self._conn.executemany(_UPSERT_ITEM, rows)
        return len(rows)

    def forget(self, user_id: str, pseudonymizer: Pseudonymizer, vacuum: bool = False) -> int:
        """Delete every stored event of a user and their contribution to item counts.

        The user's pseudonym is kept as a tombstone, so later ingests skip their events.
        The id is normalised as at ingest; the pseudonym of the id exactly as given (how
        stores written before normalisation keyed it) is deleted too.

        Args:
            user_id: The raw user id (only its pseudonyms are used).
            pseudonymizer: The pseudonymizer the events were ingested with.
            vacuum: Also ``VACUUM`` (shrinks the file; rewrites the whole database).

        Returns:
            The number of events removed.

        Raises:
            ForgetIncomplete: Another connection kept the WAL from being checkpointed
                within :data:`CHECKPOINT_WAIT_S`: the rows are deleted and tombstoned,
                but old copies remain in the files until a later ``forget`` completes.
        """
        pseudonym = pseudonymizer.pseudonym(user_id)
        legacy = {
            pseudonymizer.raw_pseudonym(user_id),
            pseudonymizer.raw_pseudonym(user_id.strip()),
        }
        everyone = sorted({pseudonym, *legacy})
        marks = ", ".join("?" * len(everyone))
        with self._lock, self._guard():
            with self._transaction():
                removed = self._conn.execute(
                    f"DELETE FROM events WHERE pseudonym IN ({marks})", everyone
                ).rowcount
                self._conn.execute(
                    "DELETE FROM item_stats "
                    "WHERE views <= 0 AND clicks <= 0 AND carts <= 0 AND purchases <= 0"
                )
                self._conn.execute(
                    "INSERT INTO forgotten (tombstone, at) VALUES (?, ?) "
                    "ON CONFLICT (tombstone) DO NOTHING",
                    (pseudonymizer.tombstone(pseudonym), time.time()),
                )
            self._prior = None
        # the wait for readers holds the store's lock one attempt at a time, so the worker's
        # other requests (ingest, profiles) go on meanwhile
        clean = self._checkpoint()
        if vacuum and clean:
            with self._lock, self._guard():
                self._conn.execute("VACUUM")
            clean = self._checkpoint()
        if not clean:
            raise ForgetIncomplete(
                f"{self.path}: the user's {removed} stored events are deleted and their "
                "future events will be skipped, but old copies stay in the database files "
                "while another process reads the store: close it and run forget-user again"
            )
        return removed

    def is_forgotten(self, user_id: str, pseudonymizer: Pseudonymizer) -> bool:
        """True when :meth:`forget` has erased this user (their events are skipped)."""
        pseudonym = pseudonymizer.pseudonym(user_id)
        with self._lock, self._guard():
            return bool(self._forgotten({pseudonym}, pseudonymizer))

    def forgotten_pseudonyms(
        self, pseudonyms: Iterable[str], pseudonymizer: Pseudonymizer
    ) -> set[str]:
        """Which of these pseudonyms belong to shoppers :meth:`forget` erased (what reads a
        service's search log, whose rows carry pseudonyms, filters by)."""
        with self._lock, self._guard():
            return self._forgotten(set(pseudonyms), pseudonymizer)

    # -- reads ---------------------------------------------------------------------------

    def profile(
        self, pseudonym: str, before: float | None = None, max_events: int = DEFAULT_MAX_EVENTS
    ) -> UserProfile:
        """A user's profile from their latest interactions, as it was at time ``before``.

        Args:
            pseudonym: The user's pseudonym (:meth:`Pseudonymizer.pseudonym`).
            before: Only events with ``ts < before`` count (point-in-time for training);
                None: all events.
            max_events: The most recent interactions to use.

        Returns:
            The profile; ``n_events == 0`` for unknown or cold users.
        """
        if max_events < 1:
            raise ShopsearchError(f"max_events must be at least 1, got {max_events}")
        # None: everything up to now (plus the clock skew events may have). An event
        # stamped later (a wrong device clock) would otherwise be "the latest" and decay
        # every real interaction away.
        until = time.time() + MAX_CLOCK_SKEW_S if before is None else float(before)
        params = (pseudonym, until, max_events)
        with self._lock, self._guard():
            rows = self._conn.execute(_PROFILE_BEFORE_SQL, params).fetchall()
        return build_profile(pseudonym, rows, before, self.half_life_days * _DAY)

    def popularity(self, product_ids: Iterable[str]) -> dict[str, float]:
        """Smoothed engagement rate of products.

        ``popularity = (engagement + alpha * prior) / (exposure + alpha)`` where
        ``engagement = clicks + 2 * carts + 3 * purchases``, ``exposure = max(views, clicks)``
        (a click implies the product was seen even when no view was logged), ``alpha`` is
        :attr:`popularity_alpha` and ``prior`` is the same ratio over all products
        (0 without data). Products without interactions get ``prior``; values are >= 0,
        typically well below 1.
        """
        ids = list(dict.fromkeys(product_ids))
        alpha = self.popularity_alpha
        with self._lock, self._guard():
            prior = self._prior_rate()
            stats: dict[str, tuple[int, int, int, int]] = {}
            for start in range(0, len(ids), _IN_CHUNK):
                part = ids[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(part))
                for pid, views, clicks, carts, purchases in self._conn.execute(
                    "SELECT product_id, views, clicks, carts, purchases FROM item_stats "
                    f"WHERE product_id IN ({marks})",
                    part,
                ):
                    stats[pid] = (views, clicks, carts, purchases)
        out: dict[str, float] = {}
        for pid in ids:
            views, clicks, carts, purchases = stats.get(pid, (0, 0, 0, 0))
            engagement = clicks + 2 * carts + 3 * purchases
            out[pid] = (engagement + alpha * prior) / (max(views, clicks) + alpha)
        return out

    def item_stats(self, product_id: str) -> tuple[int, int, int, int] | None:
        """``(views, clicks, carts, purchases)`` of a product, or None without interactions."""
        with self._lock, self._guard():
            row = self._conn.execute(
                "SELECT views, clicks, carts, purchases FROM item_stats WHERE product_id = ?",
                (product_id,),
            ).fetchone()
        return tuple(row) if row else None

    def count_events(self, pseudonym: str | None = None) -> int:
        """Stored events, of one pseudonym or of everybody."""
        with self._lock, self._guard():
            if pseudonym is None:
                return self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            return self._conn.execute(
                "SELECT COUNT(*) FROM events WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()[0]

    # -- internals -----------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn a damaged, full or busy database into a one-line error naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            error = _store_error(self.path, exc)
            if error is None:
                raise
            raise error from None

    def _forgotten(self, pseudonyms: Iterable[str], pseudonymizer: Pseudonymizer) -> set[str]:
        """Which of these pseudonyms belong to erased users."""
        by_tombstone = {pseudonymizer.tombstone(p): p for p in pseudonyms}
        ids = list(by_tombstone)
        found: set[str] = set()
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(part))
            found.update(
                by_tombstone[row[0]]
                for row in self._conn.execute(
                    f"SELECT tombstone FROM forgotten WHERE tombstone IN ({marks})", part
                )
            )
        return found

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it; False if readers kept it."""
        deadline = time.monotonic() + CHECKPOINT_WAIT_S
        while True:
            with self._lock, self._guard():
                # one try, not sqlite's busy wait (the connection's 10 s timeout): the wait is
                # this loop's, between tries, with the lock free
                self._conn.execute("PRAGMA busy_timeout = 0")
                try:
                    row = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            busy = row[0]
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _prior_rate(self) -> float:
        """Global engagement / exposure, cached until this or another connection writes."""
        key = (
            self._conn.execute("PRAGMA data_version").fetchone()[0],
            self._conn.total_changes,
        )
        if self._prior is not None and self._prior[0] == key:
            return self._prior[1]
        engagement, exposure = self._conn.execute(
            "SELECT TOTAL(clicks + 2 * carts + 3 * purchases), TOTAL(MAX(views, clicks)) "
            "FROM item_stats"
        ).fetchone()
        rate = engagement / exposure if exposure > 0 else 0.0
        self._prior = (key, rate)
        return rate


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _store_error(path: Path, exc: sqlite3.DatabaseError) -> ShopsearchError | None:
    """A one-line error for a database problem the user must act on; None for a bug."""
    message = str(exc)
    lower = message.lower()
    check = (
        f"check it with: sqlite3 {path} 'PRAGMA integrity_check', and restore it from a "
        "backup (rebuilding it from event logs would bring back forgotten users)"
    )
    if "locked" in lower or "busy" in lower:
        return ShopsearchError(
            f"{path}: the profile store is busy (another process is writing to it); try again"
        )
    if "not a database" in lower:
        return ShopsearchError(
            f"{path}: not a usable profile store ({message}); restore it from a backup"
        )
    if "malformed" in lower or "corrupt" in lower:
        return ShopsearchError(f"{path}: the profile store is damaged ({message}); {check}")
    if "disk is full" in lower or "i/o error" in lower:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free > _PLENTY_FREE_BYTES:  # SQLite says "full" on some damage
            return ShopsearchError(
                f"{path}: the profile store is damaged ({message}, yet the disk has "
                f"{free // 2**20} MiB free); {check}"
            )
        return ShopsearchError(
            f"{path}: cannot use the profile store ({message}): free disk space if it is "
            f"full; if it is not, the file is damaged: {check}"
        )
    return None


def build_profile(
    pseudonym: str,
    rows: Sequence[tuple[float, str, str, str | None, str | None, float | None]],
    before: float | None,
    half_life_s: float,
) -> UserProfile:
    """Build a profile from interactions, most recent first.

    Args:
        pseudonym: The user's pseudonym.
        rows: ``(ts, event, product_id, brand, category, price)``, newest first.
        before: Reference time of the decay; None: the newest row's time.
        half_life_s: Half-life of the decay, in seconds.
    """
    if not rows:
        return UserProfile(pseudonym=pseudonym, n_events=0, as_of=before)
    as_of = float(before) if before is not None else float(rows[0][0])
    rate = math.log(2.0) / half_life_s
    brands: dict[str, float] = {}
    categories: dict[str, float] = {}
    categorised = 0.0
    price_w = price_s1 = price_s2 = 0.0
    interactions: dict[str, dict[str, int]] = {}
    recent: list[str] = []
    for ts, event, product_id, brand, category, price in rows:
        weight = EVENT_WEIGHTS[event] * math.exp(-rate * max(as_of - ts, 0.0))
        counts = interactions.get(product_id)
        if counts is None:
            counts = interactions[product_id] = {}
            if len(recent) < MAX_RECENT_ITEMS:
                recent.append(product_id)
        counts[event] = counts.get(event, 0) + 1
        if brand:
            brands[brand] = brands.get(brand, 0.0) + weight
        if category:
            categorised += weight
            for level in category_levels(category):
                categories[level] = categories.get(level, 0.0) + weight
        if price is not None and price > 0:
            x = math.log(price)
            price_w += weight
            price_s1 += weight * x
            price_s2 += weight * x * x
    mean = std = None
    if price_w > 0:
        mean = price_s1 / price_w
        std = math.sqrt(max(price_s2 / price_w - mean * mean, 0.0))
    return UserProfile(
        pseudonym=pseudonym,
        n_events=len(rows),
        brand_affinity=_normalised(brands, sum(brands.values())),
        category_affinity=_normalised(categories, categorised),
        price_mean_log=mean,
        price_std_log=std,
        recent_items=tuple(recent),
        interactions=interactions,
        as_of=as_of,
    )


@lru_cache(maxsize=65536)
def category_levels(category: str) -> tuple[str, ...]:
    """Every prefix of a category path, shortest first (as ``Product.category_levels``)."""
    parts = category.split(CATEGORY_SEPARATOR)
    return tuple(CATEGORY_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts)))


def _normalised(weights: dict[str, float], total: float) -> dict[str, float]:
    if total <= 0:
        return {}
    return {k: v / total for k, v in weights.items()}


def _item_row(record: Product | Mapping[str, Any]) -> tuple[Any, ...]:
    if isinstance(record, Product):
        return (record.product_id, record.brand, record.category, record.price)
    product_id = record.get("product_id")
    if product_id is None or str(product_id).strip() == "":
        raise ValueError("an item record needs a product_id")
    category = record.get("category")
    if isinstance(category, (list, tuple)):
        category = CATEGORY_SEPARATOR.join(str(c) for c in category)
    category = normalize_category(str(category)) or None if category else None
    price = record.get("price")
    price = float(price) if price is not None else None
    brand = record.get("brand")
    return (str(product_id).strip(), str(brand) if brand else None, category, price)


def event_rows(
    events: Iterable[Event],
    pseudonymizer: Pseudonymizer,
    pseudonyms: dict[str, str],
    sessions: dict[str, str],
) -> list[tuple[str, float, str, str, str, str, int | None]]:
    """Events as stored rows ``(pseudonym, ts, session, event, product_id, query, position)``
    (every profile store's ingest; ``pseudonyms`` and ``sessions`` cache the keyed hashes
    across chunks).

    Raises:
        ValueError: An unknown event type, or a product event without a product id.
    """
    rows = []
    for event in events:
        if event.event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event.event!r}")
        if event.event != "search" and not event.product_id:
            raise ValueError(f"a {event.event} event needs a product_id")
        pseudonym = pseudonyms.get(event.user_id)
        if pseudonym is None:
            pseudonym = pseudonyms[event.user_id] = pseudonymizer.pseudonym(event.user_id)
        session = sessions.get(event.session_id)
        if session is None:
            if len(sessions) > 100_000:
                sessions.clear()
            session = sessions[event.session_id] = pseudonymizer.session_pseudonym(event.session_id)
        rows.append(
            (
                pseudonym,
                float(event.timestamp),
                session,
                event.event,
                event.product_id or "",
                event.query or "",
                event.position,
            )
        )
    return rows


def _chunks(items: Iterable[Event], size: int) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
