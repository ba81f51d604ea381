"""Event log reading: formats, timestamps, rejects with line numbers, file errors."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from core.errors import ShopsearchError
from personalization.events import (
    Event,
    EventLogError,
    parse_timestamp,
    read_events,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _read_all(path: Path, **kwargs: object) -> tuple[list[Event], list]:
    events, rejects = [], []
    for batch in read_events(path, **kwargs):
        events.extend(batch.events)
        rejects.extend(batch.rejects)
    return events, rejects


def _write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    return path


def _row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "user_id": "u-1",
        "timestamp": T0,
        "session_id": "s-1",
        "event": "view",
        "product_id": "p1",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20z", T0),
        ("2023-11-15T00:13:20+02:00", T0),
        ("2023-11-14T22:13:20.500+00:00", T0 + 0.5),
        (1_700_000_000, T0),
        (1_700_000_000.25, T0 + 0.25),
        (1_700_000_000_000, T0),
        (1_700_000_000_500, T0 + 0.5),
        ("1700000000", T0),
        (" 1700000000000 ", T0),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc), T0),
        (datetime(2023, 11, 14, 23, 13, 20, tzinfo=timezone(timedelta(hours=1))), T0),
        (datetime(2023, 11, 14, 22, 13, 20), T0),  # naive datetime column: UTC
    ],
)
def test_timestamp_formats(value: object, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "missing timestamp"),
        ("  ", "missing timestamp"),
        ("2023-11-14T22:13:20", "has no timezone"),
        ("yesterday", "bad timestamp 'yesterday'"),
        (-5, "before 1970"),
        (1e15, "out of range"),
        (float("nan"), "bad timestamp"),
        (True, "bad timestamp"),
        (date(2023, 11, 14), "date without a time"),
        ([1], "bad timestamp of type list"),
    ],
)
def test_bad_timestamps(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_timestamp(value)


def test_jsonl_rejects_each_reason_with_line_numbers(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "events.jsonl",
        [
            _row(event="search", product_id=None, query="cordless drill", position=None),  # 1
            _row(timestamp="2023-11-14T22:13:20Z", position=3),  # 2 ok
            _row(event="teleport"),  # 3
            _row(timestamp=None),  # 4
            _row(timestamp="last tuesday"),  # 5
            "",  # 6 blank: skipped, numbering kept
            _row(user_id=None),  # 7
            _row(user_id="   "),  # 8
            _row(event="click", product_id=None),  # 9
            _row(product_id="ghost"),  # 10
            _row(position=0),  # 11
            _row(position="third"),  # 12
            _row(position=1.5),  # 13
            _row(event="search", product_id=None, query=None),  # 14
            "{not json",  # 15
            "[1, 2]",  # 16
            _row(event="PURCHASE", position="2", user_id=42),  # 17 ok (case, text, int id)
            _row(timestamp="2023-11-14T22:13:20"),  # 18 naive ISO
        ],
    )
    events, rejects = _read_all(path, known_products={"p1"})
    got = [(r.line, r.product_id, r.reason) for r in rejects]
    expected_lines = [3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18]
    assert [g[0] for g in got] == expected_lines
    reasons = dict((g[0], g[2]) for g in got)
    assert reasons[3].startswith("unknown event type 'teleport'")
    assert reasons[4] == "missing timestamp"
    assert reasons[5].startswith("bad timestamp 'last tuesday'")
    assert reasons[7] == reasons[8] == "missing user_id"
    assert reasons[9] == "missing product_id (required on click events)"
    assert reasons[10] == "unknown product_id"
    assert all(reasons[n].startswith("bad position") for n in (11, 12, 13))
    assert reasons[14] == "missing query (required on search events)"
    assert reasons[15].startswith("line is not valid JSON")
    assert reasons[16] == "line is not a JSON object"
    assert "no timezone" in reasons[18]
    assert dict((g[0], g[1]) for g in got)[10] == "ghost"
    # Reject reasons never carry the user id.
    assert not any("u-1" in g[2] for g in got)

    assert len(events) == 3
    search, view, purchase = events
    assert search == Event("u-1", T0, "s-1", "search", "cordless drill", None, None)
    assert view == Event("u-1", T0, "s-1", "view", None, "p1", 3)
    assert purchase.event == "purchase" and purchase.position == 2 and purchase.user_id == "42"
    assert "u-1" not in repr(view)


def test_known_products_predicate_and_batches(tmp_path: Path) -> None:
    rows = [_row(product_id=f"p{i}", timestamp=T0 + i) for i in range(25)]
    path = _write_lines(tmp_path / "events.ndjson", rows)
    batches = list(
        read_events(path, known_products=lambda pid: int(pid[1:]) % 2 == 0, batch_size=10)
    )
    assert len(batches) == 3
    rejects = [r for b in batches for r in b.rejects]
    assert [r.line for r in rejects] == list(range(2, 26, 2))  # odd ids are on even lines
    assert sum(len(b.events) for b in batches) == 13


def test_parquet_round_trip(tmp_path: Path) -> None:
    events = [
        Event("alice", T0, "s1", "search", "drill", None, None),
        Event("alice", T0 + 1, "s1", "click", "drill", "p1", 1),
        Event("bob", T0 + 2, "", "purchase", None, "p2", None),
    ]
    rows = [asdict(e) for e in events]
    pl.DataFrame(rows, infer_schema_length=None).write_parquet(tmp_path / "log.parquet")
    _write_lines(tmp_path / "log.jsonl", rows)
    for name in ("log.parquet", "log.jsonl"):
        got, rejects = _read_all(tmp_path / name)
        assert rejects == []
        assert got == events


def test_parquet_datetime_column_and_row_numbers(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "user_id": ["a", "b", None],
            "timestamp": [
                datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc),
                datetime(2023, 11, 14, 22, 13, 21, tzinfo=timezone.utc),
                datetime(2023, 11, 14, 22, 13, 22, tzinfo=timezone.utc),
            ],
            "event": ["view", "view", "view"],
            "product_id": ["p1", "p2", "p3"],
        }
    )
    path = tmp_path / "log.parquet"
    frame.write_parquet(path)
    events, rejects = _read_all(path)
    assert [e.timestamp for e in events] == [T0, T0 + 1]
    assert [e.session_id for e in events] == ["", ""]
    assert [(r.line, r.product_id, r.reason) for r in rejects] == [(3, "p3", "missing user_id")]


def test_iso_text_with_an_offset_reads_and_a_bad_row_is_rejected(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "bad.jsonl",
        [
            _row(event="nope"),
            _row(timestamp=datetime(2023, 11, 14, tzinfo=timezone.utc).isoformat()),
        ],
    )
    events, rejects = _read_all(path)
    assert [r.line for r in rejects] == [1]
    assert events[0].timestamp == parse_timestamp("2023-11-14T00:00:00Z")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_missing_required_column_is_one_line_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"log{suffix}"
    row = {"user_id": "u", "event": "view", "product_id": "p"}
    if suffix == ".parquet":
        pl.DataFrame([row]).write_parquet(path)
    else:
        _write_lines(path, [row])
    with pytest.raises(EventLogError) as info:
        _read_all(path)
    message = str(info.value)
    assert isinstance(info.value, ShopsearchError)
    assert "\n" not in message
    assert str(path) in message and "missing required column 'timestamp'" in message


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(EventLogError, match="no such file"):
        read_events(tmp_path / "missing.jsonl")
    with pytest.raises(EventLogError, match="cannot tell the event log format"):
        read_events(tmp_path / "log.csv")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(EventLogError, match="not a regular file"):
        read_events(tmp_path / "dir.jsonl")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([_row()]))
    with pytest.raises(EventLogError, match="looks like a JSON array"):
        _read_all(array)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(EventLogError, match="not a readable Parquet file") as info:
        _read_all(garbage)
    assert "\n" not in str(info.value)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"user_id": "caf\xe9"}\n')
    with pytest.raises(EventLogError, match="line 1 is not valid UTF-8"):
        _read_all(latin)
