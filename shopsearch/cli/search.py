"""``shopsearch search``: one query against an index, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rerank.defaults import DEFAULT_RERANK_DEPTH
from shopsearch.cli.options import (
    backend_options,
    device_option,
    filter_options,
    index_options,
    profiles_option,
    pseudonym_key,
    rules_dir_option,
)


@click.command("search")
@click.argument("query")
@index_options
@filter_options
@click.option(
    "-k",
    "k",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Number of results.",
)
@click.option(
    "--mode",
    type=click.Choice(["dense", "bm25", "hybrid"]),
    default=None,
    help="Retrieval mode (default: hybrid).",
)
@click.option(
    "--model", default=None, help="Query-tower model (default: the one that built the index)."
)
@click.option(
    "--reranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A cross-encoder folder: rerank the top --rerank-depth candidates.",
)
@click.option(
    "--ranker",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A learned final stage folder (shopsearch train ranker): its score is the relevance, "
    "in place of the blend.",
)
@click.option(
    "--rerank-depth",
    default=DEFAULT_RERANK_DEPTH,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Candidates retrieved and reranked.",
)
@click.option(
    "--personal",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A personalization model folder (needs --profiles and --user to matter).",
)
@profiles_option("Personalizes with --user (events from 'shopsearch events ingest').")
@click.option("--user", "user_id", default=None, help="The shopper's id (pseudonymized first).")
@click.option(
    "--no-correct",
    "no_correct",
    is_flag=True,
    help="Search the query as typed (no spelling correction from the catalog's vocabulary).",
)
@click.option(
    "--facet",
    "facets",
    multiple=True,
    help="Count the candidates' values of a facetable field (repeatable): 'brand', 'brand:5' "
    "(top 5), 'price:25,50,100' (bands cut there).",
)
@click.option(
    "--sort",
    default=None,
    help="'FIELD:asc' or 'FIELD:desc' over a sortable field (e.g. price:asc): the relevant "
    "results by that field, relevance breaking ties (default: relevance).",
)
@click.option(
    "--diversify",
    default=None,
    help="'FIELD:N' (e.g. brand:2): at most N products of one value of a facetable field "
    "before every other value had its turn.",
)
@click.option(
    "--offset",
    default=0,
    show_default=True,
    type=click.IntRange(0, 999),
    help="Results to skip (paging): print results offset+1 to offset+k.",
)
@rules_dir_option
@click.option(
    "--no-rules",
    "no_rules",
    is_flag=True,
    help="Ignore the shop's merchandising rules ('shopsearch rules'): the ranking alone.",
)
@device_option
@backend_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON for other programs: {query, corrected, corrections, suggestion, hits: [{rank, "
    "product_id, score, scores, product, because, merchandising}], rules, redirected}.",
)
def search_cmd(
    query: str,
    location,
    filters,
    k: int,
    mode: str | None,
    model: str | None,
    reranker: str | None,
    ranker: str | None,
    rerank_depth: int,
    personal: str | None,
    profiles: Path | None,
    user_id: str | None,
    device: str | None,
    backend: str,
    quantize: str | None,
    threads: int | None,
    as_json: bool,
    no_correct: bool = False,
    facets: tuple[str, ...] = (),
    sort: str | None = None,
    diversify: str | None = None,
    offset: int = 0,
    rules_dir: Path | None = None,
    no_rules: bool = False,
) -> None:
    """Search the index for QUERY and print the top K products (a result a merchandising rule
    moved is marked with it: [pin r1])."""
    from rerank.pipeline import SearchPipeline

    with SearchPipeline.open(
        location.path,
        reranker=reranker,
        ranker=ranker,
        personal=personal,
        profiles=profiles,
        device=device,
        backend=backend,
        quantize=quantize,
        threads=threads,
        pseudonym_key=pseudonym_key(),
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
        model=model,
        rules_dir=rules_dir,
    ) as pipeline:
        hits = pipeline.search(
            query,
            user_id=user_id,
            k=k,
            rerank_depth=rerank_depth,
            filters=filters,
            mode=mode,
            correct=not no_correct,
            facets=list(facets) or None,
            sort=sort,
            diversify=diversify,
            offset=offset,
            rules=not no_rules,
        )
        why = pipeline.retriever.why_empty(filters) if not hits and not filters.is_empty() else None
    if as_json:
        out = {
            "query": query,
            "corrected": hits.corrected,
            "corrections": [
                {"from": a, "to": b} for a, b in (hits.correction.changes if hits.corrected else ())
            ],
            "suggestion": hits.suggestion,
            "hits": [h.to_dict(r) for r, h in enumerate(hits, start=offset + 1)],
            "total_candidates": hits.total_candidates,
        }
        if hits.rules:
            out["rules"] = list(hits.rules)
        if hits.redirected:
            out["redirected"] = hits.redirected
        if hits.facets:
            out["facets"] = {
                name: [c.to_dict() for c in counts] for name, counts in hits.facets.items()
            }
        if why:
            out["note"] = why
        click.echo(json.dumps(out, default=str))
        return
    if hits.redirected:
        click.echo(f'searched "{hits.redirected}" instead (a merchandising rule\'s redirect)')
    if hits.corrected:
        click.echo(
            f'showing results for "{hits.corrected}" (search "{query}" as typed with --no-correct)'
        )
    elif hits.suggestion:
        click.echo(f'did you mean "{hits.suggestion}"? (results are for "{query}" as typed)')
    click.echo(format_hits(query, hits, offset))
    if hits.facets:
        click.echo(format_facets(hits.facets))
    if why:
        click.echo(f"note: {why}", err=True)


def format_facets(facets) -> str:
    """The facets' counts, one line per field: ``brand: DeWalt (12), Makita (9)``."""
    return "\n".join(
        f"{name}: " + (", ".join(f"{c.label} ({c.count})" for c in counts) or "-")
        for name, counts in facets.items()
    )


def format_hits(query: str, hits, offset: int = 0) -> str:
    """A readable table of hits (numbered from ``offset + 1``)."""
    lines = [f'"{query}": {len(hits)} result(s)']
    if hits:
        lines.append(
            f"{'#':>3}  {'score':>7}  {'product_id':<14} {'price':>9}  {'brand':<14} title"
        )
    for i, h in enumerate(hits, offset + 1):
        price = h.payload.get("price")
        price_s = f"{price:9.2f}" if isinstance(price, int | float) else f"{'-':>9}"
        brand = str(h.payload.get("brand") or "-")[:14]
        title = h.title if len(h.title) <= 70 else h.title[:67] + "..."
        mark = "  [" + ", ".join(f"{a} {r}" for r, a in h.rule) + "]" if h.rule else ""
        lines.append(
            f"{i:>3}  {h.score:7.4f}  {h.product_id:<14} {price_s}  {brand:<14} {title}{mark}"
        )
    return "\n".join(lines)


COMMANDS = [search_cmd]
