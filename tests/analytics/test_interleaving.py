"""Interleaving credit from a hand-built search log: known wins, losses, ties, the sign test."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from analytics.interleaving import outcomes, report, verdict
from personalization.searchlog import frame, write_segment
from shopsearch.cli import main

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _search(sid, teams, *, experiment="exp", t=T0, offset=0, results=None):
    results = results or [f"p{offset + i}" for i in range(len(teams))]
    return {
        "event": "search",
        "timestamp": t,
        "search_id": sid,
        "pseudonym": "ps-1",
        "query": "drill",
        "offset": offset,
        "k": len(results),
        "results": results,
        "experiment": experiment,
        "teams": teams,
    }


def _click(sid, product=None, position=None, t=T0 + 5, event="click"):
    return {
        "event": event,
        "timestamp": t,
        "search_id": sid,
        "pseudonym": "ps-1",
        "product_id": product,
        "position": position,
    }


@pytest.fixture()
def log_rows():
    teams = ["A", "B", "A", "B"]
    rows = [
        # s1: one click on A's pick -> A
        _search("s1", teams),
        _click("s1", "p0"),
        # s2: two on B's picks (one by position only), one on A's -> B
        _search("s2", teams),
        _click("s2", "p1"),
        _click("s2", position=4),
        _click("s2", "p2"),
        # s3: one each -> tie; the repeated click counts once
        _search("s3", teams),
        _click("s3", "p0"),
        _click("s3", "p0"),
        _click("s3", "p1"),
        # s4: no click -> unclicked; a cart alone is not a click
        _search("s4", teams),
        _click("s4", "p0", event="add_to_cart"),
        # s5: a second page (offset 4): a click by position 6 is its 2nd product (B's)
        _search("s5", teams, offset=4),
        _click("s5", position=6),
        # s6: a click on a product not shown, and on a pinned product (no team) -> unclicked
        _search("s6", ["A", None, "B"], results=["p0", "pin", "p2"]),
        _click("s6", "elsewhere"),
        _click("s6", "pin"),
        # s7: A, in the other experiment
        _search("s7", teams, experiment="other"),
        _click("s7", "p2"),
        # not interleaved: ignored
        {**_search("s8", teams, experiment=None), "teams": None},
        _click("s8", "p0"),
    ]
    return rows


def test_outcomes_credit_each_search(log_rows):
    got = outcomes(frame(log_rows))
    by_id = {r["search_id"]: r for r in got.iter_rows(named=True)}
    assert set(by_id) == {"s1", "s2", "s3", "s4", "s5", "s6", "s7"}
    assert [by_id[s]["outcome"] for s in ("s1", "s2", "s3", "s4", "s5", "s6", "s7")] == [
        "A", "B", "tie", None, "B", None, "A",
    ]  # fmt: skip
    assert (by_id["s2"]["clicks_a"], by_id["s2"]["clicks_b"]) == (1, 2)
    assert (by_id["s3"]["clicks_a"], by_id["s3"]["clicks_b"]) == (1, 1)


def test_report_per_experiment(tmp_path, log_rows):
    (tmp_path / "log").mkdir()
    write_segment(tmp_path / "log" / "2026-01-01.parquet", log_rows)
    results = {r.experiment: r for r in report(tmp_path / "log")}
    exp = results["exp"]
    assert (exp.searches, exp.unclicked, exp.wins, exp.losses, exp.ties) == (6, 2, 1, 2, 1)
    assert exp.delta == pytest.approx((1 + 0.5) / 4 - 0.5)
    assert exp.p_value == pytest.approx(binomtest(1, 3, 0.5).pvalue)
    assert exp.share_a == pytest.approx(1 / 3) and exp.ci_low < 1 / 3 < exp.ci_high
    assert results["other"].wins == 1 and results["other"].losses == 0
    assert [r.experiment for r in report(tmp_path / "log", experiment="other")] == ["other"]


def test_significance_against_scipy_and_the_winner():
    for wins, losses, ties in ((60, 40, 7), (30, 70, 0), (10, 10, 3), (0, 0, 5)):
        got = verdict("e", wins + losses + ties + 2, wins, losses, ties)
        if wins + losses:
            assert got.p_value == pytest.approx(binomtest(wins, wins + losses).pvalue)
        else:
            assert got.p_value is None and got.winner is None
        assert got.delta == pytest.approx((wins + ties / 2) / (wins + losses + ties) - 0.5)
    assert verdict("e", 100, 30, 70, 0).winner == "B"
    assert verdict("e", 100, 60, 40, 0).winner is None  # p = 0.057
    assert verdict("e", 3, 0, 0, 0).delta is None


def test_window_keeps_late_clicks_of_searches_inside_it(tmp_path):
    day = 86_400
    rows = [
        _search("early", ["A", "B"], t=T0),
        _click("early", "p1", t=T0 + 10),
        _search("late", ["A", "B"], t=T0 + day - 1),
        _click("late", "p0", t=T0 + day + 30),  # after the window: still counts
    ]
    write_segment(tmp_path / "seg.parquet", rows)
    (got,) = report(tmp_path / "seg.parquet", since=T0 + 100, until=T0 + day)
    assert (got.searches, got.wins, got.losses) == (1, 1, 0)


def test_cli_report_markdown_and_json(tmp_path, log_rows):
    (tmp_path / "log").mkdir()
    write_segment(tmp_path / "log" / "a.parquet", log_rows)
    runner = CliRunner()
    md = runner.invoke(main, ["interleave", "report", str(tmp_path / "log")])
    assert md.exit_code == 0, md.output
    assert "| exp | 6 | 2 | 1 | 2 | 1 | -0.125 |" in md.output
    js = runner.invoke(
        main,
        ["interleave", "report", str(tmp_path / "log"), "--experiment", "exp", "--format", "json"],
    )
    assert js.exit_code == 0, js.output
    (only,) = json.loads(js.output)
    assert only["experiment"] == "exp" and only["wins"] == 1 and only["winner"] is None
    # a day window: 2026-01-02 holds nothing
    empty = runner.invoke(
        main, ["interleave", "report", str(tmp_path / "log"), "--since", "2026-01-02"]
    )
    assert empty.exit_code == 0 and "No interleaved search" in empty.output
    typo = runner.invoke(
        main, ["interleave", "report", str(tmp_path / "log"), "--experiment", "epx"]
    )
    assert typo.exit_code == 2 and "'epx'" in typo.output and "it has: exp" in typo.output
    missing = runner.invoke(main, ["interleave", "report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such search log" in missing.output
    bad = runner.invoke(main, ["interleave", "report", str(tmp_path / "log"), "--since", "May"])
    assert bad.exit_code == 2 and "--since" in bad.output
