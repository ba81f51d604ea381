"""bench-suggest, small: the synthetic log is a search log the Suggester reads, the prefix mix
has typos, and the command writes its report into a docs page."""

from __future__ import annotations

import json
import random

import polars as pl
from click.testing import CliRunner

from personalization.searchlog import SCHEMA, scan
from research.bench_suggest import _typo, prefixes, query_pool, write_log
from shopsearch.cli import main


def test_the_synthetic_log_has_the_schema_and_clicks(tmp_path, sample_products):
    payloads = [
        {"title": p.title, "brand": p.brand, "category": p.category} for p in sample_products
    ]
    queries = query_pool(payloads, 50, seed=1)
    assert len(queries) == len(set(queries)) >= 50
    rows, shoppers = write_log(tmp_path / "log", queries, ["a", "b"], 2000, seed=1)
    df = scan(tmp_path / "log").collect()
    assert df.schema == pl.Schema(SCHEMA) and df.height == rows
    searches = df.filter(pl.col("event") == "search")
    assert searches.height == 2000 and shoppers == 100
    share = df.filter(pl.col("event") == "click").height / 2000
    assert 0.35 < share < 0.55
    assert 0.05 < searches["pseudonym"].is_null().mean() < 0.15


def test_prefixes_and_typos():
    mix = prefixes(["cordless drill", "paint roller", "faucet"], 500, seed=2)
    assert all(1 <= len(p) <= 10 for p, t in mix if not t)  # a typo may insert one more
    typos = [p for p, t in mix if t]
    # 20% are given a typo where the last word has four letters or more
    assert 0.05 * 500 < len(typos) < 0.2 * 500
    assert not any(q.startswith(p) for p in typos for q in ("cordless drill", "paint roller"))
    rng = random.Random(0)
    assert _typo("dr", rng) == "dr"  # a short last word is left alone
    changed = _typo("cordless dril", rng)
    assert changed.startswith("cordless ") and changed != "cordless dril"


def test_bench_suggest_command_writes_its_docs_block(tmp_path):
    page = tmp_path / "suggestions.md"
    page.write_text("# Suggestions\n")
    args = ["bench-suggest", "--searches", "3000", "--products", "300", "--calls", "300"]
    args += ["--workdir", str(tmp_path / "work"), "--json", "--docs", str(page)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.splitlines()[0])
    assert figures["searches"] == 3000 and figures["calls"] == 300
    assert figures["entries"] >= figures["log_entries"] > 0
    assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]
    text = page.read_text()
    assert "<!-- end written: suggest-latency -->" in text and "p99" in text
