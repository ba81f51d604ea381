"""``shopsearch suggest PREFIX``: what the search box would offer, from an index and a search log.

:mod:`analytics.suggest` defines the completions, the shopper guard (``--min-shoppers``) and
the context boost; ``GET /suggest`` serves the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from shopsearch.cli.options import index_options, profiles_option, pseudonym_key


@click.command("suggest")
@click.argument("prefix")
@index_options
@click.option(
    "--search-log",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The service's search log folder (or a segment): queries enough shoppers searched "
    "and clicked from; without it, the catalog's text only.",
)
@click.option(
    "-k", "k", type=click.IntRange(1, 50), default=8, show_default=True,
    help="Suggestions to print, at most.",
)  # fmt: skip
@click.option(
    "--min-shoppers",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Distinct shoppers a logged query needs before it is suggested (k-anonymity).",
)
@click.option(
    "--user",
    "user_id",
    default=None,
    help="A shopper whose profile (top categories and brands) lifts their taste; needs --profiles.",
)
@profiles_option(use="With --user: the shopper's profile.")
@click.option("--json", "as_json", is_flag=True, help="JSON for programs.")
def suggest_cmd(
    prefix: str,
    location,
    search_log: Path | None,
    k: int,
    min_shoppers: int,
    user_id: str | None,
    profiles,
    as_json: bool,
) -> None:
    """Complete PREFIX as the search box would (one suggestion a line: text, source, score)."""
    from analytics.suggest import Suggester
    from core.errors import ShopsearchError

    if user_id is not None and profiles is None:
        raise ShopsearchError("--user needs --profiles (the profile store of that shopper)")
    key = pseudonym_key()
    log_key = None
    if search_log is not None:
        from personalization.searchlog_writer import log_pseudonymizer

        folder = search_log if search_log.is_dir() else search_log.parent
        log_key = log_pseudonymizer(folder, profiles, key, create=False)
    suggester = Suggester.from_index(
        location, search_log, min_shoppers=min_shoppers, pseudonymizer=log_key
    )
    context = None
    if user_id is not None:
        from personalization.ingest import open_profiles

        store, pz = open_profiles(profiles, key)
        try:
            context = store.profile(pz.pseudonym(user_id))
        finally:
            store.close()
    found = suggester.suggest(prefix, k=k, context=context)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "prefix": prefix,
                    "suggestions": [
                        {"text": s.text, "source": s.source, "score": s.score} for s in found
                    ],
                    "built_from": suggester.stats.as_dict(),
                }
            )
        )
        return
    for s in found:
        click.echo(f"{s.text}\t{s.source}\t{s.score:.3f}")


COMMANDS = [suggest_cmd]
