"""``shopsearch interleave report LOG...``: which ranker an interleaving experiment preferred.

The service serves a share of searches as a team-draft interleaving of its ranker (A) and a
challenger (B) (``serve --interleave-share``, docs/guide/shop-loop.md); this reads its search
log and credits each click to the team that picked the clicked product
(:mod:`analytics.interleaving`).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from core.errors import ShopsearchError


def parse_time(value: str | None, option: str) -> float | None:
    """``2026-01-31``, ``2026-01-31T12:00`` (UTC unless it says otherwise) or epoch seconds.

    Raises:
        ShopsearchError: Anything else (naming the option).
    """
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ShopsearchError(
            f"{option} {value!r}: give a date (2026-01-31), a date and time "
            "(2026-01-31T12:00, UTC unless an offset is given) or epoch seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@click.group("interleave")
def interleave() -> None:
    """Interleaving experiments: compare two rankers on live traffic."""


@interleave.command("report")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--experiment", default=None, help="Only this experiment (default: every one).")
@click.option(
    "--since",
    default=None,
    help="Searches served from this time on: a date (2026-01-31), a date and time (UTC unless "
    "an offset is given) or epoch seconds; their clicks count whenever they came.",
)
@click.option("--until", default=None, help="Searches served before this time (as --since).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "json"]),
    default="md",
    show_default=True,
    help="A markdown table, or JSON (one object per experiment).",
)
def report_cmd(
    logs: tuple[Path, ...],
    experiment: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
) -> None:
    """Wins, losses, ties and a sign test per experiment, from the search log LOG... (the
    service's --search-log folders or their segment files). A is the service's own ranker, B
    the challenger: a win is a search whose clicks went more to A's picks."""
    from analytics.interleaving import markdown, report

    results = report(
        list(logs),
        experiment=experiment,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )
    if experiment is not None and not results:
        from analytics.interleaving import experiments

        named = experiments(list(logs))
        if experiment not in named:  # a typo, not an empty window
            raise ShopsearchError(
                f"--experiment {experiment!r}: no interleaved search of that name in the log; "
                + (f"it has: {', '.join(named)}" if named else "it has no experiment at all")
            )
    if fmt == "json":
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        click.echo(markdown(results))


COMMANDS = [interleave]
