"""``shopsearch rules add|list|remove|test``: the shop's merchandising rules, kept beside the index.

The rules are ``rules.json`` in the index directory (or ``--rules-dir``); a running service
sees an edit at its next search. :mod:`rerank.rules` has the semantics.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.errors import ShopsearchError
from rerank.defaults import DEFAULT_RERANK_DEPTH
from shopsearch.cli.options import (
    backend_options,
    device_option,
    filter_options,
    index_options,
    rules_dir_option,
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")


def _directory(location, rules_dir: Path | None) -> Path:
    from core.managed import side_dir

    return side_dir(location.path, rules_dir)


@click.group("rules")
def rules_group() -> None:
    """The shop's merchandising rules: pin, hide, boost/bury by filter, redirect a query."""


@rules_group.command("add")
@click.argument("query", required=False)
@index_options
@rules_dir_option
@click.option(
    "--match",
    type=click.Choice(["exact", "contains", "any"]),
    default="exact",
    show_default=True,
    help="exact: the whole query; contains: every word of QUERY in the query; any: every "
    "query (no QUERY). Compared casefolded, spaces collapsed.",
)
@click.option("--pin", "pin", metavar="PRODUCT", default=None, help="Pin this product id ...")
@click.option(
    "--at",
    "position",
    type=click.IntRange(1),
    default=None,
    help="... at this 1-based position (at most 1000).",
)
@click.option(
    "--ignore-filters",
    is_flag=True,
    help="Show the pinned product even when the query's filters exclude it.",
)
@click.option(
    "--hide", "hide", metavar="PRODUCT", multiple=True, help="Hide this product (repeatable)."
)
@click.option(
    "--boost",
    metavar="FILTER",
    default=None,
    help="Boost products matching this filter "
    "expression (e.g. 'brand = Ridgeline') by --by percent.",
)
@click.option(
    "--bury", metavar="FILTER", default=None, help="Bury products matching this filter by --by."
)
@click.option(
    "--by",
    "percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=None,
    help="Boost/bury size: percent of the result list's score spread (100: from last to first).",
)
@click.option("--redirect", metavar="TEXT", default=None, help="Search TEXT instead of QUERY.")
@click.option("--start", default=None, help="Fires from this UTC time (ISO 8601), inclusive.")
@click.option("--end", default=None, help="Fires until this UTC time (ISO 8601), exclusive.")
@click.option("--note", default="", help="Why the rule exists (shown by 'rules list').")
@click.option("--id", "rule_id", default=None, help="The rule's id (default: the next r<N>).")
@json_option
def rules_add_cmd(
    query: str | None,
    location,
    rules_dir: Path | None,
    match: str,
    pin: str | None,
    position: int | None,
    ignore_filters: bool,
    hide: tuple[str, ...],
    boost: str | None,
    bury: str | None,
    percent: float | None,
    redirect: str | None,
    start: str | None,
    end: str | None,
    note: str,
    rule_id: str | None,
    as_json: bool,
) -> None:
    """Add a rule for QUERY: exactly one of --pin/--at, --hide, --boost/--bury with --by, or
    --redirect. Checked against the index (products exist, filter fields) before it is saved."""
    from rerank.rules import editing

    actions = {
        "pin": pin is not None,
        "hide": bool(hide),
        "boost": boost is not None,
        "bury": bury is not None,
        "redirect": redirect is not None,
    }
    chosen = [a for a, given in actions.items() if given]
    if len(chosen) != 1:
        raise ShopsearchError(
            "give exactly one action: --pin PRODUCT --at N, --hide PRODUCT, --boost FILTER "
            f"--by PCT, --bury FILTER --by PCT or --redirect TEXT (got {len(chosen)})"
        )
    fields = {
        "id": rule_id,
        "action": chosen[0],
        "match": match,
        "query": query or "",
        "products": (pin,) if pin is not None else hide,
        "position": position,
        "filter": boost if boost is not None else bury,
        "percent": percent,
        "redirect": redirect,
        "ignore_filters": ignore_filters,
        "start": start,
        "end": end,
        "note": note,
    }
    with editing(location, rules_dir) as (store, check):
        rule = store.create({k: v for k, v in fields.items() if v is not None}, check)
    click.echo(json.dumps(rule.to_dict()) if as_json else f"added {rule.describe()}")


