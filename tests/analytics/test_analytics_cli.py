"""``shopsearch analytics LOG...`` with CliRunner on the hand-made log
(tests/tiny_search_log.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tiny_search_log import write_tiny_log

from shopsearch.cli import main


@pytest.fixture()
def log(tmp_path):
    return write_tiny_log(tmp_path / "log")


def run(*args: str):
    return CliRunner().invoke(main, ["analytics", *map(str, args)])


def test_markdown_report_on_stdout(log):
    got = run(log, "--min-shoppers", "2")
    assert got.exit_code == 0, got.output
    assert got.stdout.startswith("# Search analytics")
    assert "| drill | 3 | 2 | 66.7% | 1.50 | 0 |" in got.stdout
    assert "*rare queries (1)* | 2 |" in got.stdout  # "secret thing": one anonymous shopper


def test_json_report_to_a_file_with_a_window_and_top(log, tmp_path):
    out = tmp_path / "reports" / "day2.json"
    got = run(log, "--since", "2026-12-02", "--format", "json", "--top", "1", "--min-shoppers",
              "2", "--out", out)  # fmt: skip
    assert got.exit_code == 0, got.output
    assert got.stdout == "" and f"wrote {out}" in got.stderr
    data = json.loads(out.read_text())
    assert data["since"] == "2026-12-02" and data["searches"] == 5
    # day 2: zzz by u3 and u1 (listed); hamer by session sB only and "secret thing" by the
    # sessionless anonymous: one shopper each, summed
    assert [q["query"] for q in data["top_queries"]] == ["zzz"]
    assert data["rare_queries"] == {"queries": 2, "searches": 3}


def test_default_threshold_lists_no_query_of_the_tiny_log(log):
    got = run(log, "--format", "json")
    assert got.exit_code == 0, got.output
    data = json.loads(got.stdout)
    assert data["min_shoppers"] == 5 and data["top_queries"] == []
    assert data["rare_queries"] == {"queries": 4, "searches": 9}


def test_plots(log, tmp_path):
    pytest.importorskip("matplotlib")
    got = run(log, "--plots", tmp_path / "plots", "--out", tmp_path / "r.md")
    assert got.exit_code == 0, got.output
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "days.png",
        "examination.png",
        "queries.png",
        "shoppers.png",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "error: --since 'yesterday': not a day; give it as YYYY-MM-DD"),
        (
            ["--since", "2026-12-03", "--until", "2026-12-01"],
            "error: since 2026-12-03 is after until 2026-12-01",
        ),
        (["--top", "0"], "Invalid value for '--top'"),
    ],
)
def test_bad_options_are_one_line_exit_2(log, args, message):
    got = run(log, *args)
    assert got.exit_code == 2 and message in got.stderr
    if "error:" in message:
        assert got.stderr.count("\n") == 1 and "Traceback" not in got.output


def test_a_missing_log_is_one_line_exit_2(tmp_path):
    got = run(tmp_path / "nope")
    assert got.exit_code == 2
    assert got.stderr == f"error: {tmp_path / 'nope'}: no such search log file or folder\n"


def test_every_option_has_help():
    from shopsearch.cli.analytics import analytics_cmd

    assert all(p.help for p in analytics_cmd.params if hasattr(p, "help") and p.name != "logs")


def test_the_threshold_default_is_the_library_s():
    from analytics.report import MIN_SHOPPERS
    from shopsearch.cli.analytics import analytics_cmd

    (option,) = [p for p in analytics_cmd.params if p.name == "min_shoppers"]
    assert option.default == MIN_SHOPPERS  # a literal there: --help loads no polars


def test_shoppers_erased_since_a_segment_was_written_are_left_out(tmp_path):
    """The log folder's own key (a service without profiles) finds the tombstoned shopper's
    rows in a segment not rewritten yet."""
    from personalization.searchlog import FORGOTTEN_FILE, write_segment
    from personalization.searchlog_writer import log_pseudonymizer

    folder = tmp_path / "log"
    pz = log_pseudonymizer(folder)
    rows = [
        {"event": "search", "timestamp": 1_796_000_000.0 + i, "search_id": f"s{i}",
         "pseudonym": pz.pseudonym(user), "session": "", "query": "drill", "offset": 0,
         "k": 10, "results": ["p1"]}
        for i, user in enumerate(["alice", "bob"])
    ]  # fmt: skip
    write_segment(folder / "20261129T000000.000000Z-other-1.parquet", rows)
    (folder / FORGOTTEN_FILE).write_text(pz.tombstone(pz.pseudonym("alice")) + "\n")
    got = run(folder, "--format", "json")
    assert got.exit_code == 0, got.output
    assert (json.loads(got.stdout)["searches"], json.loads(got.stdout)["shoppers"]) == (1, 1)
