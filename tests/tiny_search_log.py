"""A hand-made search log of nine searches over two UTC days, whose analytics are worked out by
hand in tests/analytics/test_report.py (``from tiny_search_log import write_tiny_log``).

    s1  day 1  u1          "Drill"         [a b c]  click b (position 2), cart b (no position)
    s2  day 1  u2          " drill "       [a b]    click a (no position: rank 1 from results)
    s3  day 1  u2          "DRILL" page 2  [d]      nothing (offset 10)
    s4  day 1  session sA  "hamer"->hammer [h]      view h
    s5  day 2  session sB  "hamer"->hammer [h i]    click i (position 2)
    s6  day 2  u3          "zzz"           []       nothing (zero results)
    s7  day 2  u1          "zzz"           []       nothing (zero results)
    s8  day 2  anonymous   "secret thing"  [x]      nothing
    s9  day 2  anonymous   "Secret  Thing" [x]      nothing

Day 1 (closed Parquet segment) is 2026-12-01 UTC; day 2 (the live JSON Lines segment) 2026-12-02.
"""

from __future__ import annotations

import json
from pathlib import Path

from personalization.searchlog import write_segment

DAY1 = 1_796_083_200.0  # 2026-12-01T00:00:00Z
DAY2 = DAY1 + 86_400


def _search(sid, t, query, results, pseudonym=None, session="", offset=0, corrected=None):
    return {
        "event": "search",
        "timestamp": t,
        "search_id": sid,
        "pseudonym": pseudonym,
        "session": session,
        "replica": "test:1",
        "query": query,
        "corrected": corrected,
        "offset": offset,
        "k": 10,
        "results": results,
        "scores": [1.0 / (i + 1) for i in range(len(results))],
        "relevance": [1.0 / (i + 1) for i in range(len(results))],
        "personal": [0.0] * len(results),
        "total_candidates": len(results),
        "models": "{}",
        "rules": [],
        "took_ms": 3.0,
    }


def _event(kind, sid, t, product, position=None, pseudonym=None, session=""):
    return {
        "event": kind,
        "timestamp": t,
        "search_id": sid,
        "pseudonym": pseudonym,
        "session": session,
        "replica": "test:1",
        "product_id": product,
        "position": position,
    }


def tiny_rows() -> tuple[list[dict], list[dict]]:
    """(day 1's rows, day 2's rows)."""
    d1, d2 = DAY1 + 3600, DAY2 + 3600
    day1 = [
        _search("s1", d1, "Drill", ["a", "b", "c"], pseudonym="u1"),
        _event("click", "s1", d1 + 5, "b", 2, pseudonym="u1"),
        _event("add_to_cart", "s1", d1 + 9, "b", None, pseudonym="u1"),
        _search("s2", d1 + 60, " drill ", ["a", "b"], pseudonym="u2"),
        _event("click", "s2", d1 + 65, "a", None, pseudonym="u2"),
        _search("s3", d1 + 70, "DRILL", ["d"], pseudonym="u2", offset=10),
        _search("s4", d1 + 80, "hamer", ["h"], session="sA", corrected="hammer"),
        _event("view", "s4", d1 + 85, "h", None, session="sA"),
    ]
    day2 = [
        _search("s5", d2, "hamer", ["h", "i"], session="sB", corrected="hammer"),
        _event("click", "s5", d2 + 4, "i", 2, session="sB"),
        _search("s6", d2 + 10, "zzz", [], pseudonym="u3"),
        _search("s7", d2 + 20, "zzz", [], pseudonym="u1"),
        _search("s8", d2 + 30, "secret thing", ["x"]),
        _search("s9", d2 + 40, "Secret  Thing", ["x"]),
    ]
    return day1, day2


def write_tiny_log(folder: Path) -> Path:
    """The log as a service leaves it: day 1 a closed Parquet segment, day 2 the live JSON
    Lines one. Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    day1, day2 = tiny_rows()
    write_segment(folder / "20261201T000000Z-test.parquet", day1)
    with open(folder / "20261202T000000Z-test.jsonl", "w", encoding="utf-8") as fh:
        for row in day2:
            fh.write(json.dumps(row) + "\n")
    return folder
