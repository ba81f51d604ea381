"""shopsearch-research's commands in the ``shopsearch`` group: registered through entry points,
each with help, and the demo and sample-catalog commands end to end."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from shopsearch.cli import main

RESEARCH_COMMANDS = {
    "sample-catalog", "demo", "bench", "bench-index", "bench-personal", "simulate",
    "bench-faults", "bench-typo", "bench-depth", "bench-synonyms", "bench-storefront",
    "bench-rules", "bench-update", "bench-interleave", "bench-profiles", "bench-analytics",
    "bench-suggest", "bench-searchlog", "bench-fusion", "bench-ltr", "bench-distill",
}  # fmt: skip


@pytest.fixture()
def runner():
    return CliRunner()


def test_research_commands_come_from_entry_points():
    from importlib.metadata import entry_points

    from shopsearch.cli import PLUGIN_GROUP

    registered = {ep.name: ep.value for ep in entry_points(group=PLUGIN_GROUP)}
    assert registered["sample-catalog"] == "research.cli:sample_catalog"
    assert set(registered) == RESEARCH_COMMANDS
    from research.cli import COMMANDS

    assert set(registered) == {c.name for c in COMMANDS}  # every research command is reachable
    # not registered by hand: the group itself holds only the core commands
    assert not set(registered) & set(main.commands)


def test_every_research_command_and_option_has_help():
    ctx = click.Context(main)
    assert set(main.list_commands(ctx)) >= RESEARCH_COMMANDS
    for name in RESEARCH_COMMANDS:
        cmd = main.get_command(ctx, name)
        assert cmd.help, f"{name} has no help"
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{name} --{param.name} has no help"


def test_sample_catalog_writes_the_generators_catalog(runner, tmp_path):
    """The command writes what catalog.sample writes, byte for byte."""
    from catalog.sample import write_sample_catalog

    out = tmp_path / "cli.jsonl"
    result = runner.invoke(main, ["sample-catalog", str(out), "--n", "40", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "wrote 40 products" in result.stdout
    ref = write_sample_catalog(tmp_path / "ref.jsonl", n=40, seed=5)
    assert out.read_bytes() == ref.read_bytes()


def test_bad_seeds_are_a_usage_error(runner, tmp_path):
    result = runner.invoke(
        main,
        [
            "bench-personal", str(tmp_path), "--zero-shot-index", str(tmp_path),
            "--index", str(tmp_path), "--reranker", "x", "--seeds", "0,a",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--seeds" in result.stderr and "Traceback" not in result.output


def test_demo(runner, tmp_path):
    result = runner.invoke(main, ["demo", "--workdir", str(tmp_path), "--n", "30", "-k", "2"])
    assert result.exit_code == 0, result.output
    assert "1. wrote a sample catalog of 30 products" in result.stdout
    assert "2. indexed 30 products" in result.stdout
    assert "Try: shopsearch search" in result.stdout
