"""``shopsearch suggest PREFIX``: the catalog's completions, the log's, one-line errors."""

from __future__ import annotations

import json

from click.testing import CliRunner

from personalization import searchlog
from shopsearch.cli import main


def test_suggest_prints_catalog_completions(index_dir):
    result = CliRunner().invoke(main, ["suggest", "drill", "--index", str(index_dir), "-k", "5"])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert len(lines) == 5 and all(source == "catalog" for _, source, _ in lines)
    assert "drill" in [text.lower() for text, _, _ in lines]


def test_suggest_reads_a_search_log_with_the_shopper_guard(index_dir, tmp_path):
    rows = []
    for i in range(3):
        rows.append(
            {
                "event": "search",
                "search_id": f"s{i}",
                "pseudonym": f"p{i}",
                "session": "",
                "timestamp": 1_800_000_000.0 + i,
                "query": "Sawhorse Brackets",
            }  # fmt: skip
        )
        rows.append({"event": "purchase", "search_id": f"s{i}", "timestamp": 1_800_000_010.0})
    log = tmp_path / "log"
    log.mkdir()
    searchlog.write_segment(log / "20261201T000000Z-a.parquet", rows)
    args = ["suggest", "sawhorse", "--index", str(index_dir), "--search-log", str(log), "--json"]
    out = json.loads(CliRunner().invoke(main, [*args, "--min-shoppers", "3"]).output)
    assert [(s["text"], s["source"]) for s in out["suggestions"]] == [("sawhorse brackets", "log")]
    assert out["built_from"]["min_shoppers"] == 3 and out["built_from"]["log_entries"] == 1
    out = json.loads(CliRunner().invoke(main, args).output)  # default 5 shoppers
    assert out["suggestions"] == [] and out["built_from"]["kept_out"] == 1


def test_suggest_mistakes_are_one_line(index_dir, tmp_path):
    missing = CliRunner().invoke(main, ["suggest", "dri", "--index", str(tmp_path / "none")])
    assert missing.exit_code == 2 and missing.output.startswith("error: ")
    assert len(missing.output.strip().splitlines()) == 1
    user = CliRunner().invoke(main, ["suggest", "dri", "--index", str(index_dir), "--user", "u"])
    assert user.exit_code == 2 and "--profiles" in user.output
