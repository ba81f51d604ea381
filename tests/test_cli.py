"""The CLI end to end with CliRunner: thin commands, one-line errors, JSON for programs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shopsearch.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def indexed(runner, tmp_path, tiny_model):
    catalog = tmp_path / "catalog.csv"
    result = runner.invoke(main, ["sample-catalog", str(catalog), "--n", "120", "--seed", "5"])
    assert result.exit_code == 0, result.output
    index = tmp_path / "index"
    result = runner.invoke(
        main,
        [
            "index",
            str(catalog),
            "--index",
            str(index),
            "--model",
            str(tiny_model),
            "--no-progress",
            "--json",
            "--rejects",
            str(tmp_path / "rejects.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    return catalog, index, json.loads(result.stdout)


def test_index_summary_json(indexed):
    _, _, summary = indexed
    assert summary["indexed"] == summary["total"] == 120
    assert summary["rejected"] == 0
    assert summary["items_per_s"] > 0


def test_search_json_and_table(runner, indexed):
    _, index, _ = indexed
    result = runner.invoke(
        main, ["search", "cordless drill", "--index", str(index), "-k", "7", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"] == "cordless drill"
    assert len(payload["hits"]) == 7
    assert {"rank", "product_id", "score", "scores", "product"} <= set(payload["hits"][0])
    assert payload["hits"][0]["product"]["title"]
    result = runner.invoke(
        main, ["search", "cordless drill", "--index", str(index), "-k", "3", "--mode", "bm25"]
    )
    assert result.exit_code == 0
    assert "3 result(s)" in result.stdout
    assert len([ln for ln in result.stdout.splitlines() if ln.strip()[:1].isdigit()]) == 3


def test_search_filters(runner, indexed):
    _, index, _ = indexed
    result = runner.invoke(
        main,
        [
            "search",
            "light",
            "--index",
            str(index),
            "-k",
            "50",
            "--json",
            "--in-stock",
            "--max-price",
            "100",
            "--category",
            "Lighting",
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits
    assert all(
        h["product"]["in_stock"]
        and h["product"]["price"] <= 100
        and h["product"]["category"].startswith("Lighting")
        for h in hits
    )


def test_info(runner, indexed, tiny_model):
    _, index, _ = indexed
    result = runner.invoke(main, ["info", "--index", str(index)])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["points"] == 120 and info["model"]["dim"] == 32


def test_sync_mode_from_cli(runner, indexed, tmp_path, tiny_model):
    catalog, index, _ = indexed
    lines = catalog.read_text().splitlines()
    smaller = tmp_path / "smaller.csv"
    smaller.write_text("\n".join(lines[:101]) + "\n")  # header + 100 products
    result = runner.invoke(
        main,
        [
            "index",
            str(smaller),
            "--index",
            str(index),
            "--mode",
            "sync",
            "--model",
            str(tiny_model),
            "--no-progress",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["deleted"], summary["unchanged"], summary["total"]) == (20, 100, 100)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "  ", "--index", "{index}"], "query is empty"),
        (
            ["search", "drill", "--index", "{index}", "--qdrant-url", "http://localhost:6333"],
            "Only one of",
        ),
        (["search", "drill", "--index", "{tmp}/missing"], "no shopsearch index"),
        (["search", "drill"], "no index given"),
        (
            ["search", "drill", "--index", "{index}", "--min-price", "50", "--max-price", "10"],
            "above max_price",
        ),
        (["index", "{tmp}/nope.csv", "--index", "{tmp}/i2"], "nope.csv"),
        (["index", "{tmp}/catalog.txt", "--index", "{tmp}/i2"], ".txt"),
        (
            ["index", "{tmp}/empty.csv", "--index", "{tmp}/i2", "--rejects", "{tmp}/r.csv"],
            "no valid product",
        ),
        (
            ["index", "{catalog}", "--index", "{tmp}/i3", "--model", "{tmp}/no-model"],
            "not a local sentence-transformers folder",
        ),
    ],
)
def test_user_mistakes_are_one_line_errors(runner, indexed, tmp_path, args, message):
    catalog, index, _ = indexed
    (tmp_path / "catalog.txt").write_text("x")
    (tmp_path / "empty.csv").write_text("product_id,title\n,\n")
    argv = [a.format(index=index, tmp=tmp_path, catalog=catalog) for a in args]
    result = runner.invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "i2" / "CURRENT").exists()


def test_env_var_supplies_qdrant_url(runner, indexed, monkeypatch):
    _, index, _ = indexed
    monkeypatch.setenv("SHOPSEARCH_QDRANT_URL", "http://localhost:6333")
    result = runner.invoke(main, ["search", "drill", "--index", str(index)])
    assert result.exit_code == 2
    assert "SHOPSEARCH_QDRANT_URL" in result.stderr


def test_every_option_has_help():
    import click

    def walk(cmd):
        yield cmd
        if isinstance(cmd, click.Group):
            for sub in cmd.commands.values():
                yield from walk(sub)

    for cmd in walk(main):
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{cmd.name} --{param.name} has no help"
