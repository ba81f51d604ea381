"""``shopsearch rules add|list|remove|test`` with CliRunner (rules in a tmp --rules-dir; the
shared tiny index is only read)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shopsearch.cli import main


@pytest.fixture()
def run(index_dir, tmp_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(
            main, ["rules", *args, "--index", str(index_dir), "--rules-dir", str(tmp_path)]
        )

    return invoke


def test_add_list_remove(run, drills, tmp_path):
    got = run("add", "Cordless  Drill", "--pin", drills[0], "--at", "3", "--note", "promo")
    assert got.exit_code == 0, got.output
    assert got.output.strip() == f'added r1: pin {drills[0]} at 3 for exact "cordless drill"'
    got = run("add", "drill", "--match", "contains", "--hide", drills[1], "--hide", drills[2])
    assert got.exit_code == 0, got.output
    got = run("add", "--match", "any", "--boost", "brand = Ridgeline", "--by", "20", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["id"] == "r3"
    got = run("add", "sofa", "--redirect", "couch", "--id", "sofa-couch", "--start", "2026-12-24")
    assert got.exit_code == 0, got.output
    listed = run("list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].endswith("# promo") and lines[1].startswith(f"r2: hide {drills[1]}, ")
    assert "boost [brand = Ridgeline] +20% for any query" in lines[2]
    assert "from 2026-12-24T00:00:00Z until ever" in lines[3]
    assert [r["id"] for r in json.loads(run("list", "--json").stdout)] == [
        "r1",
        "r2",
        "r3",
        "sofa-couch",
    ]
    assert run("remove", "r2").output.startswith("removed r2: hide")
    assert json.loads((tmp_path / "rules.json").read_text())["kind"] == "shopsearch-rules/v1"
    assert "r2" not in run("list").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drill", "--pin", "NOPE-1", "--at", "1"], "product 'NOPE-1' is not in the index"),
        (["drill", "--pin", "{d}", "--at", "1001"], "not within 1 to 1000"),
        (["drill", "--boost", "voltage >= 18", "--by", "10"], "voltage"),
        (["drill", "--boost", "brand = = x", "--by", "10"], "filter"),
        (["drill", "--hide", "{d}", "--redirect", "x"], "exactly one action"),
        (["drill", "--hide", "{d}", "--end", "tomorrow"], "ISO 8601"),
        (["--hide", "{d}"], "needs a query"),
    ],
)
def test_a_bad_rule_is_a_one_line_error_and_nothing_is_saved(run, drills, tmp_path, args, message):
    got = run("add", *[a.replace("{d}", drills[0]) for a in args])
    assert got.exit_code == 2, got.output
    assert message in got.stderr and len(got.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rules.json").exists()


def test_overlapping_pins_and_unknown_ids_are_refused(run, drills):
    assert run("add", "drill", "--pin", drills[0], "--at", "2").exit_code == 0
    got = run("add", "DRILL", "--pin", drills[1], "--at", "2")
    assert got.exit_code == 2 and "rule r1 already pins position 2" in got.stderr
    got = run("remove", "r9")
    assert got.exit_code == 2 and "no rule 'r9'" in got.stderr


def test_a_server_index_needs_a_rules_dir():
    got = CliRunner().invoke(main, ["rules", "list", "--qdrant-url", "http://localhost:1"])
    assert got.exit_code == 2 and "--rules-dir" in got.stderr


def test_test_shows_the_rules_that_fire_and_what_moved(run, drills):
    plain = run("test", "cordless drill", "-k", "5", "--json")
    assert plain.exit_code == 0, plain.output
    before = json.loads(plain.stdout)
    assert before["fired"] == [] and len(before["hits"]) == 5
    last = before["hits"][-1]["product_id"]
    assert run("add", "cordless drill", "--pin", last, "--at", "1").exit_code == 0
    assert run("add", "drill", "--match", "contains", "--hide", drills[0]).exit_code == 0
    xmas = ["--start", "2099-12-24", "--end", "2099-12-27"]
    assert run("add", "cordless drill", "--pin", drills[1], "--at", "2", *xmas).exit_code == 0
    got = run("test", "Cordless drill", "-k", "5")
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert lines[0] == '"Cordless drill": 2 rule(s) fire'
    assert lines[1].startswith(f"  r1: pin {last} at 1") and lines[2].startswith("  r2: hide")
    assert lines[3].startswith("  not now: r3: pin")
    first = lines[5].split()
    assert first[:4] == ["1", "5", "pin", "r1"] and first[4] == last
    data = json.loads(run("test", "cordless drill", "-k", "5", "--json").stdout)
    assert data["hits"][0]["merchandising"] == [{"rule": "r1", "action": "pin"}]
    assert data["hits"][0]["rank_without_rules"] == 5
    assert drills[0] not in [h["product_id"] for h in data["hits"]]


def test_search_marks_what_a_rule_moved(run, index_dir, tmp_path):
    runner = CliRunner()
    where = ["--index", str(index_dir), "--rules-dir", str(tmp_path)]
    plain = json.loads(runner.invoke(main, ["search", "drill", "-k", "5", "--json", *where]).stdout)
    last = plain["hits"][-1]["product_id"]
    assert "rules" not in plain
    assert run("add", "drill", "--pin", last, "--at", "1").exit_code == 0
    assert run("add", "lamp", "--redirect", "drill").exit_code == 0
    table = runner.invoke(main, ["search", "drill", "-k", "5", *where])
    assert table.exit_code == 0, table.output
    first = table.output.splitlines()[2]
    assert first.split()[2] == last and first.endswith("[pin r1]")
    got = json.loads(runner.invoke(main, ["search", "drill", "-k", "5", "--json", *where]).stdout)
    assert got["rules"] == ["r1"] and got["hits"][0]["merchandising"][0]["rule"] == "r1"
    off = runner.invoke(main, ["search", "drill", "-k", "5", "--json", "--no-rules", *where])
    assert [h["product_id"] for h in json.loads(off.stdout)["hits"]] == [
        h["product_id"] for h in plain["hits"]
    ]
    moved = runner.invoke(main, ["search", "lamp", "-k", "3", *where])
    assert moved.output.startswith('searched "drill" instead')
