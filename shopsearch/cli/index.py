"""``shopsearch index``, ``info`` and ``vocabulary``: build an index, say what one records, add
the words shoppers search for to its spelling vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import click

from shopsearch.cli.options import (
    backend_options,
    device_option,
    index_options,
    profiles_option,
    progress_option,
    pseudonym_key,
)


@click.command("index")
@click.argument("catalog", type=click.Path(path_type=Path))
@index_options
@click.option(
    "--mode",
    type=click.Choice(["full", "upsert", "sync"]),
    default="full",
    show_default=True,
    help="full: atomic rebuild; upsert: re-embed new/changed products; sync: upsert and delete products gone from the file.",
)
@click.option(
    "--model", default=None, help="Bi-encoder folder (default: the packaged all-MiniLM-L6-v2)."
)
@device_option
@backend_options
@click.option(
    "--quantize-vectors",
    type=click.Choice(["int8"]),
    default=None,
    help="Keep an int8 scalar-quantized copy of the vectors in RAM and the fp32 vectors on disk "
    "(memory-mapped, read to rescore), to save memory (Qdrant).",
)
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV for rejected rows (default: ./shopsearch-rejects.csv).",
)
@click.option(
    "--segment-points",
    type=click.IntRange(1000),
    default=None,
    help="Products per segment while building (default 50000): indexing memory is bounded "
    "by this, not by the catalog; larger segments search a little faster.",
)
@click.option(
    "--schema",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Field schema file (TOML or JSON) declaring the catalog's own fields (voltage, "
    "color, ...) and what each can do: filter, facet, sort, search. Default: the index's "
    "(upsert/sync), else brand, category, price, in_stock. The sample catalog's: "
    "catalog/sample_schema.toml.",
)
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index_cmd(
    catalog: Path,
    location,
    mode: str,
    model: str | None,
    device: str | None,
    backend: str,
    quantize: str | None,
    threads: int | None,
    quantize_vectors: str | None,
    rejects: Path | None,
    segment_points: int | None,
    schema: Path | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Index CATALOG (Parquet, CSV or JSON Lines) into an embedded index or a Qdrant server."""
    from catalog.fields import FieldSchema
    from indexer.build import index_catalog

    warnings: list[str] = []
    summary = index_catalog(
        catalog,
        location,
        mode=mode,  # type: ignore[arg-type]
        model=model,
        device=device,
        backend=backend,
        quantize=quantize,
        threads=threads,
        quantize_vectors=quantize_vectors,
        rejects_path=rejects,
        progress=progress,
        warn=warnings.append,
        segment_points=segment_points,
        schema=FieldSchema.load(schema) if schema is not None else None,
    )
    for w in warnings[:10]:
        click.echo(f"warning: {w}", err=True)
    if len(warnings) > 10:
        click.echo(f"warning: ... and {len(warnings) - 10} more", err=True)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    click.echo(
        f"{summary.mode}: indexed {summary.indexed}, unchanged {summary.unchanged}, deleted {summary.deleted}, "
        f"rejected {summary.rejected}, warnings {summary.warnings}; {summary.total} products in the index; "
        f"{summary.seconds:.1f} s, {summary.items_per_s:.{0 if summary.items_per_s >= 10 else 1}f} items/s"
    )
    if summary.rejects_path:
        click.echo(f"rejected rows (line, reason): {summary.rejects_path}")


@click.command("info")
@index_options
def info_cmd(location) -> None:
    """Print what an index records about itself (model, recipe, fields, counts, build)."""
    from retrieval.store import open_backend

    col = open_backend(location).open()
    try:
        manifest = dict(col.manifest)
        if isinstance(manifest.get("probes"), dict):  # 8 x dim floats: say how many, not which
            probes = manifest["probes"]
            manifest["probes"] = {
                "texts": len(probes.get("texts", [])),
                "min_cosine": probes.get("min_cosine"),
            }
        # what each field can do, one line each (recorded or, for an older index, the defaults)
        manifest["fields"] = [f.describe() for f in col.schema.fields]
        click.echo(json.dumps({**manifest, "points": col.count()}, indent=2, sort_keys=True))
    finally:
        col.close()


@click.command("vocabulary")
@click.argument("log_path", metavar="LOG", type=click.Path(path_type=Path))
@index_options
@click.option(
    "--min-shoppers",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Distinct shoppers who must have typed a word in a search that led to a click, add "
    "to cart or purchase before it is added (a rarer word may be someone's name or a typo).",
)
@profiles_option("Searches of shoppers erased there with forget-user do not count.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def vocabulary_cmd(
    log_path: Path, location, min_shoppers: int, profiles: Path | None, as_json: bool
) -> None:
    """Add the words of LOG's searches that led to interactions to the index's spelling vocabulary.

    LOG is the shop's event log (Parquet or JSON Lines, as `shopsearch events ingest` reads)
    or the service's search log folder (serve --search-log; its anonymous searches are left out).
    Words with a digit and typos the corrector already fixes stay out. Running it again with a
    newer log replaces the earlier log's words; `index --mode full` drops them.
    """
    from indexer.vocabulary import add_log_vocabulary

    summary = add_log_vocabulary(
        location, log_path, min_shoppers=min_shoppers, profiles=profiles, key=pseudonym_key()
    )
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
        return
    shown = ", ".join(summary.words_added[:20])
    more = f" and {len(summary.words_added) - 20} more" if len(summary.words_added) > 20 else ""
    click.echo(
        f"added {len(summary.words_added)} word(s) from {summary.searches} search(es) of "
        f"{summary.shoppers} shopper(s) that led to an interaction"
        + (f": {shown}{more}" if shown else "")
        + f"; counted {summary.catalog_words} catalog word(s); {summary.words} words in the "
        f"vocabulary of build {summary.build_id}"
    )
    skipped = sum(summary.skipped.values())
    if skipped:
        reasons = "; ".join(f"{why} ({n})" for why, n in sorted(summary.skipped.items()))
        click.echo(f"skipped {skipped} word(s): {reasons}")
    if summary.forgotten:
        click.echo(f"left out the searches of {summary.forgotten} forgotten shopper(s)")
    if summary.replaced:
        click.echo(f"{summary.replaced} word(s) an earlier log added are no longer in it")
    if summary.rejected:
        click.echo(f"{summary.rejected} row(s) of the log were rejected and not read", err=True)


COMMANDS = [index_cmd, info_cmd, vocabulary_cmd]
