"""``shopsearch update FILE``: change price, stock and other non-searchable fields live."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shopsearch.cli.options import index_options


@click.command("update")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@index_options
@click.option(
    "--wait",
    "wait_s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait for another writer of the index (an indexing, another update).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def update_cmd(file: Path, location, wait_s: float, as_json: bool) -> None:
    """Change fields of indexed products without re-embedding them.

    FILE (CSV, JSON Lines or Parquet) has a product_id column and the columns to change:
    price, in_stock, or any field the product text does not read. A blank cell leaves the
    field as it is. The whole file is checked first: one bad row (an unknown product, a
    negative price, a stock that is not true/false, a searchable field such as title)
    changes nothing. Running searchers see the change once they opened the new build (they
    look every second); `index --mode upsert|sync` keeps it unless the catalog changed that
    field itself.
    """
    from indexer.update import apply_updates

    summary = apply_updates(location, file, wait_s=wait_s)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    fields = ", ".join(summary.fields) or "nothing to change"
    build = f"; build {summary.build_id}" if summary.build_id else ""
    click.echo(
        f"updated {summary.products} product(s) ({fields}) in {summary.seconds:.2f} s{build}"
    )


COMMANDS = [update_cmd]
