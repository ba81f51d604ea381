"""Pseudonyms, the SQLite profile store: ingest, point-in-time profiles, decay, forget."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from catalog.schema import Product
from core.errors import ShopsearchError
from personalization.events import Event, read_events
from personalization.privacy import KEY_ENV, KEY_FILE, Pseudonymizer
from personalization.profiles import IngestSummary, ProfileStore

DAY = 86400.0
T0 = 1_700_000_000.0
KEY = bytes(range(32))
ALICE = "alice.liddell@example.org"  # not hex: cannot hide inside a pseudonym
BOB = "bob.builder@example.org"


@pytest.fixture
def pz() -> Pseudonymizer:
    return Pseudonymizer(KEY)


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    s = ProfileStore(tmp_path / "store" / "profiles.sqlite")
    s.upsert_items(
        [
            Product(
                "p1", "Pliers", brand="Knipex", category="Tools > Hand Tools > Pliers", price=20.0
            ),
            Product(
                "p2", "Drill", brand="Bosch", category="Tools > Power Tools > Drills", price=100.0
            ),
            {
                "product_id": "p3",
                "brand": "Knipex",
                "category": ["Tools", "Hand Tools"],
                "price": 40,
            },
            {"product_id": "p4", "category": "Garden", "price": None, "_vector": [0.0, 1.0]},
        ]
    )
    yield s
    s.close()


def ev(user: str, ts: float, event: str, pid: str | None = None, query: str | None = None) -> Event:
    return Event(user, ts, "sess-" + user, event, query, pid, None)


# -- pseudonyms --------------------------------------------------------------------------


def test_pseudonym_stable_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    a = Pseudonymizer(KEY).pseudonym(ALICE)
    assert a == Pseudonymizer(KEY).pseudonym(ALICE)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != Pseudonymizer(bytes(32)).pseudonym(ALICE)
    assert a != Pseudonymizer(KEY).pseudonym(BOB)
    assert Pseudonymizer(KEY).session_pseudonym(ALICE) != a
    assert "alice" not in repr(Pseudonymizer(KEY)) and str(KEY) not in repr(Pseudonymizer(KEY))

    first = Pseudonymizer.from_dir(tmp_path / "keys")
    key_file = tmp_path / "keys" / KEY_FILE
    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Pseudonymizer.from_dir(tmp_path / "keys").pseudonym(ALICE) == first.pseudonym(ALICE)
    assert Pseudonymizer.from_dir(tmp_path / "other").pseudonym(ALICE) != first.pseudonym(ALICE)
    assert [p.name for p in (tmp_path / "keys").iterdir()] == [KEY_FILE]  # no temp file left

    # a key given (what the CLI and the service read from SHOPSEARCH_PSEUDONYM_KEY) wins
    assert Pseudonymizer.from_dir(tmp_path / "keys", key=KEY.hex()).pseudonym(ALICE) == a
    with pytest.raises(ShopsearchError, match=f"not hexadecimal.*{2 * len(KEY)} hex"):
        Pseudonymizer.from_dir(tmp_path, key="not-hex")
    # the library reads no variable: without key= it is the directory's key file
    monkeypatch.setenv(KEY_ENV, KEY.hex())
    assert Pseudonymizer.from_dir(tmp_path / "keys").pseudonym(ALICE) == first.pseudonym(ALICE)
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / KEY_FILE).write_bytes(b"abc")
    with pytest.raises(ShopsearchError, match="3 bytes"):
        Pseudonymizer.from_dir(tmp_path / "short")
    with pytest.raises(ShopsearchError):
        Pseudonymizer(b"short")


# -- ingest ------------------------------------------------------------------------------


def test_ingest_is_idempotent(tmp_path: Path, store: ProfileStore, pz: Pseudonymizer) -> None:
    log = tmp_path / "log.jsonl"
    _write_log(
        [
            ev(ALICE, T0, "search", query="pliers"),
            ev(ALICE, T0 + 1, "view", "p1"),
            ev(ALICE, T0 + 2, "click", "p1"),
            ev(BOB, T0 + 3, "purchase", "p2"),
            ev(BOB, T0 + 3, "purchase", "p2"),  # exact duplicate inside the log
        ],
        log,
    )

    def events() -> list[Event]:
        return [e for batch in read_events(log) for e in batch.events]

    assert store.ingest(events(), pz) == IngestSummary(added=4, duplicates=1, users=2)
    stats = {pid: store.item_stats(pid) for pid in ("p1", "p2")}
    assert stats == {"p1": (1, 1, 0, 0), "p2": (0, 0, 0, 1)}
    assert store.ingest(events(), pz, chunk_size=2) == IngestSummary(added=0, duplicates=5, users=2)
    assert store.count_events() == 4
    assert {pid: store.item_stats(pid) for pid in ("p1", "p2")} == stats


def test_ingest_rejects_invalid_events(store: ProfileStore, pz: Pseudonymizer) -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        store.ingest([ev(ALICE, T0, "like", "p1")], pz)
    with pytest.raises(ValueError, match="needs a product_id"):
        store.ingest([ev(ALICE, T0, "view")], pz)
    assert store.count_events() == 0


def test_raw_user_ids_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    folder = tmp_path / "state"
    keyed = Pseudonymizer.from_dir(folder)
    with ProfileStore(folder / "profiles.sqlite") as store:
        store.ingest(
            [ev(ALICE, T0 + i, "view", f"p{i % 3}") for i in range(50)]
            + [Event(BOB, T0, f"{BOB}-session", "search", "hammer", None, None)],
            keyed,
        )
        store.profile(keyed.pseudonym(ALICE))
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        assert {p.name for p in files} >= {"profiles.sqlite", KEY_FILE}
        for path in files:
            data = path.read_bytes()
            for raw in (ALICE, BOB, "alice.liddell", "bob.builder"):
                assert raw.encode() not in data, f"{raw} found in {path.name}"
                assert raw.encode("utf-16-le") not in data
    assert stat.S_IMODE((folder / "profiles.sqlite").stat().st_mode) == 0o600


# -- profiles ----------------------------------------------------------------------------


def test_point_in_time_profile_excludes_later_events(
    store: ProfileStore, pz: Pseudonymizer
) -> None:
    store.ingest(
        [
            ev(ALICE, T0, "view", "p1"),
            ev(ALICE, T0 + DAY, "purchase", "p2"),
            ev(ALICE, T0 + 2 * DAY, "view", "p3"),
        ],
        pz,
    )
    p = pz.pseudonym(ALICE)
    early = store.profile(p, before=T0 + DAY)  # strictly before: the purchase is excluded
    assert early.n_events == 1
    assert early.brand_affinity == {"Knipex": 1.0}
    assert early.recent_items == ("p1",)
    assert early.interactions == {"p1": {"view": 1}}
    assert early.as_of == T0 + DAY
    assert store.profile(p, before=T0).n_events == 0
    assert store.profile(p, before=T0).is_cold
    full = store.profile(p)
    assert full.n_events == 3 and full.as_of == T0 + 2 * DAY
    assert full.recent_items == ("p3", "p2", "p1")
    assert store.profile("0" * 32).n_events == 0


def test_time_decay_and_event_weights(tmp_path: Path, pz: Pseudonymizer) -> None:
    with ProfileStore(tmp_path / "p.sqlite", half_life_days=30) as store:
        store.upsert_items(
            [
                {"product_id": "a", "brand": "A", "category": "X > Y", "price": 10.0},
                {"product_id": "b", "brand": "B", "category": "X > Z", "price": 1000.0},
            ]
        )
        # A viewed 30 days (one half-life) before B's view: weights 0.5 and 1.
        store.ingest([ev(ALICE, T0 - 30 * DAY, "view", "a"), ev(ALICE, T0, "view", "b")], pz)
        prof = store.profile(pz.pseudonym(ALICE))
        assert prof.brand_affinity["A"] == pytest.approx(1 / 3)
        assert prof.brand_affinity["B"] == pytest.approx(2 / 3)
        assert prof.category_affinity == pytest.approx({"X": 1.0, "X > Y": 1 / 3, "X > Z": 2 / 3})
        mean = (0.5 * math.log(10) + 1.0 * math.log(1000)) / 1.5
        std = math.sqrt((0.5 * (math.log(10) - mean) ** 2 + (math.log(1000) - mean) ** 2) / 1.5)
        assert prof.price_mean_log == pytest.approx(mean)
        assert prof.price_std_log == pytest.approx(std)
        # Seen from 30 more days later both decay by the same factor: shares are unchanged.
        later = store.profile(pz.pseudonym(ALICE), before=T0 + 30 * DAY)
        assert later.brand_affinity["B"] == pytest.approx(2 / 3)

        # A purchase (8) of A now outweighs the click-free history: 8*1 vs view of B.
        store.ingest([ev(ALICE, T0, "purchase", "a")], pz)
        prof = store.profile(pz.pseudonym(ALICE))
        assert prof.brand_affinity["A"] == pytest.approx(8.5 / 9.5)
        assert prof.interactions["a"] == {"view": 1, "purchase": 1}
        assert sum(prof.brand_affinity.values()) == pytest.approx(1.0)


def test_profile_limits_and_recent_items(store: ProfileStore, pz: Pseudonymizer) -> None:
    events = [ev(ALICE, T0 + i, "view", f"x{i}") for i in range(30)]
    events += [ev(ALICE, T0 + 100, "click", "x3"), ev(ALICE, T0 + 101, "search", query="q")]
    store.ingest(events, pz)
    prof = store.profile(pz.pseudonym(ALICE))
    assert prof.n_events == 31  # searches are not interactions
    assert prof.recent_items[:3] == ("x3", "x29", "x28")
    assert len(prof.recent_items) == 20 and len(set(prof.recent_items)) == 20
    assert prof.brand_affinity == {} and prof.price_mean_log is None  # items unknown
    small = store.profile(pz.pseudonym(ALICE), max_events=5)
    assert small.n_events == 5 and small.recent_items == ("x3", "x29", "x28", "x27", "x26")


def test_profile_query_uses_the_user_time_index(store: ProfileStore) -> None:
    from personalization.profiles import _PROFILE_BEFORE_SQL

    plan = store._conn.execute(f"EXPLAIN QUERY PLAN {_PROFILE_BEFORE_SQL}", ("x", T0, 200))
    details = " ".join(row[-1] for row in plan)
    assert "events_by_user_time" in details and "pseudonym=?" in details
    assert "SCAN e" not in details  # no full scan of events


# -- forget ------------------------------------------------------------------------------


def test_forget_removes_every_trace(tmp_path: Path, store: ProfileStore, pz: Pseudonymizer) -> None:
    store.ingest(
        [
            ev(ALICE, T0, "search", query="secret alice query"),
            ev(ALICE, T0 + 1, "view", "p1"),
            ev(ALICE, T0 + 2, "add_to_cart", "p1"),
            ev(ALICE, T0 + 3, "purchase", "p4"),
            ev(BOB, T0 + 4, "view", "p1"),
            ev(BOB, T0 + 5, "click", "p2"),
        ],
        pz,
    )
    alice, bob = pz.pseudonym(ALICE), pz.pseudonym(BOB)
    folder = store.path.parent
    before = b"".join(p.read_bytes() for p in folder.iterdir())
    assert alice.encode() in before and b"secret alice query" in before  # the check below bites
    assert store.item_stats("p1") == (2, 0, 1, 0)
    assert store.forget(ALICE, pz) == 4
    assert store.forget(ALICE, pz) == 0
    assert store.count_events(alice) == 0 and store.count_events(bob) == 2
    assert store.item_stats("p1") == (1, 0, 0, 0)
    assert store.item_stats("p2") == (0, 1, 0, 0)
    assert store.item_stats("p4") is None  # only alice touched it: no zero row left behind
    assert store.profile(alice).n_events == 0
    assert store.profile(bob).n_events == 2

    conn = sqlite3.connect(store.path)
    for table in ("events", "items", "item_stats"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            assert alice not in map(str, row)
    conn.close()
    for path in folder.iterdir():
        data = path.read_bytes()
        assert alice.encode() not in data, path.name
        assert b"secret alice query" not in data, path.name
    assert bob.encode() in (folder / "profiles.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in folder.glob("*-wal")
    )
    assert store.forget(BOB, pz, vacuum=True) == 2
    assert store.count_events() == 0


# -- popularity and vectors ----------------------------------------------------------------


def test_popularity_smoothing(tmp_path: Path, pz: Pseudonymizer) -> None:
    with ProfileStore(tmp_path / "p.sqlite", popularity_alpha=10) as store:
        assert store.popularity(["p1"]) == {"p1": 0.0}
        events = [ev(f"u{i}", T0 + i, "view", "p1") for i in range(20)]
        events += [ev(f"u{i}", T0 + 100 + i, "click", "p1") for i in range(4)]
        events += [ev("u0", T0 + 200, "purchase", "p1"), ev("u0", T0 + 201, "view", "p2")]
        store.ingest(events, pz)
        # engagement p1 = 4 + 3*1 = 7, exposure 20; p2: 0 / 1. prior = 7 / 21.
        prior = 7 / 21
        pop = store.popularity(["p1", "p2", "never"])
        assert pop["p1"] == pytest.approx((7 + 10 * prior) / (20 + 10))
        assert pop["p2"] == pytest.approx((0 + 10 * prior) / (1 + 10))
        assert pop["never"] == pytest.approx(prior)
        store.ingest([ev("u9", T0 + 300, "add_to_cart", "p2")], pz)  # prior cache refreshed
        prior = 9 / 21
        assert store.popularity(["p2"])["p2"] == pytest.approx((2 + 10 * prior) / (1 + 10))


def test_item_upsert_keeps_no_vectors(store: ProfileStore) -> None:
    """Product vectors live in the index only: a payload's vector is not copied here."""
    store.upsert_items([{"product_id": "p1", "_vector": [1.0, 0.0], "brand": "Knipex"}])
    store.upsert_items([{"product_id": "p1", "brand": "Knipex", "price": 21.0}])
    columns = [r[1] for r in store._conn.execute("PRAGMA table_info(items)")]
    assert columns == ["product_id", "brand", "category", "price"]
    assert not hasattr(store, "vectors")
    with pytest.raises(ValueError, match="product_id"):
        store.upsert_items([{"brand": "x"}])


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a sqlite file" * 100)
    with pytest.raises(ShopsearchError, match="not a usable profile store") as info:
        ProfileStore(bad)
    assert "\n" not in str(info.value)


