"""The ``shopsearch`` command line: thin commands that parse options, call the library and print.

One click group, ``main``. Its own commands live in one module per command group (``index``,
``search``, ``imports``, ``train``, ``events``); other distributions add commands through the
``shopsearch.commands`` entry-point group (``shopsearch-research`` adds ``sample-catalog``,
``demo``, ``bench`` ...), loaded only when asked for.

Errors: a :class:`~core.errors.ShopsearchError` (a mistake the user can fix) is one line on
stderr and exit status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from core.errors import ShopsearchError

# The command modules import shopsearch.cli.options, never this module: no cycle.
from shopsearch.cli import (
    analytics,
    events,
    imports,
    index,
    interleave,
    optimize,
    rules,
    search,
    serve,
    suggest,
    synonyms,
    train,
    update,
)

PLUGIN_GROUP = "shopsearch.commands"
USER_ERROR_EXIT = 2


class UserError(click.ClickException):
    """A ShopsearchError as click shows it: ``error: <message>`` on stderr, exit status 2."""

    exit_code = USER_ERROR_EXIT

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _plugin_entry_points() -> dict[str, EntryPoint]:
    """Commands other installed distributions register, by command name."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


class ShopsearchGroup(click.Group):
    """The top-level group: user errors in one line, plugin commands from entry points."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShopsearchError as exc:
            raise UserError(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was changed", err=True)
            ctx.exit(130)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugin_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:  # our own commands win over a plugin's of the same name
            return command
        ep = _plugin_entry_points().get(cmd_name)
        if ep is None:
            return None
        command = ep.load()
        if not isinstance(command, click.Command):
            raise TypeError(
                f"entry point {ep.name} = {ep.value} in group {PLUGIN_GROUP} is a "
                f"{type(command).__name__}, not a click command"
            )
        return command


@click.group(cls=ShopsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shopsearch")
def main() -> None:
    """shopsearch: personalized product search (bi-encoder retrieval in Qdrant, reranking)."""


for _module in (
    index, search, imports, train, events, serve, optimize, synonyms, update, rules,
    interleave, analytics, suggest,
):  # fmt: skip
    for _command in _module.COMMANDS:
        main.add_command(_command)

__all__ = ["PLUGIN_GROUP", "ShopsearchGroup", "UserError", "main"]
