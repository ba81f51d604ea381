"""analytics.report on the hand-made log of tests/tiny_search_log.py: each figure below is
worked out by hand from the table in that module's docstring."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from tiny_search_log import write_tiny_log

from analytics.report import analytics_report, day_window, parse_day, save_plots
from core.errors import EventLogError, ShopsearchError
from personalization.searchlog import write_segment


@pytest.fixture()
def log(tmp_path):
    return write_tiny_log(tmp_path / "log")


def test_totals_of_the_hand_made_log(log):
    r = analytics_report(log, min_shoppers=2)
    assert r.searches == 9  # s1..s9, page 2 (s3) included
    # u1, u2, u3, session sA, session sB, and the two sessionless anonymous searches as one
    assert r.shoppers == 6
    assert r.interactions == 5  # click+cart on s1, click s2, view s4, click s5
    assert r.ctr == pytest.approx(3 / 9)  # s1, s2, s5 have a click (s4's view is not one)
    assert r.abandonment == pytest.approx(5 / 9)  # s3, s6, s7, s8, s9: no interaction at all
    # clicks at 2 (given), 1 (s2: a is results[0]), 2 (given)
    assert r.mean_click_position == pytest.approx(5 / 3)
    assert r.zero_result == 2  # s6, s7 (s3 is a later page, and not empty)
    assert r.rescued == 2  # s4, s5: corrected and not empty
    assert r.distinct_queries == 4  # drill, hamer, zzz, secret thing (normalised)


def test_per_query_ctr_and_click_position(log):
    r = analytics_report(log, min_shoppers=2)
    rows = {q.query: q for q in r.top_queries}
    assert [q.query for q in r.top_queries] == ["drill", "hamer", "zzz"]  # 3, 2, 2 (ties a-z)
    drill = rows["drill"]
    assert (drill.searches, drill.shoppers, drill.zero_result) == (3, 2, 0)
    assert drill.ctr == pytest.approx(2 / 3) and drill.mean_click_position == 1.5
    hamer = rows["hamer"]
    assert (hamer.searches, hamer.shoppers) == (2, 2)  # sessions sA and sB
    assert hamer.ctr == 0.5 and hamer.mean_click_position == 2.0
    zzz = rows["zzz"]
    assert zzz.ctr == 0.0 and zzz.mean_click_position is None and zzz.zero_result == 2
    assert [(q.query, q.searches, q.shoppers) for q in r.zero_result_queries] == [("zzz", 2, 2)]
    assert [(q.query, q.corrected, q.searches) for q in r.rescued_queries] == [
        ("hamer", "hammer", 2)
    ]


def test_k_anonymity_holds_back_rare_queries_and_sums_them(log):
    r = analytics_report(log, min_shoppers=2)
    # "secret thing": two searches, both anonymous without a session: one shopper
    assert "secret thing" not in {q.query for q in r.top_queries}
    assert (r.rare_queries.queries, r.rare_queries.searches) == (1, 2)
    strict = analytics_report(log, min_shoppers=3)
    assert strict.top_queries == () and strict.zero_result_queries == ()
    assert strict.rescued_queries == ()
    assert (strict.rare_queries.queries, strict.rare_queries.searches) == (4, 9)
    assert (strict.rare_zero_result.queries, strict.rare_zero_result.searches) == (1, 2)
    assert (strict.rare_rescued.queries, strict.rare_rescued.searches) == (1, 2)
    md = strict.to_markdown()
    assert "*rare queries (4)* | 9 |" in md
    for text in ("drill", "hamer", "zzz", "secret"):  # no query text anywhere in it
        assert text not in md and text not in json.dumps(strict.to_dict())


def test_the_default_threshold_is_five_shoppers(log):
    r = analytics_report(log)
    assert r.min_shoppers == 5 and r.top_queries == ()


def test_per_day_figures(log):
    d1, d2 = analytics_report(log, min_shoppers=2).days
    assert d1.day == "2026-12-01" and d2.day == "2026-12-02"
    assert (d1.searches, d1.shoppers, d1.zero_result, d1.rescued) == (4, 3, 0, 1)
    assert (d1.clicked, d1.abandoned, d1.ctr, d1.abandonment) == (2, 1, 0.5, 0.25)
    assert d1.mean_click_position == 1.5
    # s5..s9: sB, u3, u1, and one anonymous shopper for s8+s9
    assert (d2.searches, d2.shoppers, d2.zero_result, d2.rescued) == (5, 4, 2, 1)
    assert (d2.clicked, d2.abandoned) == (1, 4)
    assert d2.ctr == pytest.approx(0.2) and d2.abandonment == pytest.approx(0.8)
    assert d2.mean_click_position == 2.0


def test_searches_per_shopper_leave_out_the_unattributed(log):
    s = analytics_report(log).searches_per_shopper
    # u1: s1, s7; u2: s2, s3; u3, sA, sB: one each; s8, s9 have neither pseudonym nor session
    assert (s.shoppers, s.max, s.unattributed_searches) == (5, 2, 2)
    assert s.mean == pytest.approx(7 / 5) and s.median == 1
    by = {b.searches: b.shoppers for b in s.buckets}
    assert by["1"] == 3 and by["2"] == 2 and sum(by.values()) == 5


def test_examination_counts_impressions_per_rank_and_runs_the_estimator(log):
    e = analytics_report(log).examination
    # rank 1: s1 s2 s4 s5 s8 s9; rank 2: s1 s2 s5; rank 3: s1 (s3 is at rank 11, past 10)
    assert e.impressions == (6, 3, 1)
    # interacted: s2's a and s4's h at 1; s1's b (click and cart: once) and s5's i at 2
    assert e.ctr_by_rank == pytest.approx((2 / 6, 2 / 3, 0.0))
    assert e.sampled_impressions == 10 and e.features == ("relevance", "personal")
    assert len(e.theta) == 3 and e.theta[0] == 1.0 and e.note == ""


def test_the_examination_curve_recovers_a_known_one(tmp_path):
    """Simulated clicks with examination 1/rank and relevance independent of the rank: the
    report's curve is the estimator's, close to the truth."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(3000):
        rel = rng.uniform(0, 1, 5)
        rows.append(
            {
                "event": "search",
                "timestamp": 1_796_083_200.0 + s,
                "search_id": f"s{s}",
                "pseudonym": f"u{s % 50}",
                "session": "",
                "query": "q",
                "offset": 0,
                "results": [f"p{i}" for i in range(5)],
                "relevance": rel.tolist(),
                "personal": [0.0] * 5,
            }
        )
        for i in range(5):
            if rng.uniform() < (1 / (i + 1)) * (0.2 + 0.6 * rel[i]):
                rows.append(
                    {
                        "event": "click",
                        "timestamp": 1_796_083_200.0 + s + 0.5,
                        "search_id": f"s{s}",
                        "pseudonym": f"u{s % 50}",
                        "product_id": f"p{i}",
                        "position": i + 1,
                    }
                )
    write_segment(tmp_path / "seg.parquet", rows)
    e = analytics_report(tmp_path, max_impressions=8000).examination
    assert e.sampled_impressions < 15000 and e.impressions == (3000,) * 5
    assert np.abs(np.array(e.theta) - 1 / np.arange(1, 6)).max() < 0.12


