"""The profile stores behave alike: the embedded SQLite one and the shared PostgreSQL one
(personalization/profiles_pg.py) - ingest, profiles, popularity, forget, re-ingest after
forget - and ``open_profiles`` picks the PostgreSQL one for a ``postgresql://`` URL.

The PostgreSQL cases start a throw-away server (tests/pg_server.py) and skip, saying why,
where PostgreSQL is not installed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from catalog.schema import Product
from core.errors import ShopsearchError
from personalization.events import Event
from personalization.privacy import Pseudonymizer
from personalization.profiles import IngestSummary, ProfileStore

T0 = 1_700_000_000.0
DAY = 86400.0
KEY = bytes(range(32))
ALICE = "alice.liddell@example.org"
BOB = "bob.builder@example.org"
ITEMS = [
    Product("p1", "Pliers", brand="Knipex", category="Tools > Hand Tools > Pliers", price=20.0),
    Product("p2", "Drill", brand="Bosch", category="Tools > Power Tools > Drills", price=100.0),
    {"product_id": "p3", "brand": "Knipex", "category": ["Tools", "Hand Tools"], "price": 40},
    {"product_id": "p4", "category": "Garden", "price": None},
]


def ev(user: str, ts: float, event: str, pid: str | None = None, query: str | None = None) -> Event:
    return Event(user, ts, "sess-" + user, event, query, pid, None)


@pytest.fixture
def pz() -> Pseudonymizer:
    return Pseudonymizer(KEY)


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path: Path):
    """``open_store(**options)``: a new store of the parameter's kind (closed afterwards)."""
    opened = []
    if request.param == "postgresql":
        from personalization.profiles_pg import PostgresProfileStore

        url = request.getfixturevalue("postgres_url")

        def make(**options):
            store = PostgresProfileStore(url, **options)
            opened.append(store)
            return store
    else:

        def make(**options):
            store = ProfileStore(tmp_path / "profiles.sqlite", **options)
            opened.append(store)
            return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    s = open_store()
    s.upsert_items(ITEMS)
    return s


def test_ingest_is_idempotent_and_counts_items(store, pz) -> None:
    events = [
        ev(ALICE, T0, "search", query="pliers"),
        ev(ALICE, T0 + 1, "view", "p1"),
        ev(ALICE, T0 + 2, "click", "p1"),
        ev(BOB, T0 + 3, "purchase", "p2"),
        ev(BOB, T0 + 3, "purchase", "p2"),  # an exact duplicate inside the batch
    ]
    assert store.ingest(events, pz) == IngestSummary(added=4, duplicates=1, users=2)
    stats = {pid: store.item_stats(pid) for pid in ("p1", "p2", "p3")}
    assert stats == {"p1": (1, 1, 0, 0), "p2": (0, 0, 0, 1), "p3": None}
    assert store.ingest(events, pz, chunk_size=2) == IngestSummary(added=0, duplicates=5, users=2)
    assert store.count_events() == 4 and store.count_events(pz.pseudonym(ALICE)) == 3
    assert {pid: store.item_stats(pid) for pid in ("p1", "p2", "p3")} == stats
    with pytest.raises(ValueError, match="unknown event type"):
        store.ingest([ev(ALICE, T0, "like", "p1")], pz)
    with pytest.raises(ValueError, match="needs a product_id"):
        store.ingest([ev(ALICE, T0, "view")], pz)
    assert store.count_events() == 4


def test_profiles_are_point_in_time_and_decayed(open_store, pz) -> None:
    store = open_store(half_life_days=30)
    store.upsert_items(ITEMS)
    store.ingest(
        [
            ev(ALICE, T0 - 30 * DAY, "view", "p1"),
            ev(ALICE, T0, "view", "p2"),
            ev(ALICE, T0 + 1, "search", query="q"),
            ev(ALICE, T0 + 2, "view", "p4"),
        ],
        pz,
    )
    alice = pz.pseudonym(ALICE)
    early = store.profile(alice, before=T0)  # strictly before: only the first view
    assert early.n_events == 1 and early.recent_items == ("p1",)
    assert early.brand_affinity == {"Knipex": 1.0}
    full = store.profile(alice)
    assert full.n_events == 3 and full.recent_items == ("p4", "p2", "p1")
    assert full.brand_affinity == pytest.approx({"Knipex": 1 / 3, "Bosch": 2 / 3}, rel=1e-4)
    assert full.category_affinity["Tools"] == pytest.approx(1.5 / 2.5, rel=1e-4)
    assert full.interactions == {"p1": {"view": 1}, "p2": {"view": 1}, "p4": {"view": 1}}
    assert store.profile(alice, max_events=1).recent_items == ("p4",)
    assert store.profile("0" * 32).is_cold
    with pytest.raises(ShopsearchError, match="max_events"):
        store.profile(alice, max_events=0)


