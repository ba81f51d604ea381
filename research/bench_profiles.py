"""``shopsearch bench-profiles``: which shared profile store, by measurement.

What a personalized search asks of the profile store is one read: the shopper's profile (their
latest interactions joined with the items) and the popularity of the candidates (50 by
default). What several replicas add is writes from other processes at the same time
(``POST /events`` on every replica). So, per store, the read's latency is measured three ways,
in one run: with no writer, with another *process* ingesting events at a shop's rate
(``write_rate`` events/s in batches of ``write_batch``, as ``POST /events`` sends them), and
with that process ingesting as fast as it can. The reader is one thread of this process.

Stores:

* ``sqlite``: :class:`personalization.profiles.ProfileStore` on a local file (the baseline:
  one machine; WAL readers never wait for the writer).
* ``postgresql``: :class:`personalization.profiles_pg.PostgresProfileStore` (the shared store
  shopsearch ships), on ``--postgres URL`` or a throw-away server (default settings, fsync on;
  its tables vacuumed and analysed after the fill, as autovacuum would soon do).
* ``redis``: a minimal prototype of the same reads and writes on Redis (:class:`RedisPrototype`:
  a sorted set of events per shopper, item hashes, counts by a Lua script that makes
  re-ingest a no-op), on ``--redis URL`` or a throw-away server (append-only file, fsync each
  second). Enough to measure the access pattern; not a store shopsearch ships.

    run(stores, ...) -> list[StoreLatency]        # what ``bench-profiles`` runs
    markdown(results, ...) -> str                  # its report
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from personalization.events import Event
from personalization.privacy import Pseudonymizer
from personalization.profiles import (
    _DAY,
    DEFAULT_HALF_LIFE_DAYS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_POPULARITY_ALPHA,
    UserProfile,
    build_profile,
)

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "profile-stores"
STORES = ("sqlite", "postgresql", "redis")
PHASES = ("idle", "paced", "flat-out")
_KEY = bytes(range(32))
_TYPES = ("view", "click", "add_to_cart", "purchase")
_TYPE_WEIGHTS = (0.70, 0.20, 0.07, 0.03)
_T0 = 1_767_225_600.0  # 2026-01-01: the preloaded history ends before "now"


@dataclass(frozen=True)
class PhaseLatency:
    """Reads (profile + popularity of the candidates) during one phase, in milliseconds."""

    phase: str
    reads: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    writes_per_s: float  # events the writer process stored per second meanwhile (0: none)


@dataclass(frozen=True)
class StoreLatency:
    """One store's phases, or why it was left out."""

    store: str
    phases: tuple[PhaseLatency, ...] = ()
    skipped: str | None = None
    fill_s: float = 0.0

    def phase(self, name: str) -> PhaseLatency | None:
        return next((p for p in self.phases if p.phase == name), None)


@dataclass(frozen=True)
class Workload:
    """The stored history and the reads/writes of a run."""

    users: int = 10_000
    events_per_user: int = 20
    items: int = 20_000
    candidates: int = 50
    reads: int = 2_000
    write_batch: int = 10
    write_rate: float = 1_000.0
    seconds: float = 10.0
    seed: int = 0


# -- the Redis prototype -------------------------------------------------------------------

_INGEST_LUA = """
local added = 0
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
    local base = 2 + i * 5
    local p, ts, ev, pid, member = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
    if redis.call('SISMEMBER', 'forgotten', p) == 0 then
        if redis.call('ZADD', 'ev:' .. p, 'NX', ts, member) == 1 then
            added = added + 1
            redis.call('HINCRBY', 'stats:' .. pid, ev, 1)
            redis.call('HINCRBY', 'totals', ev, 1)
        end
    end
end
return added
"""