def test_the_window_is_of_whole_utc_days(log):
    r = analytics_report(log, since="2026-12-02", min_shoppers=2)
    assert r.searches == 5 and r.since == "2026-12-02" and [d.day for d in r.days] == ["2026-12-02"]
    r = analytics_report(log, until=dt.date(2026, 12, 1), min_shoppers=2)
    assert r.searches == 4 and r.until == "2026-12-01"
    assert day_window(dt.date(2026, 12, 1), dt.date(2026, 12, 1)) == (
        1_796_083_200.0,
        1_796_083_200.0 + 86_400,
    )


def test_bad_input_is_a_one_line_user_error(log, tmp_path):
    with pytest.raises(ShopsearchError, match=r"--since '2026-13-01': not a day; give it as"):
        parse_day("2026-13-01", "--since")
    with pytest.raises(ShopsearchError, match="since 2026-12-02 is after until 2026-12-01"):
        analytics_report(log, since="2026-12-02", until="2026-12-01")
    with pytest.raises(EventLogError, match="no such search log"):
        analytics_report(tmp_path / "nope")
    with pytest.raises(ShopsearchError, match="--min-shoppers 0: give at least 1"):
        analytics_report(log, min_shoppers=0)


def test_an_empty_window_is_a_report_of_zeros(log):
    r = analytics_report(log, since="2027-01-01")
    assert (r.searches, r.ctr, r.days, r.top_queries) == (0, 0.0, (), ())
    assert r.examination.theta == () and "no search" in r.examination.note
    assert "| searches (served pages) | 0 |" in r.to_markdown()


def test_json_and_markdown_carry_the_same_figures(log):
    r = analytics_report(log, min_shoppers=2)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["top_queries"][0] == {
        "query": "drill",
        "searches": 3,
        "shoppers": 2,
        "ctr": pytest.approx(2 / 3),
        "mean_click_position": 1.5,
        "zero_result": 0,
    }
    assert data["searches_per_shopper"]["buckets"][0] == {"searches": "1", "shoppers": 3}
    md = r.to_markdown()
    assert "| drill | 3 | 2 | 66.7% | 1.50 | 0 |" in md
    assert "| hamer | hammer | 2 | 2 |" in md
    assert "| 2026-12-02 | 5 | 4 | 20.0% | 2.00 | 80.0% | 2 | 1 |" in md


def test_plots_are_written(log, tmp_path):
    pytest.importorskip("matplotlib")
    files = save_plots(analytics_report(log, min_shoppers=2), tmp_path / "plots")
    assert sorted(f.name for f in files) == [
        "days.png",
        "examination.png",
        "queries.png",
        "shoppers.png",
    ]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in files)


def test_plots_without_matplotlib_say_what_to_install(log, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ShopsearchError, match=r"pip install 'shopsearch\[train\]'"):
        save_plots(analytics_report(log), tmp_path / "plots")


def test_a_click_on_a_product_its_search_did_not_show_is_not_that_searchs(tmp_path):
    """A page that posts the wrong search_id must not lift the query's click-through: the
    log knows what each search showed."""
    t = 1_796_000_000.0
    search = {"event": "search", "pseudonym": "p1", "session": "", "query": "impact driver",
              "offset": 0, "k": 3, "results": ["a", "b", "c"]}  # fmt: skip
    write_segment(
        tmp_path / "20261129T000000.000000Z-r-1.parquet",
        [
            {**search, "timestamp": t, "search_id": "s1"},
            {**search, "timestamp": t + 1, "search_id": "s2"},
            {"event": "click", "timestamp": t + 2, "search_id": "s1", "pseudonym": "p1",
             "product_id": "zzz"},  # not shown by s1
            {"event": "click", "timestamp": t + 3, "search_id": "s2", "pseudonym": "p1",
             "product_id": "c", "position": 1},  # shown at 3: the log's rank wins
            {"event": "click", "timestamp": t + 4, "search_id": "gone", "pseudonym": "p1",
             "product_id": "c"},  # its search is in no segment read: kept as posted
        ],
    )  # fmt: skip
    report = analytics_report(tmp_path, min_shoppers=1)
    assert report.searches == 2 and report.ctr == pytest.approx(0.5)
    assert report.mean_click_position == 3.0
