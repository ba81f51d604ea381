"""Bad shopper input: implausible event times, ids in several spellings, durable erasure,
a damaged profile store."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from catalog.schema import Product
from core.errors import ShopsearchError
from personalization import profiles as profiles_module
from personalization.events import Event, read_events
from personalization.privacy import Pseudonymizer, normalize_user_id
from personalization.profiles import ForgetIncomplete, ProfileStore

DAY = 86400.0
NOW = 1_790_000_000.0  # 2026-09-21


@pytest.fixture
def pz() -> Pseudonymizer:
    return Pseudonymizer(b"k" * 32)


@pytest.fixture
def store(tmp_path: Path):
    with ProfileStore(tmp_path / "profiles" / "p.sqlite") as s:
        s.upsert_items(
            [
                Product("drill", "Drill", brand="Makita", category="Tools > Drills", price=129.0),
                Product("faucet", "Faucet", brand="Moen", category="Plumbing", price=229.0),
            ]
        )
        yield s


def _events(tmp_path: Path, rows: list[dict]) -> tuple[list[Event], list]:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    events, rejects = [], []
    for batch in read_events(path, now=NOW):
        events += batch.events
        rejects += batch.rejects
    return events, rejects


# ---------------------------------------------------------------- implausible timestamps


def test_future_and_ancient_events_are_rejected_with_line_and_reason(tmp_path: Path) -> None:
    base = {"user_id": "u", "event": "view", "product_id": "drill"}
    events, rejects = _events(
        tmp_path,
        [
            {**base, "timestamp": NOW - DAY},
            {**base, "timestamp": NOW + 60},  # within the clock-skew allowance
            {**base, "timestamp": "2099-01-01T00:00:00Z"},
            {**base, "timestamp": NOW + 3600},
            {**base, "timestamp": 5},  # 1970: an unset clock
            {**base, "timestamp": "1999-12-31T23:59:59Z"},
        ],
    )
    assert [e.timestamp for e in events] == [NOW - DAY, NOW + 60]
    assert [r.line for r in rejects] == [3, 4, 5, 6]
    assert "timestamp 2099-01-01T00:00:00Z is in the future" in rejects[0].reason
    assert "in the future" in rejects[1].reason
    assert "before 2000-01-01" in rejects[2].reason and "before 2000" in rejects[3].reason
    assert all("u" not in r.reason.split() for r in rejects)  # no user id in a reason


def test_one_future_event_cannot_take_over_a_profile(
    store: ProfileStore, pz: Pseudonymizer
) -> None:
    # Stored directly (as an older shopsearch or another writer could have): the profile
    # at query time ignores events stamped after now.
    now = time.time()
    store.ingest(
        [
            Event("s", now - 20 * DAY, "a", "purchase", product_id="drill"),
            Event("s", now - 19 * DAY, "b", "purchase", product_id="drill"),
            Event("s", 4_070_908_800.0, "c", "view", product_id="faucet"),  # 2099
        ],
        pz,
    )
    profile = store.profile(pz.pseudonym("s"))
    assert profile.n_events == 2
    assert profile.brand_affinity == {"Makita": 1.0}
    assert profile.recent_items == ("drill",)
    assert profile.as_of == pytest.approx(now - 19 * DAY)
    # point-in-time profiles (training) still see what was before their time
    assert store.profile(pz.pseudonym("s"), before=4_100_000_000.0).n_events == 3


# ---------------------------------------------------------------- one person, one pseudonym


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("  Alice.Shopper@Example.COM ", "alice.shopper@example.com"),
        ("ＡＬＩＣＥ@example.com", "alice@example.com"),  # fullwidth: NFKC, then casefold
        ("STRASSE@example.de", "strasse@example.de"),
        ("User-42", "User-42"),  # not an e-mail address: case is kept
        ("ａｂｃ", "abc"),
    ],
)
def test_normalize_user_id(raw: str, canonical: str) -> None:
    assert normalize_user_id(raw) == canonical


def test_email_spellings_are_one_shopper_everywhere(
    tmp_path: Path, store: ProfileStore, pz: Pseudonymizer
) -> None:
    assert pz.pseudonym("Alice@Example.com") == pz.pseudonym(" alice@example.com")
    assert pz.pseudonym("User-42") != pz.pseudonym("user-42")
    events, _ = _events(
        tmp_path,
        [
            {
                "user_id": "Alice@Example.com",
                "timestamp": NOW - 2 * DAY,
                "event": "click",
                "product_id": "drill",
            },
            {
                "user_id": "alice@example.com",
                "timestamp": NOW - DAY,
                "event": "purchase",
                "product_id": "faucet",
            },
        ],
    )
    assert store.ingest(events, pz).users == 2  # raw ids seen; one pseudonym stored
    assert store.count_events(pz.pseudonym("ALICE@EXAMPLE.COM")) == 2
    assert store.forget("alice@example.com", pz) == 2
    assert store.count_events() == 0
    assert store.item_stats("drill") is None and store.item_stats("faucet") is None


def test_forget_finds_rows_stored_before_ids_were_normalised(
    store: ProfileStore, pz: Pseudonymizer
) -> None:
    legacy = pz.raw_pseudonym("Alice@Example.com")
    store._conn.execute(
        "INSERT INTO events (pseudonym, ts, event, product_id) VALUES (?, ?, 'view', 'drill')",
        (legacy, NOW),
    )
    assert store.forget("Alice@Example.com", pz) == 1
    assert store.count_events() == 0


# ---------------------------------------------------------------- durable erasure


def test_reingesting_a_log_does_not_bring_a_forgotten_shopper_back(
    tmp_path: Path, store: ProfileStore, pz: Pseudonymizer
) -> None:
    rows = [
        {
            "user_id": "alice@example.com",
            "timestamp": NOW - DAY,
            "event": "view",
            "product_id": "drill",
        },
        {
            "user_id": "Alice@example.com",
            "timestamp": NOW - DAY + 1,
            "event": "click",
            "product_id": "drill",
        },
        {"user_id": "bob", "timestamp": NOW - DAY, "event": "view", "product_id": "drill"},
    ]
    events, _ = _events(tmp_path, rows)
    store.ingest(events, pz)
    assert not store.is_forgotten("alice@example.com", pz)
    assert store.forget("ALICE@example.com", pz) == 2
    assert store.is_forgotten("alice@example.com", pz)
    summary = store.ingest(events, pz)  # crash recovery: the same log again
    assert (summary.added, summary.duplicates, summary.forgotten) == (0, 1, 2)
    assert store.count_events() == 1 and store.item_stats("drill") == (1, 0, 0, 0)
    # the tombstone is a keyed hash, not the pseudonym: no trace of that either
    alice = pz.pseudonym("alice@example.com").encode()
    assert all(alice not in p.read_bytes() for p in store.path.parent.iterdir())


def test_forget_never_reports_done_while_a_reader_keeps_the_rows(
    store: ProfileStore, pz: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profiles_module, "CHECKPOINT_WAIT_S", 0.2)
    store.ingest([Event("alice", NOW - i, "s", "view", product_id="drill") for i in range(50)], pz)
    store.ingest([Event("bob", NOW, "s", "view", product_id="faucet")], pz)
    alice = pz.pseudonym("alice").encode()
    reader = sqlite3.connect(store.path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()  # holds a read snapshot
    with pytest.raises(ForgetIncomplete, match="run forget-user again") as info:
        store.forget("alice", pz, vacuum=True)
    assert str(info.value).startswith(str(store.path)) and "\n" not in str(info.value)
    assert store.count_events(alice.decode()) == 0  # deleted for everybody reading now
    reader.rollback()
    reader.close()
    assert store.forget("alice", pz, vacuum=True) == 0  # completes now
    assert all(alice not in p.read_bytes() for p in store.path.parent.iterdir())


def test_a_forget_waiting_for_a_reader_does_not_hold_up_other_writes(
    store: ProfileStore, pz: Pseudonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While an erasure waits for another process's read snapshot to end, the same store's
    other writes go on (case 22: a POST /events waited the whole 10 s)."""
    import threading

    monkeypatch.setattr(profiles_module, "CHECKPOINT_WAIT_S", 3.0)
    store.ingest([Event("alice", NOW, "s", "view", product_id="drill")], pz)
    reader = sqlite3.connect(store.path)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()  # holds a read snapshot
    outcome: list[BaseException | int] = []

    def erase() -> None:
        try:
            outcome.append(store.forget("alice", pz))
        except ForgetIncomplete as exc:
            outcome.append(exc)

    eraser = threading.Thread(target=erase)
    eraser.start()
    try:
        while store.count_events(pz.pseudonym("alice")):  # until its rows are deleted
            pass
        summary = store.ingest([Event("bob", NOW, "s", "view", product_id="faucet")], pz)
        assert summary.added == 1
        assert eraser.is_alive()  # bob's events went in while the erasure still waits
    finally:
        reader.rollback()
        reader.close()
        eraser.join()
    assert outcome == [1]  # and completes once the reader is gone


