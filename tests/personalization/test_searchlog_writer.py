"""The search log's writer: off the caller's thread, rotated to Parquet, crash leftovers
compacted, failures counted (never raised), erasure by rewriting, and the log read back as
events."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import polars as pl
import pytest

from personalization.impressions import impressions_from_events
from personalization.privacy import Pseudonymizer
from personalization.searchlog import log_events, log_files, scan, write_segment
from personalization.searchlog_writer import SearchLogWriter, forget, log_pseudonymizer

PZ = Pseudonymizer(b"k" * 32)
DAY = 86_400.0
T0 = 1_767_225_000.0  # 2025-12-31T23:50:00Z


def _search(i: int, user: str | None = "u", **extra) -> dict:
    return {
        "event": "search",
        "timestamp": T0 + i,
        "search_id": f"s{i}",
        "pseudonym": PZ.pseudonym(user) if user else None,
        "session": "",
        "query": "drill",
        "offset": 0,
        "k": 3,
        "results": ["a", "b", "c"],
        **extra,
    }


def _click(i: int, product: str, user: str = "u", **extra) -> dict:
    return {
        "event": "click",
        "timestamp": T0 + i + 0.5,
        "search_id": f"s{i}",
        "pseudonym": PZ.pseudonym(user),
        "session": "",
        "product_id": product,
        **extra,
    }


def test_rows_are_written_off_the_callers_thread_and_closed_into_parquet(tmp_path):
    counted: list[tuple[str, int]] = []
    writer = SearchLogWriter(tmp_path, replica="box-1", count=lambda o, n: counted.append((o, n)))
    assert all(writer.append(_search(i)) for i in range(5))
    writer.flush()
    live = list(tmp_path.glob("*.jsonl"))
    assert len(live) == 1 and re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-box-1\.jsonl", live[0].name)
    assert scan(tmp_path).collect()["search_id"].to_list() == [f"s{i}" for i in range(5)]
    writer.close()
    assert not list(tmp_path.glob("*.jsonl"))
    df = pl.read_parquet(next(tmp_path.glob("*.parquet")))
    assert df["search_id"].to_list() == [f"s{i}" for i in range(5)]
    assert set(df["replica"]) == {"box-1"}
    assert df["results"].to_list()[0] == ["a", "b", "c"]
    assert sum(n for o, n in counted if o == "written") == 5
    assert not writer.append(_search(9))  # closed: dropped, counted
    assert writer.counts["dropped"] == 1


def test_segments_rotate_by_size_and_by_utc_day(tmp_path):
    now = [T0]
    writer = SearchLogWriter(tmp_path, replica="r", max_bytes=300, clock=lambda: now[0])
    for i in range(6):
        writer.append(_search(i))
        writer.flush()
    segments = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert len(segments) >= 2  # ~190 bytes a row, 300 a segment
    now[0] = T0 + DAY  # past midnight UTC: a new segment even though the old one is small
    writer.append(_search(6))
    writer.close()
    names = [p.name for p in log_files(tmp_path)]
    assert names == sorted(names) and names[-1].startswith("20260101T")
    assert scan(tmp_path).collect()["search_id"].to_list() == [f"s{i}" for i in range(7)]


def test_a_full_queue_drops_and_counts_rows_without_blocking(tmp_path):
    writer = SearchLogWriter(tmp_path, queue_rows=2)
    with writer._io:  # the disk is stuck: the writer thread waits here
        writer.append(_search(0))
        for _ in range(200):  # until the thread has taken row 0 and blocks on the disk
            if writer._queue.empty():
                break
            import time

            time.sleep(0.01)
        results = [writer.append(_search(i)) for i in range(1, 6)]
    assert results == [True, True, False, False, False]
    writer.close()
    assert writer.counts["dropped"] == 3 and writer.counts["written"] == 3


def test_an_unwritable_folder_counts_failed_rows_and_logs_once(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    caplog.set_level(logging.ERROR, logger="shopsearch.searchlog")
    writer = SearchLogWriter(blocker / "log")
    for i in range(3):
        assert writer.append(_search(i))  # never raises
        writer.flush()
    writer.close()
    assert writer.counts["failed"] == 3 and writer.counts["written"] == 0
    failures = [r for r in caplog.records if "search_log_failed" in r.getMessage()]
    assert len(failures) == 1


def test_a_crashed_writers_segment_is_compacted_at_start(tmp_path):
    rows = [_search(i) for i in range(3)]
    torn = tmp_path / "20260101T000000.000000Z-gone-1.jsonl"
    torn.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"event": "sea')
    # a rotation that died between writing the Parquet and removing the JSON Lines
    twin = tmp_path / "20260101T000001.000000Z-gone-2.jsonl"
    twin.write_text(json.dumps(_search(7)) + "\n")
    write_segment(twin.with_suffix(".parquet"), [_search(7)])
    assert scan(tmp_path).collect().height == 4  # the reader skips the twin's JSON Lines
    other = SearchLogWriter(tmp_path, replica="alive")
    other.append(_search(8))
    other.flush()
    writer = SearchLogWriter(tmp_path, replica="new")  # compacts leftovers, not a live segment
    assert not torn.exists() and torn.with_suffix(".parquet").exists()
    assert not twin.exists()
    assert len(list(tmp_path.glob("*-alive.jsonl"))) == 1
    assert scan(tmp_path).collect()["search_id"].to_list() == ["s0", "s1", "s2", "s7", "s8"]
    other.close()
    writer.close()


def test_forget_rewrites_every_segment_and_the_shopper_is_never_logged_again(tmp_path):
    write_segment(
        tmp_path / "20260101T000000.000000Z-old-1.parquet",
        [_search(0), _click(0, "b"), _search(9, user=None)],  # the anonymous row stays
    )
    write_segment(tmp_path / "20260101T000001.000000Z-old-1.parquet", [_search(1, user="v")])
    mine = SearchLogWriter(tmp_path, replica="mine", pseudonymizer=PZ)
    other = SearchLogWriter(tmp_path, replica="other", pseudonymizer=PZ)
    mine.append(_search(2))
    other.append(_search(3))
    other.append(_search(4, user="v"))
    mine.flush()
    other.flush()
    gone = forget(tmp_path, {PZ.pseudonym("u")}, PZ, writer=mine)
    assert gone.rows == 3  # two in a closed segment, one in this process's live one
    assert "20260101T000000.000000Z-old-1.parquet" in gone.rewritten
    assert len(gone.pending) == 1 and gone.pending[0].endswith("-other.jsonl")
    df = scan(tmp_path).collect()
    assert PZ.pseudonym("u") in df["pseudonym"].to_list()  # only in the other's live segment
    assert "u" not in (tmp_path / "forgotten.txt").read_text()
    assert PZ.pseudonym("u") not in (tmp_path / "forgotten.txt").read_text()
    # read with the key, the tombstone hides it already; the other writer drops it on rotating
    assert PZ.pseudonym("u") not in {
        e.user_id for e in log_events(tmp_path, pseudonymizer=PZ).events
    }
    mine.append(_search(5))  # never logged again, by any writer
    other.append(_search(6))
    mine.close()
    other.close()
    df = scan(tmp_path).collect()
    assert PZ.pseudonym("u") not in df["pseudonym"].to_list()
    assert sorted(df["search_id"].to_list()) == ["s1", "s4", "s9"]
    assert mine.counts["forgotten"] == 1 and other.counts["forgotten"] == 1


def test_the_log_reads_as_events_with_pages_sessions_and_anonymous_searches_left_out(tmp_path):
    session = PZ.session_pseudonym("sess")
    write_segment(
        tmp_path / "20260101T000000.000000Z-r-1.parquet",
        [
            _search(0, session=session),
            _search(1, session=session, offset=3, results=["d", "e", "f"]),  # page 2
            _search(2, user=None),  # anonymous
            _click(1, "e", session=""),  # no session: the search's is taken by search_id
            _click(1, "e", session=""),  # a retried post: counted once
            _click(0, "a", session="", event="purchase"),
        ],
    )
    read = log_events(tmp_path)
    assert read.searches == 3 and read.anonymous_searches == 1 and read.interactions == 2
    impressions, stats = impressions_from_events(read.events)
    assert stats.interactions_attributed == 2
    first, second = impressions
    assert first.labels == (3, 0, 0) and list(first.ranks()) == [1, 2, 3]
    assert second.offset == 3 and list(second.ranks()) == [4, 5, 6]
    assert second.labels == (0, 1, 0)


def test_the_log_key_is_the_services(tmp_path):
    profiles = tmp_path / "profiles"
    assert log_pseudonymizer(tmp_path / "log", create=False) is None
    own = log_pseudonymizer(tmp_path / "log")
    assert (tmp_path / "log" / "pseudonym.key").exists()
    assert log_pseudonymizer(tmp_path / "log").pseudonym("x") == own.pseudonym("x")
    theirs = log_pseudonymizer(tmp_path / "log", profiles=profiles)
    assert theirs.pseudonym("x") == Pseudonymizer.from_dir(profiles).pseudonym("x")
    given = log_pseudonymizer(tmp_path / "log", profiles=profiles, key="ab" * 32)
    assert given.pseudonym("x") == Pseudonymizer(bytes.fromhex("ab" * 32)).pseudonym("x")


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_search_log_segment_is_told_from_an_event_log(tmp_path, suffix):
    from personalization.searchlog import is_search_log

    seg = tmp_path / f"seg{suffix}"
    events = tmp_path / f"events{suffix}"
    row = {"user_id": "u", "timestamp": T0, "event": "click", "product_id": "a"}
    if suffix == ".parquet":
        write_segment(seg, [_search(0)])
        pl.DataFrame([row]).write_parquet(events)
    else:
        seg.write_text(json.dumps(_search(0)) + "\n")
        events.write_text(json.dumps(row) + "\n")
    assert is_search_log(seg) and is_search_log(tmp_path) and not is_search_log(events)
    assert Path(seg).exists()


def test_a_click_stamped_before_its_search_by_a_slow_device_clock_still_counts(tmp_path):
    """The service stamps the search, the shopper's device the click: a click that names its
    search_id is attributed, and counted from the search's time, even when it says earlier."""
    write_segment(
        tmp_path / "20260101T000000.000000Z-r-1.parquet",
        [_search(0), _click(0, "b", timestamp=T0 - 3.0), _search(1), _click(1, "c")],
    )
    read = log_events(tmp_path)
    clicks = [e for e in read.events if e.event == "click"]
    assert [c.timestamp for c in clicks] == [T0, T0 + 1.5]  # the first at its search's time
    impressions, stats = impressions_from_events(read.events)
    assert stats.interactions_attributed == 2 and not stats.skipped
    assert [m.labels for m in impressions] == [(0, 1, 0), (0, 0, 1)]


def test_the_same_in_a_hand_built_event_log(tmp_path):
    from personalization.events import Event

    events = [
        Event("u", T0, "s", "search", "drill", search_id="q1", results=("a", "b")),
        Event("u", T0 - 2.0, "s", "click", product_id="b", search_id="q1"),
    ]
    impressions, stats = impressions_from_events(events)
    assert stats.interactions_attributed == 1 and impressions[0].labels == (0, 1)


@pytest.mark.parametrize("kind", ["catalog", "event log"])
def test_a_file_that_is_no_segment_is_one_line_naming_it(tmp_path, kind):
    from core.errors import EventLogError

    folder = tmp_path / "log"
    folder.mkdir()
    write_segment(folder / "20260101T000000.000000Z-r-1.parquet", [_search(0)])
    stray = folder / "catalog.parquet"
    if kind == "catalog":
        pl.DataFrame({"product_id": ["a"], "title": ["Drill"]}).write_parquet(stray)
    else:
        pl.DataFrame({"user_id": ["u"], "timestamp": [T0], "event": ["click"]}).write_parquet(stray)
    with pytest.raises(EventLogError, match="catalog.parquet: (not a search log|an event log)"):
        scan(folder).collect()