# -- latency -------------------------------------------------------------------------------


def test_profile_lookup_latency(tmp_path: Path, pz: Pseudonymizer) -> None:
    """Prints p50/p99 of 1000 profile lookups of users with 200 events (not asserted)."""
    rng = np.random.default_rng(0)
    n_items, n_users = 2000, 200
    cats = [f"Cat{a} > Sub{b} > Leaf{c}" for a in range(5) for b in range(4) for c in range(3)]
    with ProfileStore(tmp_path / "lat.sqlite") as store:
        store.upsert_items(
            {
                "product_id": f"p{i}",
                "brand": f"brand{i % 50}",
                "category": cats[i % len(cats)],
                "price": float(rng.uniform(1, 500)),
            }
            for i in range(n_items)
        )
        kinds = ["view"] * 6 + ["click"] * 3 + ["add_to_cart", "purchase"]
        events = [
            Event(
                f"user-{u}",
                T0 + float(rng.uniform(0, 180 * DAY)),
                f"s{u}",
                kinds[int(rng.integers(len(kinds)))],
                None,
                f"p{int(rng.integers(n_items))}",
                None,
            )
            for u in range(n_users)
            for _ in range(200)
        ]
        store.ingest(events, pz)
        pseudonyms = [pz.pseudonym(f"user-{u}") for u in range(n_users)]
        assert store.profile(pseudonyms[0]).n_events == 200
        times = []
        for i in range(1000):
            start = time.perf_counter()
            store.profile(pseudonyms[i % n_users], before=T0 + 200 * DAY)
            times.append(time.perf_counter() - start)
        p50, p99 = np.percentile(np.array(times) * 1000, [50, 99])
        print(
            f"\nprofile lookup (200 events, {len(events)} stored): p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        )
        assert os.path.getsize(store.path) > 0


def _write_log(events: list[Event], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in events), encoding="utf-8")