@rules_group.command("list")
@index_options
@rules_dir_option
@json_option
def rules_list_cmd(location, rules_dir: Path | None, as_json: bool) -> None:
    """List the rules (id, what, for which queries, when; then the note)."""
    from rerank.rules import RuleStore

    rules = RuleStore(_directory(location, rules_dir)).list()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rules]))
        return
    for r in rules:
        click.echo(r.describe() + (f"  # {r.note}" if r.note else ""))
    if not rules:
        click.echo("no rules", err=True)


@rules_group.command("remove")
@click.argument("rule_id", metavar="ID")
@index_options
@rules_dir_option
def rules_remove_cmd(rule_id: str, location, rules_dir: Path | None) -> None:
    """Remove the rule of this ID (see 'shopsearch rules list')."""
    from rerank.rules import RuleStore

    removed = RuleStore(_directory(location, rules_dir)).remove(rule_id)
    click.echo(f"removed {removed.describe()}")


@rules_group.command("test")
@click.argument("query")
@index_options
@rules_dir_option
@filter_options
@click.option(
    "-k", "k", default=10, show_default=True, type=click.IntRange(1, 100), help="Results."
)
@click.option(
    "--offset", default=0, show_default=True, type=click.IntRange(0, 999), help="Results to skip."
)
@click.option(
    "--model", default=None, help="Query-tower model (default: the one that built the index)."
)
@click.option(
    "--reranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A cross-encoder folder, as the service ranks with.",
)
@device_option
@backend_options
@json_option
def rules_test_cmd(
    query: str,
    location,
    rules_dir: Path | None,
    filters,
    k: int,
    offset: int,
    model: str | None,
    reranker: str | None,
    device: str | None,
    backend: str,
    quantize: str | None,
    threads: int | None,
    as_json: bool,
) -> None:
    """Show which rules fire for QUERY and what they do to its results (each result's rank
    without the rules beside it)."""
    from rerank.pipeline import SearchPipeline
    from rerank.rules import try_rules

    with SearchPipeline.open(
        location.path,
        reranker=reranker,
        device=device,
        backend=backend,
        quantize=quantize,
        threads=threads,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
        model=model,
        rules_dir=rules_dir,
    ) as pipeline:
        trial = try_rules(
            pipeline,
            query,
            k=k,
            offset=offset,
            filters=filters,
            rerank_depth=max(DEFAULT_RERANK_DEPTH, offset + k),
        )
    if as_json:
        click.echo(json.dumps(trial.to_dict(), default=str))
        return
    click.echo(format_trial(trial))


def format_trial(trial) -> str:
    """The rules that fire, then the page with each result's mark and rank without rules."""
    lines = [f'"{trial.query}": {len(trial.fired)} rule(s) fire']
    if trial.redirected:
        lines.append(f'searched "{trial.redirected}" instead')
    lines += [f"  {r.describe()}" for r in trial.fired]
    lines += [f"  not now: {r.describe()}" for r in trial.waiting]
    if trial.hits:
        lines.append(f"{'#':>4}  {'was':>4}  {'rule':<16} {'product_id':<14} title")
    for i, h in enumerate(trial.hits, start=trial.offset + 1):
        was = trial.before.get(h.product_id)
        mark = ", ".join(f"{a} {r}" for r, a in h.rule) or "-"
        title = h.title if len(h.title) <= 60 else h.title[:57] + "..."
        lines.append(
            f"{i:>4}  {was if was is not None else '-':>4}  {mark[:16]:<16} {h.product_id:<14} {title}"
        )
    return "\n".join(lines)


COMMANDS = [rules_group]
