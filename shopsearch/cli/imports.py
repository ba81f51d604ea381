"""``shopsearch import ...``: convert a public data set into the benchmark format."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("import")
def import_group() -> None:
    """Convert a public data set into shopsearch's benchmark format (catalog, queries, qrels)."""


@import_group.command("homedepot")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--seed",
    default=13,
    show_default=True,
    type=int,
    help="Seed of the train/validation/test split by query.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def import_homedepot_cmd(csv_path: Path, out: Path, seed: int, overwrite: bool) -> None:
    """Import the Home Depot relevance CSV (latin-1) into OUT, split 80/10/10 by query."""
    from evaluation.homedepot import import_homedepot

    summary = import_homedepot(csv_path, out, seed=seed, overwrite=overwrite)
    click.echo(
        f"wrote {out}: {summary.products} products, {summary.queries} queries, {summary.qrels} judgments "
        f"in {summary.seconds:.1f} s"
    )
    for split, n in summary.queries_per_split.items():
        click.echo(
            f"  {split:<10} {n:>6} queries, {summary.relevant_queries_per_split.get(split, 0):>6} with a relevant product"
        )
    for problem in summary.problems:
        click.echo(f"  note: {problem}")


COMMANDS = [import_group]
