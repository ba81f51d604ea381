"""``shopsearch analytics LOG...``: the merchandiser's report over the service's search log.

:mod:`analytics.report` defines every figure and the privacy threshold (a query is listed only
when ``--min-shoppers`` distinct shoppers typed it).
"""

from __future__ import annotations

from pathlib import Path

import click

from shopsearch.cli.options import profiles_option, pseudonym_key


@click.command("analytics")
@click.argument("logs", metavar="LOG...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--since",
    metavar="DATE",
    default=None,
    help="First UTC day included, YYYY-MM-DD (default: the start of the log).",
)
@click.option(
    "--until",
    metavar="DATE",
    default=None,
    help="Last UTC day included, YYYY-MM-DD (default: the end of the log).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "json"]),
    default="md",
    show_default=True,
    help="Markdown for people, JSON for programs.",
)
@click.option(
    "--top",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Most queries in each list (top, zero-result, rescued).",
)
@click.option(
    "--min-shoppers",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Distinct shoppers a query needs before its text is listed (k-anonymity); the "
    "others are summed in a 'rare queries' line.",
)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write PNG plots into this folder (needs matplotlib: the train extra).",
)
@profiles_option(
    "The service's profile store, whose key the log is written with: with it (or "
    "SHOPSEARCH_PSEUDONYM_KEY, or the log folder's own key) shoppers erased since a segment "
    "was written are left out."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report to this file instead of standard output.",
)
def analytics_cmd(
    logs: tuple[Path, ...],
    since: str | None,
    until: str | None,
    fmt: str,
    top: int,
    min_shoppers: int,
    plots: Path | None,
    out: Path | None,
    profiles: Path | str | None,
) -> None:
    """Top queries, zero-result and rescued queries, click-through and click position per
    query, abandonment, searches per shopper and the examination curve, per UTC day, from the
    service's search log (LOG: its --search-log folder, or segment files)."""
    from analytics.report import analytics_report, render, save_plots
    from personalization.searchlog_writer import log_pseudonymizer

    folder = next((p for p in logs if p.is_dir()), None)
    pz = None if folder is None else log_pseudonymizer(folder, profiles, pseudonym_key(), False)
    report = analytics_report(
        logs, since, until, top=top, min_shoppers=min_shoppers, pseudonymizer=pz
    )
    text = render(report, fmt)
    if out is not None:
        from core.io import atomic_write

        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
    if plots is not None:
        files = save_plots(report, plots)
        click.echo(f"wrote {len(files)} plots into {plots}", err=True)


COMMANDS = [analytics_cmd]
