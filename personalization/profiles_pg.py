"""The profile store on a PostgreSQL server, shared by several service processes and machines.

:class:`PostgresProfileStore` has the public methods and the semantics of
:class:`personalization.profiles.ProfileStore` (the embedded SQLite store, the default for one
machine): idempotent re-ingest, item counts kept exact by triggers, tombstones for erased
shoppers, pseudonyms only. It is what ``--profiles postgresql://...`` opens
(:func:`personalization.ingest.open_profiles`); every replica given the same URL sees the same
shoppers, so an event posted to one changes the next search on another.

Why PostgreSQL (measured by ``shopsearch bench-profiles``, docs/benchmarks/profiles.md): the
store is relational (a per-shopper time index, a join with the items, counts kept with the rows
in one transaction, a unique key that makes re-ingest a no-op), which PostgreSQL keeps as it is,
with the same SQL; Redis would need the counts, the idempotence and the tombstone check
re-built in Lua scripts.

Tables (schema ``shopsearch``): ``events``, ``items``, ``item_stats``, ``forgotten`` as in the
SQLite store, plus ``meta`` (the schema version). ``item_stats`` is kept by statement-level
triggers over the rows a statement actually inserted or deleted (transition tables), one
update per product, in product order (two replicas ingesting at once cannot deadlock).

Concurrency: reads are single statements on pooled autocommit connections (psycopg 3 and
psycopg_pool: a well-kept driver and its pool). Ingest takes a shared advisory lock and
``forget`` an exclusive one, so an ingest that has checked the tombstones cannot store a
shopper a concurrent ``forget`` has just erased; ingests do not wait for each other.

Privacy: only pseudonyms are stored (sessions too). ``forget`` deletes the shopper's rows,
subtracts their counts and records the tombstone in one transaction (no reader sees them
after it commits), then runs ``VACUUM`` on the tables so the dead row versions are pruned
(``vacuum=True``: ``VACUUM FULL``, which rewrites the tables; it locks them while it runs,
so the replicas' reads wait). PostgreSQL may keep the pruned bytes in free space of data
pages and in write-ahead log segments until they are reused; those hold pseudonyms only.

Credentials: give the password in ``PGPASSWORD`` (or a ``~/.pgpass`` file), not in the URL:
a URL on the command line shows in the process list. Errors name the server without it.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from catalog.schema import Product
from core.errors import ShopsearchError, first_line
from personalization.events import EVENT_TYPES, MAX_CLOCK_SKEW_S, PRODUCT_EVENTS, Event
from personalization.privacy import Pseudonymizer
from personalization.profiles import (
    _DAY,
    DEFAULT_HALF_LIFE_DAYS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_POPULARITY_ALPHA,
    IngestSummary,
    UserProfile,
    _chunks,
    _item_row,
    build_profile,
    event_rows,
)

SCHEMA_VERSION = 2  # the SQLite store's version: the same tables and meaning
URL_SCHEMES = ("postgresql://", "postgres://")
#: How long a caller waits for a pooled connection (or the first connection) before an error.
CONNECT_TIMEOUT_S = 10.0
#: Connections a process keeps at most (the service's worker threads share them).
DEFAULT_POOL_SIZE = 8
#: How long a popularity prior (global engagement rate) computed here is reused. Writes by
#: this process drop it at once; other replicas' writes are seen within this many seconds.
PRIOR_TTL_S = 1.0
#: Advisory lock keys (pg_advisory_*): the schema set-up, and ingest (shared) vs forget.
_SETUP_LOCK = 0x5E0501
_WRITE_LOCK = 0x5E0502

_EVENT_LIST = ", ".join(f"'{e}'" for e in EVENT_TYPES)
_PRODUCT_EVENT_LIST = ", ".join(f"'{e}'" for e in PRODUCT_EVENTS)
_COUNTS = (
    "count(*) FILTER (WHERE event = 'view') AS views, "
    "count(*) FILTER (WHERE event = 'click') AS clicks, "
    "count(*) FILTER (WHERE event = 'add_to_cart') AS carts, "
    "count(*) FILTER (WHERE event = 'purchase') AS purchases"
)
_SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS shopsearch;
CREATE TABLE IF NOT EXISTS shopsearch.meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS shopsearch.events (
    pseudonym text NOT NULL,
    ts double precision NOT NULL,
    session text NOT NULL DEFAULT '',
    event text NOT NULL CHECK (event IN ({_EVENT_LIST})),
    product_id text NOT NULL DEFAULT '',
    query text NOT NULL DEFAULT '',
    position integer
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_user_time
    ON shopsearch.events (pseudonym, ts, event, product_id, query);
CREATE TABLE IF NOT EXISTS shopsearch.items (
    product_id text PRIMARY KEY, brand text, category text, price double precision
);
CREATE TABLE IF NOT EXISTS shopsearch.item_stats (
    product_id text PRIMARY KEY,
    views bigint NOT NULL DEFAULT 0,
    clicks bigint NOT NULL DEFAULT 0,
    carts bigint NOT NULL DEFAULT 0,
    purchases bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shopsearch.forgotten (
    tombstone text PRIMARY KEY, at double precision NOT NULL
);
CREATE OR REPLACE FUNCTION shopsearch.stats_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shopsearch.item_stats AS s (product_id, views, clicks, carts, purchases)
    SELECT product_id, {_COUNTS} FROM added WHERE event <> 'search'
    GROUP BY product_id ORDER BY product_id
    ON CONFLICT (product_id) DO UPDATE SET
        views = s.views + excluded.views, clicks = s.clicks + excluded.clicks,
        carts = s.carts + excluded.carts, purchases = s.purchases + excluded.purchases;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION shopsearch.stats_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE shopsearch.item_stats AS s SET
        views = s.views - d.views, clicks = s.clicks - d.clicks,
        carts = s.carts - d.carts, purchases = s.purchases - d.purchases
    FROM (SELECT product_id, {_COUNTS} FROM removed WHERE event <> 'search'
          GROUP BY product_id) AS d
    WHERE s.product_id = d.product_id;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER events_stats_insert AFTER INSERT ON shopsearch.events
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION shopsearch.stats_added();
CREATE OR REPLACE TRIGGER events_stats_delete AFTER DELETE ON shopsearch.events
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
    EXECUTE FUNCTION shopsearch.stats_removed();
"""
# one statement per chunk, rows in the unique key's order (two replicas storing the same
# events take the index's locks in one order); duplicates inside the chunk are skipped too
_INSERT_EVENTS = (
    "INSERT INTO shopsearch.events (pseudonym, ts, session, event, product_id, query, position) "
    "SELECT * FROM unnest(%s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::int[]) AS r(pseudonym, ts, session, event, product_id, query, position) "
    "ORDER BY pseudonym, ts, event, product_id, query ON CONFLICT DO NOTHING"
)
_PROFILE_SQL = (
    "SELECT e.ts, e.event, e.product_id, i.brand, i.category, i.price "
    "FROM shopsearch.events AS e LEFT JOIN shopsearch.items AS i ON i.product_id = e.product_id "
    f"WHERE e.pseudonym = %s AND e.ts < %s AND e.event IN ({_PRODUCT_EVENT_LIST}) "
    "ORDER BY e.ts DESC LIMIT %s"
)
_UPSERT_ITEMS = (
    "INSERT INTO shopsearch.items (product_id, brand, category, price) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[]) "
    "ON CONFLICT (product_id) DO UPDATE SET brand = excluded.brand, "
    "category = excluded.category, price = excluded.price"
)


