"""bench-analytics on a small synthetic log: the log is the service's format with what the
module docstring says in it, a second run reuses it, and the command writes its docs block."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from click.testing import CliRunner

from personalization.searchlog import SCHEMA, scan
from research.bench_analytics import generate_log, run
from research.cli import bench_analytics_cmd


def test_the_synthetic_log_is_a_search_log(tmp_path):
    stats = generate_log(tmp_path / "log", 5000, days=3, segment_searches=2000, seed=1)
    assert (stats.searches, stats.segments) == (5000, 3)
    assert stats.bytes == sum(p.stat().st_size for p in (tmp_path / "log").glob("*.parquet"))
    log = scan(tmp_path / "log").collect()
    assert log.schema == pl.Schema(SCHEMA)
    searches = log.filter(pl.col("event") == "search")
    assert searches.height == 5000 and searches["search_id"].n_unique() == 5000
    assert log.height - 5000 == stats.interactions
    assert log["timestamp"].is_sorted()  # segments in time order, rows in order within
    days = (searches["timestamp"] // 86400).n_unique()
    assert days == 3
    anonymous = searches["pseudonym"].is_null().mean()
    assert 0.15 < anonymous < 0.25
    first = searches.filter(pl.col("offset") == 0)
    empty = (first["results"].list.len() == 0).mean()
    assert 0.01 < empty < 0.06
    clicks = log.filter(pl.col("event") == "click").select("search_id", "product_id", "position")
    # every click names a product its search showed, at the position it was shown
    joined = clicks.join(searches.select("search_id", "results", "offset"), on="search_id")
    rank = joined["position"] - joined["offset"] - 1
    shown = [r[i] for r, i in zip(joined["results"].to_list(), rank.to_list(), strict=True)]
    assert shown == joined["product_id"].to_list()


def test_run_times_two_reports_and_reuses_the_log(tmp_path):
    bench = run(tmp_path, 20_000, days=2, segment_searches=5000, seed=0)
    assert bench.cold_s > 0 and bench.warm_s > 0 and bench.threads >= 1
    assert 0.3 < bench.ctr < 0.7
    # the simulated examination is 1 / rank
    assert np.abs(np.array(bench.theta[:3]) - [1, 1 / 2, 1 / 3]).max() < 0.1
    assert "size on disk" in (tmp_path / "analytics.md").read_text()
    assert json.loads((tmp_path / "analytics.json").read_text())["log"]["searches"] == 20_000
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "log").glob("*.parquet")}
    again = run(tmp_path, 20_000, days=2, segment_searches=5000, seed=0)
    assert again.log == bench.log  # the same log, not written again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "log").glob("*.parquet")} == mtimes


def test_the_command_writes_its_docs_block(tmp_path):
    page = tmp_path / "analytics.md"
    page.write_text("# Analytics\n")
    got = CliRunner().invoke(
        bench_analytics_cmd,
        ["--workdir", str(tmp_path / "w"), "--searches", "3000", "--segment-searches", "1000",
         "--days", "2", "--docs", str(page)],
    )  # fmt: skip
    assert got.exit_code == 0, got.output
    text = page.read_text()
    assert "<!-- written by: shopsearch" in text and "<!-- end written: analytics -->" in text
    assert "3,000 searches" in text