def test_popularity_smoothing(open_store, pz) -> None:
    store = open_store(popularity_alpha=10)
    assert store.popularity(["p1"]) == {"p1": 0.0}
    events = [ev(f"u{i}", T0 + i, "view", "p1") for i in range(20)]
    events += [ev(f"u{i}", T0 + 100 + i, "click", "p1") for i in range(4)]
    events += [ev("u0", T0 + 200, "purchase", "p1"), ev("u0", T0 + 201, "view", "p2")]
    store.ingest(events, pz)
    prior = 7 / 21  # engagement 4 + 3 * 1 over exposure 20 + 1
    pop = store.popularity(["p1", "p2", "never", "p1"])
    assert list(pop) == ["p1", "p2", "never"]
    assert pop["p1"] == pytest.approx((7 + 10 * prior) / 30)
    assert pop["p2"] == pytest.approx((0 + 10 * prior) / 11)
    assert pop["never"] == pytest.approx(prior)
    # a write by this process drops the cached prior at once
    store.ingest([ev("u9", T0 + 300, "add_to_cart", "p2")], pz)
    prior = 9 / 21
    assert store.popularity(["p2"])["p2"] == pytest.approx((2 + 10 * prior) / 11)


def test_forget_is_exact_and_durable_across_reingest(store, pz) -> None:
    log = [
        ev(ALICE, T0, "search", query="secret alice query"),
        ev(ALICE, T0 + 1, "view", "p1"),
        ev(ALICE, T0 + 2, "add_to_cart", "p1"),
        ev(ALICE, T0 + 3, "purchase", "p4"),
        ev(BOB, T0 + 4, "view", "p1"),
        ev(BOB, T0 + 5, "click", "p2"),
    ]
    store.ingest(log, pz)
    alice, bob = pz.pseudonym(ALICE), pz.pseudonym(BOB)
    assert store.item_stats("p1") == (2, 0, 1, 0)
    assert not store.is_forgotten(ALICE, pz)
    assert store.forget("  Alice.Liddell@Example.org ", pz) == 4  # normalised as at ingest
    assert store.forget(ALICE, pz) == 0
    assert store.is_forgotten(ALICE, pz) and not store.is_forgotten(BOB, pz)
    assert store.count_events(alice) == 0 and store.count_events(bob) == 2
    assert store.item_stats("p1") == (1, 0, 0, 0)
    assert store.item_stats("p4") is None  # only alice touched it: no zero row left
    assert store.profile(alice).is_cold and store.profile(bob).n_events == 2
    # the documented crash recovery (ingest the log again) does not bring her back
    again = store.ingest(log, pz)
    assert again == IngestSummary(added=0, duplicates=2, users=2, forgotten=4)
    assert store.count_events(alice) == 0 and store.item_stats("p1") == (1, 0, 0, 0)
    assert store.forget(BOB, pz, vacuum=True) == 2
    assert store.count_events() == 0 and store.item_stats("p2") is None


def test_forgotten_pseudonyms_finds_erased_shoppers_by_pseudonym(store, pz) -> None:
    """What reads a service's search log (rows carry pseudonyms, not ids) asks the store."""
    store.ingest([ev(ALICE, T0, "click", "p1"), ev(BOB, T0, "click", "p2")], pz)
    store.forget(ALICE, pz)
    alice, bob = pz.pseudonym(ALICE), pz.pseudonym(BOB)
    assert store.forgotten_pseudonyms({alice, bob, "nobody"}, pz) == {alice}
    assert store.forgotten_pseudonyms([], pz) == set()