def is_store_url(location: object) -> bool:
    """True when a ``--profiles`` value names a PostgreSQL server rather than a directory."""
    return isinstance(location, str) and location.strip().lower().startswith(URL_SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password (``postgresql://user@host:5432/db``), for messages."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = "&".join(
        pair for pair in parts.query.split("&") if pair.split("=", 1)[0].lower() != "password"
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PostgresProfileStore:
    """Event store, profiles and popularity on a PostgreSQL server (schema ``shopsearch``).

    Safe to share between threads (a pool of connections); any number of processes on any
    number of machines may open the same database. Needs the ``postgres`` extra
    (``pip install 'shopsearch[postgres]'``).

    Args:
        url: ``postgresql://[user@]host[:port]/database`` (libpq's URL; the password from
            ``PGPASSWORD`` or ``~/.pgpass``). The tables are created when missing.
        half_life_days: Half-life of the affinity time decay.
        popularity_alpha: Pseudo-count of the popularity smoothing.
        pool_size: Connections kept at most by this process.

    Raises:
        ShopsearchError: psycopg is not installed, the server cannot be reached within
            :data:`CONNECT_TIMEOUT_S`, or its store was written by a newer shopsearch.
    """

    def __init__(
        self,
        url: str,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
        popularity_alpha: float = DEFAULT_POPULARITY_ALPHA,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if half_life_days <= 0:
            raise ShopsearchError(f"half_life_days must be positive, got {half_life_days}")
        if popularity_alpha <= 0:
            raise ShopsearchError(f"popularity_alpha must be positive, got {popularity_alpha}")
        try:
            import psycopg
            from psycopg_pool import ConnectionPool, PoolTimeout
        except ImportError:
            raise ShopsearchError(
                "a postgresql:// profile store needs psycopg: pip install 'shopsearch[postgres]'"
            ) from None
        self.url = url.strip()
        self.display = redacted(self.url)
        self.half_life_days = float(half_life_days)
        self.popularity_alpha = float(popularity_alpha)
        self._prior: tuple[float, float] | None = None  # (computed at, rate)
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_S,
            open=False,
            name="shopsearch-profiles",
        )
        try:
            with self._guard():
                try:
                    self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
                except PoolTimeout:
                    # the pool logs why; one direct try says it in the error (or works now)
                    psycopg.connect(self.url, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
                    raise
                self._setup()
        except BaseException:
            self._pool.close()
            raise

    def _setup(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))  # replicas at once
            found = conn.execute("SELECT to_regclass('shopsearch.meta') IS NOT NULL").fetchone()[0]
            if found:
                row = conn.execute(
                    "SELECT value FROM shopsearch.meta WHERE name = 'schema_version'"
                ).fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise ShopsearchError(
                        f"{self.display}: profile store schema {row[0]} is newer than this "
                        f"shopsearch ({SCHEMA_VERSION}); upgrade shopsearch"
                    )
            conn.execute(_SCHEMA)
            conn.execute(
                "INSERT INTO shopsearch.meta (name, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()

    def __enter__(self) -> PostgresProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresProfileStore({self.display!r})"

    # -- writes --------------------------------------------------------------------------

    def ingest(
        self, events: Iterable[Event], pseudonymizer: Pseudonymizer, chunk_size: int = 5000
    ) -> IngestSummary:
        """Store events under their users' pseudonyms; already stored events are skipped.

        As :meth:`personalization.profiles.ProfileStore.ingest`: each chunk is one
        transaction (an interrupted ingest run again completes it, nothing counted twice);
        events of erased shoppers are skipped and counted.

        Raises:
            ValueError: An event has an unknown type or lacks a required product id.
            ShopsearchError: The server cannot be reached.
        """
        pseudonyms: dict[str, str] = {}
        sessions: dict[str, str] = {}
        added = total = skipped = 0
        for chunk in _chunks(events, chunk_size):
            rows = event_rows(chunk, pseudonymizer, pseudonyms, sessions)
            with self._guard(), self._pool.connection() as conn, conn.transaction():
                # shared: ingests run side by side; a forget (exclusive) waits for them, and
                # an ingest after it sees its tombstone
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_WRITE_LOCK,))
                erased = self._forgotten(conn, {row[0] for row in rows}, pseudonymizer)
                if erased:
                    kept = [row for row in rows if row[0] not in erased]
                    skipped += len(rows) - len(kept)
                    rows = kept
                if rows:
                    columns = [list(column) for column in zip(*rows, strict=True)]
                    added += conn.execute(_INSERT_EVENTS, columns).rowcount
            total += len(rows)
        if added:
            self._prior = None
        return IngestSummary(
            added=added, duplicates=total - added, users=len(pseudonyms), forgotten=skipped
        )

    def upsert_items(self, records: Iterable[Product | Mapping[str, Any]]) -> int:
        """Insert or update what the features need about products (brand, category, price).

        Args:
            records: :class:`~catalog.schema.Product` objects or mappings with ``product_id``
                (as :meth:`personalization.profiles.ProfileStore.upsert_items`).

        Returns:
            The number of records written.
        """
        rows = [_item_row(r) for r in records]
        if not rows:
            return 0
        # one row per product (the last one given), in id order: one statement cannot update
        # a row twice, and replicas upserting together take the rows' locks in one order
        latest = {row[0]: row for row in rows}
        columns = [list(c) for c in zip(*(latest[k] for k in sorted(latest)), strict=True)]
        with self._guard(), self._pool.connection() as conn:
            conn.execute(_UPSERT_ITEMS, columns)
        return len(rows)

    def forget(self, user_id: str, pseudonymizer: Pseudonymizer, vacuum: bool = False) -> int:
        """Delete every stored event of a user and their contribution to item counts.

        As :meth:`personalization.profiles.ProfileStore.forget`: the rows of the user's
        pseudonym (and of the id exactly as given) go, counts are decremented (rows reaching
        zero dropped), a tombstone makes later ingests skip them; one transaction. Then the
        tables are vacuumed (``vacuum=True``: ``VACUUM FULL``, rewriting them).

        Returns:
            The number of events removed.
        """
        pseudonym = pseudonymizer.pseudonym(user_id)
        everyone = sorted(
            {
                pseudonym,
                pseudonymizer.raw_pseudonym(user_id),
                pseudonymizer.raw_pseudonym(user_id.strip()),
            }
        )
        with self._guard(), self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                removed = conn.execute(
                    "DELETE FROM shopsearch.events WHERE pseudonym = ANY(%s)", (everyone,)
                ).rowcount
                conn.execute(
                    "DELETE FROM shopsearch.item_stats WHERE views <= 0 AND clicks <= 0 "
                    "AND carts <= 0 AND purchases <= 0"
                )
                conn.execute(
                    "INSERT INTO shopsearch.forgotten (tombstone, at) VALUES (%s, %s) "
                    "ON CONFLICT (tombstone) DO NOTHING",
                    (pseudonymizer.tombstone(pseudonym), time.time()),
                )
            self._prior = None
            full = "(FULL) " if vacuum else ""
            conn.execute(f"VACUUM {full}shopsearch.events, shopsearch.item_stats")
        return removed

    def is_forgotten(self, user_id: str, pseudonymizer: Pseudonymizer) -> bool:
        """True when :meth:`forget` has erased this user (their events are skipped)."""
        pseudonym = pseudonymizer.pseudonym(user_id)
        with self._guard(), self._pool.connection() as conn:
            return bool(self._forgotten(conn, {pseudonym}, pseudonymizer))

    def forgotten_pseudonyms(
        self, pseudonyms: Iterable[str], pseudonymizer: Pseudonymizer
    ) -> set[str]:
        """Which of these pseudonyms belong to shoppers :meth:`forget` erased (what reads a
        service's search log, whose rows carry pseudonyms, filters by)."""
        with self._guard(), self._pool.connection() as conn:
            return self._forgotten(conn, set(pseudonyms), pseudonymizer)

    # -- reads ---------------------------------------------------------------------------

    def profile(
        self, pseudonym: str, before: float | None = None, max_events: int = DEFAULT_MAX_EVENTS
    ) -> UserProfile:
        """A user's profile from their latest interactions, as it was at time ``before``
        (:meth:`personalization.profiles.ProfileStore.profile`: the same rows, the same
        :func:`~personalization.profiles.build_profile`)."""
        if max_events < 1:
            raise ShopsearchError(f"max_events must be at least 1, got {max_events}")
        until = time.time() + MAX_CLOCK_SKEW_S if before is None else float(before)
        with self._guard(), self._pool.connection() as conn:
            rows = conn.execute(_PROFILE_SQL, (pseudonym, until, max_events)).fetchall()
        return build_profile(pseudonym, rows, before, self.half_life_days * _DAY)

    def popularity(self, product_ids: Iterable[str]) -> dict[str, float]:
        """Smoothed engagement rate of products, as
        :meth:`personalization.profiles.ProfileStore.popularity` (the prior, the global
        rate, is reused for :data:`PRIOR_TTL_S` unless this process wrote meanwhile)."""
        ids = list(dict.fromkeys(product_ids))
        alpha = self.popularity_alpha
        with self._guard(), self._pool.connection() as conn:
            prior = self._prior_rate(conn)
            stats = {
                row[0]: row[1:]
                for row in conn.execute(
                    "SELECT product_id, views, clicks, carts, purchases "
                    "FROM shopsearch.item_stats WHERE product_id = ANY(%s)",
                    (ids,),
                )
            }
        out: dict[str, float] = {}
        for pid in ids:
            views, clicks, carts, purchases = stats.get(pid, (0, 0, 0, 0))
            engagement = clicks + 2 * carts + 3 * purchases
            out[pid] = (engagement + alpha * prior) / (max(views, clicks) + alpha)
        return out

    def item_stats(self, product_id: str) -> tuple[int, int, int, int] | None:
        """``(views, clicks, carts, purchases)`` of a product, or None without interactions."""
        with self._guard(), self._pool.connection() as conn:
            row = conn.execute(
                "SELECT views, clicks, carts, purchases FROM shopsearch.item_stats "
                "WHERE product_id = %s",
                (product_id,),
            ).fetchone()
        return tuple(int(v) for v in row) if row else None

    def count_events(self, pseudonym: str | None = None) -> int:
        """Stored events, of one pseudonym or of everybody."""
        with self._guard(), self._pool.connection() as conn:
            if pseudonym is None:
                return conn.execute("SELECT count(*) FROM shopsearch.events").fetchone()[0]
            return conn.execute(
                "SELECT count(*) FROM shopsearch.events WHERE pseudonym = %s", (pseudonym,)
            ).fetchone()[0]

    # -- internals -----------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """An unreachable or refusing server as a one-line error naming it (no password)."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            yield
        except PoolTimeout:
            raise ShopsearchError(
                f"{self.display}: no connection to the profile store within "
                f"{CONNECT_TIMEOUT_S:g} s (is PostgreSQL running and reachable, the user and "
                "password (PGPASSWORD) right?)"
            ) from None
        except psycopg.OperationalError as exc:
            raise ShopsearchError(
                f"{self.display}: cannot use the profile store ({first_line(exc)})"
            ) from None

    def _forgotten(
        self, conn: Any, pseudonyms: Iterable[str], pseudonymizer: Pseudonymizer
    ) -> set[str]:
        by_tombstone = {pseudonymizer.tombstone(p): p for p in pseudonyms}
        rows = conn.execute(
            "SELECT tombstone FROM shopsearch.forgotten WHERE tombstone = ANY(%s)",
            (list(by_tombstone),),
        )
        return {by_tombstone[row[0]] for row in rows}

    def _prior_rate(self, conn: Any) -> float:
        cached = self._prior
        now = time.monotonic()
        if cached is not None and now - cached[0] < PRIOR_TTL_S:
            return cached[1]
        engagement, exposure = conn.execute(
            "SELECT coalesce(sum(clicks + 2 * carts + 3 * purchases), 0), "
            "coalesce(sum(greatest(views, clicks)), 0) FROM shopsearch.item_stats"
        ).fetchone()
        rate = float(engagement) / float(exposure) if exposure > 0 else 0.0
        self._prior = (now, rate)
        return rate


def open_shared_profiles(url: str, key: str | None) -> tuple[PostgresProfileStore, Pseudonymizer]:
    """The store at a ``postgresql://`` URL and the pseudonymizer of ``key`` (required: there
    is no folder to keep a key file in; every replica must use the same key).

    Raises:
        ShopsearchError: No key, a key that is not hex, or the server cannot be reached.
    """
    require_key(url, key)
    pseudonymizer = Pseudonymizer.from_dir(".", key)  # a key given: no file is read or made
    return PostgresProfileStore(url), pseudonymizer


def require_key(url: str, key: str | None) -> None:
    """Refuses a profile store URL without the pseudonym key (one line naming the variable)."""
    from personalization.privacy import KEY_BYTES, KEY_ENV

    if not (key or "").strip():
        raise ShopsearchError(
            f"{redacted(url)}: a profile store on a server has no folder for a key file: set "
            f"{KEY_ENV} to the pseudonym key ({2 * KEY_BYTES} hex characters) every replica uses"
        )
    from personalization.privacy import Pseudonymizer

    Pseudonymizer.from_dir(".", key)  # a key that is not hex, or too short: refused now