class RedisPrototype:
    """The profile store's reads and writes on Redis, for the measurement only.

    Keys: ``ev:<pseudonym>`` (sorted set by time; members ``ts|event|product_id``, so the
    same event twice is one member), ``item:<id>`` (hash: brand, category, price),
    ``stats:<id>`` (hash of counts per event type), ``totals`` (counts over all items: the
    prior), ``forgotten`` (set). Erasure and its exact counts are left out.
    """

    def __init__(self, url: str, popularity_alpha: float = DEFAULT_POPULARITY_ALPHA) -> None:
        import redis

        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.client.ping()
        self._ingest = self.client.register_script(_INGEST_LUA)
        self.alpha = popularity_alpha

    def close(self) -> None:
        self.client.close()

    def upsert_items(self, items: Iterable[tuple[str, str, str, float]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for pid, brand, category, price in items:
            pipe.hset(f"item:{pid}", mapping={"brand": brand, "category": category, "price": price})
        pipe.execute()

    def ingest(self, events: Sequence[Event], pz: Pseudonymizer) -> int:
        args: list[Any] = [len(events)]
        for e in events:
            p = pz.pseudonym(e.user_id)
            args += [
                p,
                e.timestamp,
                e.event,
                e.product_id,
                f"{e.timestamp!r}|{e.event}|{e.product_id}",
            ]
        return int(self._ingest(args=args))

    def profile(self, pseudonym: str, max_events: int = DEFAULT_MAX_EVENTS) -> UserProfile:
        until = time.time() + 300
        members = self.client.zrevrangebyscore(
            f"ev:{pseudonym}", until, "-inf", start=0, num=max_events
        )
        parsed = [m.split("|", 2) for m in members]
        pids = list(dict.fromkeys(pid for _, _, pid in parsed))
        pipe = self.client.pipeline(transaction=False)
        for pid in pids:
            pipe.hmget(f"item:{pid}", "brand", "category", "price")
        items = dict(zip(pids, pipe.execute(), strict=True))
        rows = []
        for ts, event, pid in parsed:
            brand, category, price = items[pid]
            rows.append((float(ts), event, pid, brand, category, float(price) if price else None))
        return build_profile(pseudonym, rows, None, DEFAULT_HALF_LIFE_DAYS * _DAY)

    def popularity(self, product_ids: Sequence[str]) -> dict[str, float]:
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget("totals", *_TYPES)
        for pid in product_ids:
            pipe.hmget(f"stats:{pid}", *_TYPES)
        totals, *stats = pipe.execute()
        views, clicks, carts, purchases = (int(v or 0) for v in totals)
        exposure = max(views, clicks)
        prior = (clicks + 2 * carts + 3 * purchases) / exposure if exposure else 0.0
        out = {}
        for pid, row in zip(product_ids, stats, strict=True):
            v, c, a, p = (int(x or 0) for x in row)
            out[pid] = (c + 2 * a + 3 * p + self.alpha * prior) / (max(v, c) + self.alpha)
        return out


# -- stores behind one face ------------------------------------------------------------------


class _Store:
    """``read(pseudonym, candidates)`` and ``write(events)`` on one of the three stores."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.pz = Pseudonymizer(_KEY)
        if kind == "sqlite":
            from personalization.profiles import ProfileStore

            self.store: Any = ProfileStore(location)
        elif kind == "postgresql":
            from personalization.profiles_pg import PostgresProfileStore

            self.store = PostgresProfileStore(location)
        else:
            self.store = RedisPrototype(location)

    def read(self, pseudonym: str, candidates: Sequence[str]) -> None:
        self.store.profile(pseudonym)
        self.store.popularity(candidates)

    def write(self, events: Sequence[Event]) -> None:
        self.store.ingest(events, self.pz)

    def items(self, items: list[tuple[str, str, str, float]]) -> None:
        if self.kind == "redis":
            self.store.upsert_items(items)
        else:
            self.store.upsert_items(
                {"product_id": p, "brand": b, "category": c, "price": x} for p, b, c, x in items
            )

    def close(self) -> None:
        self.store.close()


def _items(n: int, rng: random.Random) -> list[tuple[str, str, str, float]]:
    brands = [f"Brand{i}" for i in range(200)]
    return [
        (
            f"P{i:07d}",
            rng.choice(brands),
            f"Dept{rng.randrange(12)} > Aisle{rng.randrange(8)} > Shelf{rng.randrange(6)}",
            round(rng.lognormvariate(3.5, 1.0), 2),
        )
        for i in range(n)
    ]


def _events(
    rng: random.Random, workload: Workload, n: int, t0: float, user_prefix: str
) -> list[Event]:
    out = []
    for i in range(n):
        user = f"{user_prefix}{rng.randrange(workload.users)}@example.com"
        event = rng.choices(_TYPES, _TYPE_WEIGHTS)[0]
        pid = f"P{rng.randrange(workload.items):07d}"
        out.append(Event(user, t0 + i * 1e-3 + rng.random() * 1e-4, "s", event, None, pid, None))
    return out


def _writer(kind: str, location: str, workload: Workload, rate: float, stop, counter) -> None:
    """The other process: ingest batches of events until told to stop (at ``rate`` events/s;
    0: as fast as it can)."""
    rng = random.Random(workload.seed + 7)
    store = _Store(kind, location)
    try:
        start = time.monotonic()
        written = 0
        while not stop.is_set():
            now = time.time()
            store.write(_events(rng, workload, workload.write_batch, now, "shopper"))
            written += workload.write_batch
            with counter.get_lock():
                counter.value = written
            if rate > 0:
                lag = start + written / rate - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
    finally:
        store.close()


def _measure(store: _Store, workload: Workload, rng: random.Random, users: list[str]) -> np.ndarray:
    """Reads back to back: at least ``workload.reads`` of them and ``workload.seconds`` long
    (so a phase spans many of the writer's transactions)."""
    times = []
    ids = [f"P{i:07d}" for i in range(workload.items)]
    until = time.monotonic() + workload.seconds
    while len(times) < workload.reads or time.monotonic() < until:
        pseudonym = users[rng.randrange(len(users))]
        candidates = rng.sample(ids, workload.candidates)
        start = time.perf_counter()
        store.read(pseudonym, candidates)
        times.append(time.perf_counter() - start)
    return np.asarray(times) * 1000.0


def _phase(name: str, times: np.ndarray, writes_per_s: float) -> PhaseLatency:
    return PhaseLatency(
        phase=name,
        reads=len(times),
        p50_ms=float(np.percentile(times, 50)),
        p99_ms=float(np.percentile(times, 99)),
        max_ms=float(times.max()),
        writes_per_s=writes_per_s,
    )


def measure_store(kind: str, location: str, workload: Workload) -> StoreLatency:
    """Fill a store with the workload's history, then time its reads in the three phases."""
    rng = random.Random(workload.seed)
    store = _Store(kind, location)
    try:
        started = time.perf_counter()
        store.items(_items(workload.items, rng))
        total = workload.users * workload.events_per_user
        for start in range(0, total, 5000):
            store.write(_events(rng, workload, min(5000, total - start), _T0 + start, "shopper"))
        fill_s = time.perf_counter() - started
        _settle(kind, location)
        users = [store.pz.pseudonym(f"shopper{u}@example.com") for u in range(workload.users)]
        _measure(
            store, Workload(**{**asdict(workload), "reads": min(200, workload.reads)}), rng, users
        )
        phases = [_phase("idle", _measure(store, workload, rng, users), 0.0)]
        context = mp.get_context("spawn")
        for name, rate in (("paced", workload.write_rate), ("flat-out", 0.0)):
            stop, counter = context.Event(), context.Value("q", 0)
            proc = context.Process(
                target=_writer, args=(kind, location, workload, rate, stop, counter), daemon=True
            )
            proc.start()
            try:
                deadline = time.monotonic() + 60
                while counter.value == 0:  # the writer is writing before the clock starts
                    if not proc.is_alive() or time.monotonic() > deadline:
                        raise ShopsearchError(f"{kind}: the writer process did not start")
                    time.sleep(0.01)
                first, t0 = counter.value, time.monotonic()
                times = _measure(store, workload, rng, users)
                written, elapsed = counter.value - first, time.monotonic() - t0
            finally:
                stop.set()
                proc.join(60)
            phases.append(_phase(name, times, written / elapsed if elapsed > 0 else 0.0))
        return StoreLatency(kind, tuple(phases), fill_s=fill_s)
    finally:
        store.close()


@contextlib.contextmanager
def _location(kind: str, postgres: str | None, redis: str | None) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:
            yield str(Path(tmp) / "profiles.sqlite")
    elif kind == "postgresql":
        if postgres:
            yield postgres
        else:
            from research.local_servers import postgres as server

            with server() as url:
                yield url
    else:
        if redis:
            yield redis
        else:
            from research.local_servers import redis as server

            with server() as url:
                yield url


def run(
    stores: Sequence[str] = STORES,
    workload: Workload | None = None,
    postgres: str | None = None,
    redis: str | None = None,
) -> list[StoreLatency]:
    """Measure each store; a store whose server or client library is missing is reported as
    skipped with the reason, not an error.

    Args:
        stores: Of :data:`STORES`.
        workload: The history and the reads/writes (default :class:`Workload`).
        postgres: A PostgreSQL URL to use (its ``shopsearch`` schema is dropped first: give
            a scratch database); None: a throw-away server.
        redis: A Redis URL to use (flushed first: give a scratch database); None: a
            throw-away server.
    """
    workload = workload or Workload()
    results = []
    for kind in stores:
        if kind not in STORES:
            raise ShopsearchError(f"unknown store {kind!r}; choose from {', '.join(STORES)}")
        try:
            with _location(kind, postgres, redis) as location:
                _clear(kind, location)
                results.append(measure_store(kind, location, workload))
        except (ShopsearchError, ImportError) as exc:
            results.append(StoreLatency(kind, skipped=str(exc).splitlines()[0]))
    return results


def _settle(kind: str, location: str) -> None:
    """After the bulk fill, what a server would soon do on its own: PostgreSQL's tables are
    vacuumed and analysed (else autovacuum runs inside a timed phase)."""
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(
                "VACUUM ANALYZE shopsearch.events, shopsearch.items, shopsearch.item_stats"
            )


def _clear(kind: str, location: str) -> None:
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS shopsearch CASCADE")
    elif kind == "redis":
        import redis

        redis.Redis.from_url(location).flushdb()


def markdown(results: Sequence[StoreLatency], workload: Workload, load: float | None = None) -> str:
    """The report: one row per store and phase, read p50/p99/max and the writer's rate."""
    lines = [
        f"Profile read = the shopper's profile (latest {DEFAULT_MAX_EVENTS} interactions joined "
        f"with the items) + popularity of {workload.candidates} candidates; "
        f"{workload.users:,} shoppers x {workload.events_per_user} events, "
        f"{workload.items:,} items; each phase reads back to back for at least "
        f"{workload.seconds:g} s and {workload.reads:,} reads, in one reader thread. "
        f"Writes come from another process in batches of {workload.write_batch}: "
        f"*paced* at {workload.write_rate:,.0f} events/s, *flat-out* as fast as it can.",
        "",
        "| store | phase | reads | read p50 ms | read p99 ms | max ms | writes/s meanwhile |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        if result.skipped:
            lines.append(f"| {result.store} | skipped: {result.skipped} | | | | | |")
            continue
        for p in result.phases:
            lines.append(
                f"| {result.store} | {p.phase} | {p.reads:,} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | "
                f"{p.max_ms:.1f} | {p.writes_per_s:,.0f} |"
            )
    if load is not None:
        lines += ["", f"Load average when the run began: {load:.2f}."]
    return "\n".join(lines)


__all__ = [
    "PHASES",
    "REPORT_KEY",
    "STORES",
    "PhaseLatency",
    "RedisPrototype",
    "StoreLatency",
    "Workload",
    "markdown",
    "measure_store",
    "run",
]