def test_cli_forget_user_says_what_it_did(tmp_path: Path, pz: Pseudonymizer, monkeypatch) -> None:
    from click.testing import CliRunner

    from shopsearch.cli import main

    # the command reads the key from the variable; the library takes it as key=
    monkeypatch.setenv("SHOPSEARCH_PSEUDONYM_KEY", (b"k" * 32).hex())
    folder = tmp_path / "profiles"
    from personalization.ingest import open_profiles

    store, key = open_profiles(folder, key=(b"k" * 32).hex())
    store.ingest([Event("Alice@Example.com", NOW, "s", "view", product_id="drill")], key)
    store.close()
    runner = CliRunner()
    first = runner.invoke(main, ["forget-user", "alice@example.com", "--profiles", str(folder)])
    assert first.exit_code == 0 and "1 stored rows removed" in first.output
    again = runner.invoke(main, ["forget-user", "alice@example.com", "--profiles", str(folder)])
    assert again.exit_code == 0 and "already forgotten" in again.output
    assert "no stored data" not in again.output


# ---------------------------------------------------------------- a damaged store


def test_damaged_store_is_a_one_line_error_naming_the_file(
    tmp_path: Path, pz: Pseudonymizer
) -> None:
    path = tmp_path / "p.sqlite"
    with ProfileStore(path) as s:
        s.ingest(
            [Event(f"u{i}", NOW - i, "s", "view", product_id="drill") for i in range(3000)], pz
        )
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096):
        data[page * 4096 : page * 4096 + 100] = b"\xff" * 100
    path.write_bytes(bytes(data))
    with ProfileStore(path) as s:
        for call in (
            lambda: s.profile(pz.pseudonym("u5")),
            lambda: s.ingest([Event("x", NOW, "s", "view", product_id="drill")], pz),
            lambda: s.forget("u5", pz),
        ):
            with pytest.raises(ShopsearchError) as info:
                call()
            message = str(info.value)
            assert message.startswith(f"{path}: the profile store is damaged")
            assert "integrity_check" in message and "backup" in message and "\n" not in message


