"""The CLI end to end with CliRunner: thin commands, one-line errors, JSON for programs."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from shopsearch.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def indexed(runner, tmp_path, tiny_model):
    from catalog.sample import write_sample_catalog

    catalog = write_sample_catalog(tmp_path / "catalog.csv", n=120, seed=5)
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


def test_search_says_why_a_filter_matched_nothing(runner, indexed):
    _, index, _ = indexed
    args = ["search", "light", "--index", str(index), "--brand", "No Such Brand"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "0 result(s)" in result.stdout
    assert "no product has brand" in result.stderr
    as_json = json.loads(runner.invoke(main, [*args, "--json"]).stdout)
    assert as_json["hits"] == [] and "no product has brand" in as_json["note"]


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


def _walk(group, ctx=None):
    """Every command under a group, plugin commands (entry points) included."""
    import click

    ctx = ctx or click.Context(group)
    yield group
    if isinstance(group, click.Group):
        for name in group.list_commands(ctx):
            yield from _walk(group.get_command(ctx, name), ctx)


def test_every_command_and_option_has_help():
    import click

    names = set()
    for cmd in _walk(main):
        names.add(cmd.name)
        assert cmd.help, f"{cmd.name} has no help"
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.help, f"{cmd.name} --{param.name} has no help"
    # the README's core commands (research's, from entry points: tests/research/)
    assert {
        "index", "search", "info", "import", "homedepot", "train", "retriever", "reranker",
        "events", "ingest", "forget-user", "serve", "personal",
    } <= names  # fmt: skip


def test_unknown_command_is_a_usage_error(runner):
    result = runner.invoke(main, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.stderr


def test_a_bug_keeps_its_traceback(runner, monkeypatch, tmp_path):
    """Only ShopsearchError is a user error: a RuntimeError or a bare ValueError is a bug."""
    import retrieval.retriever

    for exc in (RuntimeError("boom"), ValueError("internal invariant broken")):

        def broken(*args, _exc=exc, **kwargs):
            raise _exc

        monkeypatch.setattr(retrieval.retriever.Retriever, "open", broken)
        result = runner.invoke(main, ["search", "drill", "--index", str(tmp_path)])
        assert result.exit_code not in (0, 2), result.output
        assert result.exception is exc
        assert "error:" not in result.stderr
        # outside the test runner the exception propagates, so Python prints its traceback
        with pytest.raises(type(exc)):
            runner.invoke(
                main, ["search", "drill", "--index", str(tmp_path)], catch_exceptions=False
            )


def test_a_user_mistake_is_one_line_and_exit_2(runner, monkeypatch, tmp_path):
    import retrieval.retriever
    from core.errors import ShopsearchError

    def refuse(*args, **kwargs):
        raise ShopsearchError("the index at X was built with another model")

    monkeypatch.setattr(retrieval.retriever.Retriever, "open", refuse)
    result = runner.invoke(main, ["search", "drill", "--index", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == "error: the index at X was built with another model\n"
    assert result.stdout == ""


def test_threads_and_the_pseudonym_key_reach_the_models_as_parameters(
    runner, monkeypatch, tmp_path
):
    """--threads / SHOPSEARCH_THREADS and SHOPSEARCH_PSEUDONYM_KEY are read by the command line
    and passed on; no process-wide variable is set for the library to read."""
    from core.errors import ShopsearchError
    from rerank.pipeline import SearchPipeline

    seen: list[dict] = []

    def record(cls, index=None, **kwargs):
        seen.append(kwargs)
        raise ShopsearchError("recorded")

    monkeypatch.setattr(SearchPipeline, "open", classmethod(record))
    monkeypatch.delenv("SHOPSEARCH_THREADS", raising=False)
    monkeypatch.delenv("SHOPSEARCH_PSEUDONYM_KEY", raising=False)
    search = ["search", "drill", "--index", str(tmp_path)]
    assert runner.invoke(main, [*search, "--threads", "3"]).exit_code == 2
    assert seen[-1]["threads"] == 3 and seen[-1]["pseudonym_key"] is None
    assert "SHOPSEARCH_THREADS" not in os.environ
    key = "ab" * 32
    env = {"SHOPSEARCH_THREADS": "2", "SHOPSEARCH_PSEUDONYM_KEY": key}
    assert runner.invoke(main, search, env=env).exit_code == 2
    assert seen[-1]["threads"] == 2 and seen[-1]["pseudonym_key"] == key
    assert runner.invoke(main, search).exit_code == 2
    assert seen[-1]["threads"] is None  # the library's default: the physical cores
    bad = runner.invoke(main, search, env={"SHOPSEARCH_THREADS": "lots"})
    assert bad.exit_code == 2 and "--threads" in bad.stderr


def test_keyboard_interrupt_exits_130(runner, monkeypatch, tmp_path):
    import retrieval.retriever

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(retrieval.retriever.Retriever, "open", interrupted)
    result = runner.invoke(main, ["search", "drill", "--index", str(tmp_path)])
    assert result.exit_code == 130
    assert "interrupted" in result.stderr


@pytest.mark.slow
def test_train_personal_from_a_log_leaves_out_forgotten_shoppers(runner, indexed, tmp_path):
    """The documented loop: events ingest, forget-user, train personal (--profiles)."""
    import numpy as np

    _, index, _ = indexed
    shown = {}
    for q in ("cordless drill", "circular saw", "hammer"):
        result = runner.invoke(main, ["search", q, "--index", str(index), "-k", "10", "--json"])
        assert result.exit_code == 0, result.output
        shown[q] = [h["product_id"] for h in json.loads(result.stdout)["hits"]]
    rng = np.random.default_rng(0)
    rows, t0 = [], 1_750_000_000
    for u in range(12):
        for d in range(10):
            q = list(shown)[(u + d) % 3]
            ts, sid, user = t0 + d * 86400 + u * 60, f"s{u}-{d}", f"user{u}@example.com"
            rows.append(
                {
                    "user_id": user,
                    "timestamp": ts,
                    "session_id": sid,
                    "event": "search",
                    "query": q,
                    "search_id": sid,
                    "results": shown[q],
                }
            )
            for pos in range(1, 11):  # position bias 1 / rank, a taste for odd positions
                if rng.random() < 1 / pos and rng.random() < (0.7 if pos % 2 else 0.2):
                    rows.append(
                        {
                            "user_id": user,
                            "timestamp": ts + pos,
                            "session_id": sid,
                            "event": "click",
                            "product_id": shown[q][pos - 1],
                            "search_id": sid,
                            "position": pos,
                        }
                    )
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    profiles = tmp_path / "profiles"
    args = ["--index", str(index)]
    result = runner.invoke(main, ["events", "ingest", str(log), "--profiles", str(profiles), *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["forget-user", "user0@example.com", "--profiles", str(profiles)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "personal"
    train = ["train", "personal", str(log), str(out), *args, "--val-days", "3"]
    result = runner.invoke(main, [*train, "--profiles", str(profiles)])
    assert result.exit_code == 0, result.output
    forgotten = sum(1 for r in rows if r["user_id"] == "user0@example.com")
    assert f"left out {forgotten} events of 1 forgotten shoppers" in result.output
    meta = json.loads((out / "personal.json").read_text())
    assert meta["click_stats"] and len(meta["propensity"]) == 10
    assert (out / "click_stats.npz").exists() and (out / "report.md").exists()
    # the search that serves it reads the model (and its click counts) back
    result = runner.invoke(
        main,
        [
            "search",
            "hammer",
            *args,
            "--personal",
            str(out),
            "--profiles",
            str(profiles),
            "--user",
            "user3@example.com",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, [*train, "--profiles", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no profile store there" in result.output