def test_concurrent_ingest_and_forget_keep_counts_exact(store, pz) -> None:
    """Writers in threads (and, for PostgreSQL, on separate connections as replicas are):
    after a forget nothing of the erased shopper is left, and the counts are the survivors'."""
    users = [f"shopper{i}" for i in range(8)]
    batches = [
        [ev(u, T0 + 10 * j + k, "view", f"p{1 + (j + k) % 4}") for k in range(5)]
        for j, u in enumerate(users)
    ]
    errors: list[BaseException] = []

    def write(batch) -> None:
        try:
            store.ingest(batch * 2, pz, chunk_size=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    threads += [threading.Thread(target=store.forget, args=(users[0], pz))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.forget(users[0], pz)  # whichever ran first, the shopper ends erased
    assert store.count_events(pz.pseudonym(users[0])) == 0
    views = {f"p{i}": 0 for i in range(1, 5)}
    for batch in batches[1:]:
        for e in batch:
            views[e.product_id] += 1
    assert {pid: (store.item_stats(pid) or (0,))[0] for pid in views} == views
    assert store.count_events() == 35


def test_items_are_upserted(store) -> None:
    assert store.upsert_items([{"product_id": "p1", "brand": "Other", "price": 5}]) == 1
    assert store.upsert_items([]) == 0
    with pytest.raises(ValueError, match="product_id"):
        store.upsert_items([{"brand": "x"}])


# -- the PostgreSQL store only ---------------------------------------------------------------


def test_postgres_store_keeps_no_raw_id(postgres_url, pz) -> None:
    import psycopg

    from personalization.profiles_pg import PostgresProfileStore

    with PostgresProfileStore(postgres_url) as store:
        store.ingest([ev(ALICE, T0, "view", "p1"), ev(BOB, T0, "click", "p1")], pz)
        store.forget(BOB, pz)
        with psycopg.connect(postgres_url) as conn:
            dump = " ".join(
                str(row)
                for table in ("events", "items", "item_stats", "forgotten", "meta")
                for row in conn.execute(f"SELECT * FROM shopsearch.{table}")
            )
    assert pz.pseudonym(ALICE) in dump
    for secret in ("alice", "bob", "sess-", pz.pseudonym(BOB)):
        assert secret not in dump
    assert pz.tombstone(pz.pseudonym(BOB)) in dump


def test_postgres_store_refuses_a_newer_schema_and_names_no_password(postgres_url) -> None:
    import psycopg

    from personalization.profiles_pg import PostgresProfileStore, is_store_url, redacted

    PostgresProfileStore(postgres_url).close()
    PostgresProfileStore(postgres_url).close()  # a second replica's start: no error
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE shopsearch.meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(ShopsearchError, match="schema 99 is newer"):
        PostgresProfileStore(postgres_url)
    assert is_store_url(" postgresql://x/y") and is_store_url("postgres://x")
    assert not is_store_url("/srv/profiles") and not is_store_url(Path("postgresql:/x"))
    shown = redacted("postgresql://shop:s3cret@db:5432/shop?password=s3cret&sslmode=require")
    assert shown == "postgresql://shop@db:5432/shop?sslmode=require"


def test_an_unreachable_server_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    pytest.importorskip("psycopg_pool")
    import personalization.profiles_pg as pg

    monkeypatch.setattr(pg, "CONNECT_TIMEOUT_S", 1.0)
    url = f"postgresql://shop:s3cret@/nothing?host={tmp_path}&port=1&connect_timeout=1"
    with pytest.raises(ShopsearchError) as caught:
        pg.PostgresProfileStore(url)
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert message.startswith(f"postgresql://shop@/nothing?host={tmp_path}")


def test_open_profiles_opens_the_shared_store_with_the_key(postgres_url) -> None:
    from personalization.ingest import check_profiles, open_profiles
    from personalization.profiles_pg import PostgresProfileStore

    with pytest.raises(ShopsearchError, match="SHOPSEARCH_PSEUDONYM_KEY"):
        open_profiles(postgres_url)
    with pytest.raises(ShopsearchError, match="SHOPSEARCH_PSEUDONYM_KEY"):
        check_profiles(postgres_url)
    store, pz = open_profiles(postgres_url, key=KEY.hex())
    try:
        assert isinstance(store, PostgresProfileStore)
        assert pz.pseudonym(ALICE) == Pseudonymizer(KEY).pseudonym(ALICE)
    finally:
        store.close()
    check_profiles(postgres_url, key=KEY.hex())  # a store and a key: fine
