"""``shopsearch synonyms add|list|remove|test``: the shop's synonyms, kept beside the index.

The list is ``synonyms.json`` in the index directory (or ``--rules-dir``); a running service
sees an edit at its next search. ``retrieval.synonyms`` has the syntax and the semantics.
"""

from __future__ import annotations

from pathlib import Path

import click

from shopsearch.cli.options import INDEX_HELP, rules_dir_option

index_option = click.option(
    "--index",
    "index_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=INDEX_HELP + " Its directory keeps synonyms.json (unless --rules-dir is given).",
)


def _directory(index_dir: Path | None, rules_dir: Path | None) -> Path:
    from core.managed import side_dir

    return side_dir(index_dir, rules_dir)


@click.group("synonyms")
def synonyms_group() -> None:
    """The shop's synonyms: one-way (tv -> television) and multi-way (sofa, couch, settee)."""


@synonyms_group.command("add")
@click.argument("line")
@index_option
@rules_dir_option
def synonyms_add_cmd(line: str, index_dir: Path | None, rules_dir: Path | None) -> None:
    """Add LINE: 'sofa, couch, settee' (each finds the others) or 'tv -> television' (one way)."""
    from retrieval.synonyms import add_synonym

    synonym, added = add_synonym(_directory(index_dir, rules_dir), line)
    click.echo(f"{'added' if added else 'there already:'} {synonym.id}: {synonym.text}")


@synonyms_group.command("list")
@index_option
@rules_dir_option
def synonyms_list_cmd(index_dir: Path | None, rules_dir: Path | None) -> None:
    """List the synonyms (id, then the line)."""
    from retrieval.synonyms import list_synonyms

    synonyms = list_synonyms(_directory(index_dir, rules_dir))
    for s in synonyms:
        click.echo(f"{s.id}  {s.text}")
    if not len(synonyms):
        click.echo("no synonyms", err=True)


@synonyms_group.command("remove")
@click.argument("synonym_id", metavar="ID")
@index_option
@rules_dir_option
def synonyms_remove_cmd(synonym_id: str, index_dir: Path | None, rules_dir: Path | None) -> None:
    """Remove the synonym of this ID (see `shopsearch synonyms list`)."""
    from retrieval.synonyms import remove_synonym

    removed = remove_synonym(_directory(index_dir, rules_dir), synonym_id)
    click.echo(f"removed {removed.id}: {removed.text}")


@synonyms_group.command("test")
@click.argument("query")
@index_option
@rules_dir_option
def synonyms_test_cmd(query: str, index_dir: Path | None, rules_dir: Path | None) -> None:
    """Show what the synonyms add to QUERY for BM25 (the words and their weights; with --index,
    weighted by the index's IDF as a search does)."""
    from retrieval.store import IndexLocation
    from retrieval.synonyms import expand_query

    directory = _directory(index_dir, rules_dir)
    location = IndexLocation(path=index_dir) if index_dir is not None else None
    got = expand_query(query, directory, location)
    click.echo(f"BM25 reads: {' '.join(got.tokens) or '(no word)'} (weight 1 each)")
    if not got.expansion.matched:
        click.echo(f"no synonym applies ({got.synonyms} in the list)")
        return
    for typed, found in got.expansion.matched:
        click.echo(f"  {typed} -> {found}")
    added = ", ".join(f"{t} {w:.2f}" for t, w in sorted(got.expansion.weights.items()))
    click.echo(f"synonyms add: {added}")


COMMANDS = [synonyms_group]