def test_cli_reingest_after_forget_skips_and_reports(tmp_path: Path, tiny_encoder) -> None:
    import json

    from click.testing import CliRunner

    from indexer.build import index_catalog
    from retrieval.store import IndexLocation
    from shopsearch.cli import main

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("product_id,title\nP1,Cordless drill\nP2,Kitchen faucet\n")
    index = IndexLocation(path=tmp_path / "idx")
    index_catalog(catalog, index, encoder=tiny_encoder, progress=False)
    now = time.time()
    log = tmp_path / "events.jsonl"
    rows = [
        {
            "user_id": "Alice@Example.com",
            "timestamp": now - 2 * DAY,
            "event": "click",
            "product_id": "P1",
        },
        {
            "user_id": "alice@example.com",
            "timestamp": now - DAY,
            "event": "purchase",
            "product_id": "P1",
        },
        {"user_id": "bob", "timestamp": now - DAY, "event": "view", "product_id": "P2"},
        {
            "user_id": "bob",
            "timestamp": "2099-01-01T00:00:00Z",
            "event": "view",
            "product_id": "P2",
        },
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    profiles = tmp_path / "profiles"
    ingest = [
        "events",
        "ingest",
        str(log),
        "--profiles",
        str(profiles),
        "--index",
        str(index.path),
        "--rejects",
        str(tmp_path / "rej.csv"),
    ]
    runner = CliRunner()
    first = runner.invoke(main, ingest)
    assert first.exit_code == 0, first.output
    assert "ingested 3 events" in first.output and "rejected 1" in first.output
    assert (
        "4," in (tmp_path / "rej.csv").read_text()
        and "in the future" in (tmp_path / "rej.csv").read_text()
    )
    forget = runner.invoke(main, ["forget-user", "ALICE@example.com", "--profiles", str(profiles)])
    assert forget.exit_code == 0 and "2 stored rows removed" in forget.output
    again = runner.invoke(main, ingest)
    assert again.exit_code == 0, again.output
    assert "ingested 0 events (1 already there)" in again.output
    assert "skipped 2 events of forgotten users" in again.output


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("database or disk is full", "the profile store is damaged (database or disk is full"),
        ("database disk image is malformed", "the profile store is damaged"),
        ("file is not a database", "not a usable profile store"),
        ("database is locked", "busy"),
    ],
)
def test_store_errors_are_one_line_and_name_the_file(
    tmp_path: Path, message: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**40, 0, 2**36))  # 64 GiB free
    error = profiles_module._store_error(tmp_path / "p.sqlite", sqlite3.OperationalError(message))
    assert error is not None and str(error).startswith(f"{tmp_path / 'p.sqlite'}: ")
    assert expected in str(error) and "\n" not in str(error)


def test_other_database_errors_keep_their_traceback(tmp_path: Path) -> None:
    error = sqlite3.OperationalError("no such column: nonsense")
    assert profiles_module._store_error(tmp_path / "p.sqlite", error) is None


def test_ingest_of_a_missing_log_creates_nothing(tmp_path: Path) -> None:
    """A log that cannot be read is a one-line error before any store or key file exists."""
    from click.testing import CliRunner

    from shopsearch.cli import main

    profiles = tmp_path / "profiles"
    args = ["events", "ingest", str(tmp_path / "events.jsonl"), "--profiles", str(profiles)]
    result = CliRunner().invoke(main, [*args, "--index", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "events.jsonl" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not profiles.exists()
