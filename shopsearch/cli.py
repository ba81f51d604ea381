"""The ``shopsearch`` command line: thin commands that parse options and call the library."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from catalog.errors import ShopsearchError

INDEX_HELP = "Directory of the embedded (qdrant-edge) index."
URL_HELP = "Qdrant server URL, instead of --index (e.g. http://localhost:6333)."


class _Group(click.Group):
    """Turns user mistakes into one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ShopsearchError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was changed", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shopsearch")
def main() -> None:
    """shopsearch: personalized product search (bi-encoder retrieval in Qdrant, reranking)."""


def index_options(fn):
    """--index / --qdrant-url / --api-key / --collection, on every command that opens an index."""

    @click.option(
        "--index", "index_dir", type=click.Path(file_okay=False, path_type=Path), help=INDEX_HELP
    )
    @click.option(
        "--qdrant-url",
        envvar="SHOPSEARCH_QDRANT_URL",
        help=URL_HELP + " Env: SHOPSEARCH_QDRANT_URL.",
    )
    @click.option(
        "--api-key",
        envvar="SHOPSEARCH_QDRANT_API_KEY",
        help="Qdrant API key. Env: SHOPSEARCH_QDRANT_API_KEY.",
    )
    @click.option(
        "--collection",
        default="products",
        show_default=True,
        help="Collection (alias) name on a server.",
    )
    @functools.wraps(fn)
    def wrapper(*args, index_dir, qdrant_url, api_key, collection, **kwargs):
        from retrieval.store import IndexLocation

        if index_dir is not None and qdrant_url:
            raise ShopsearchError(
                "Only one of --index or --qdrant-url should be specified "
                "(is SHOPSEARCH_QDRANT_URL set in the environment?)"
            )
        location = IndexLocation(
            path=index_dir, url=qdrant_url or None, api_key=api_key, collection=collection
        )
        return fn(*args, location=location, **kwargs)

    return wrapper


@main.command("sample-catalog")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--n", "n", default=2000, show_default=True, type=click.IntRange(1), help="Number of products."
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same catalog)."
)
def sample_catalog(out: Path, n: int, seed: int) -> None:
    """Write a realistic synthetic catalog to OUT (.parquet, .csv or .jsonl)."""
    from catalog.sample import write_sample_catalog

    path = write_sample_catalog(out, n=n, seed=seed)
    click.echo(f"wrote {n} products to {path}")


@main.command("index")
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
@click.option("--device", default=None, help="Torch device (default: cuda when present, else cpu).")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV for rejected rows (default: ./shopsearch-rejects.csv).",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index_cmd(
    catalog: Path,
    location,
    mode: str,
    model: str | None,
    device: str | None,
    rejects: Path | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Index CATALOG (Parquet, CSV or JSON Lines) into an embedded index or a Qdrant server."""
    from indexer.build import index_catalog

    warnings: list[str] = []
    summary = index_catalog(
        catalog,
        location,
        mode=mode,  # type: ignore[arg-type]
        model=model,
        device=device,
        rejects_path=rejects,
        progress=progress,
        warn=warnings.append,
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
        f"{summary.seconds:.1f} s, {summary.items_per_s:.0f} items/s"
    )
    if summary.rejects_path:
        click.echo(f"rejected rows (line, reason): {summary.rejects_path}")


def filter_options(fn):
    """--category / --brand / --min-price / --max-price / --in-stock."""

    @click.option(
        "--category",
        default=None,
        help="Category path or a prefix of it, e.g. 'Tools > Power Tools'.",
    )
    @click.option(
        "--brand", "brands", multiple=True, help="Brand to keep (repeat for any of several)."
    )
    @click.option("--min-price", type=click.FloatRange(0), default=None, help="Lowest price.")
    @click.option("--max-price", type=click.FloatRange(0), default=None, help="Highest price.")
    @click.option(
        "--in-stock/--any-stock", "in_stock", default=None, help="Only products in stock."
    )
    @functools.wraps(fn)
    def wrapper(*args, category, brands, min_price, max_price, in_stock, **kwargs):
        from retrieval.filters import Filters

        filters = Filters(
            category=category,
            brands=tuple(brands) or None,
            min_price=min_price,
            max_price=max_price,
            in_stock=in_stock or None,
        )
        return fn(*args, filters=filters, **kwargs)

    return wrapper


@main.command("search")
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
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON (one object with a 'hits' list) for other programs.",
)
def search_cmd(
    query: str, location, filters, k: int, mode: str | None, model: str | None, as_json: bool
) -> None:
    """Search the index for QUERY and print the top K products."""
    from retrieval.retriever import Retriever

    with Retriever.open(
        location.path,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
        model=model,
    ) as retriever:
        hits = retriever.search(query, k=k, filters=filters, mode=mode)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "query": query,
                    "hits": [
                        {"product_id": h.product_id, "score": h.score, **h.payload} for h in hits
                    ],
                },
                default=str,
            )
        )
        return
    click.echo(format_hits(query, hits))


def format_hits(query: str, hits) -> str:
    """A readable table of hits."""
    lines = [f'"{query}": {len(hits)} result(s)']
    if hits:
        lines.append(
            f"{'#':>3}  {'score':>7}  {'product_id':<14} {'price':>9}  {'brand':<14} title"
        )
    for i, h in enumerate(hits, 1):
        price = h.payload.get("price")
        price_s = f"{price:9.2f}" if isinstance(price, int | float) else f"{'-':>9}"
        brand = str(h.payload.get("brand") or "-")[:14]
        title = h.title if len(h.title) <= 70 else h.title[:67] + "..."
        lines.append(f"{i:>3}  {h.score:7.4f}  {h.product_id:<14} {price_s}  {brand:<14} {title}")
    return "\n".join(lines)


@main.command("info")
@index_options
def info_cmd(location) -> None:
    """Print what an index records about itself (model, recipe, counts, build)."""
    from retrieval.store import open_backend

    col = open_backend(location).open()
    try:
        click.echo(json.dumps({**col.manifest, "points": col.count()}, indent=2, sort_keys=True))
    finally:
        col.close()


@main.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-run"),
    show_default=True,
    help="Where the sample catalog and index go.",
)
@click.option(
    "--n",
    "n",
    default=2000,
    show_default=True,
    type=click.IntRange(10),
    help="Products in the sample catalog.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Sample catalog seed.")
@click.option(
    "-k", "k", default=5, show_default=True, type=click.IntRange(1, 100), help="Results per query."
)
def demo_cmd(workdir: Path, n: int, seed: int, k: int) -> None:
    """The main job end to end: sample catalog -> embedded index -> a few searches."""
    from catalog.sample import SAMPLE_QUERIES, write_sample_catalog
    from indexer.build import index_catalog
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation

    workdir.mkdir(parents=True, exist_ok=True)
    catalog = write_sample_catalog(workdir / "catalog.parquet", n=n, seed=seed)
    click.echo(f"1. wrote a sample catalog of {n} products: {catalog}")
    index_dir = workdir / "index"
    summary = index_catalog(
        catalog, IndexLocation(path=index_dir), rejects_path=workdir / "rejects.csv"
    )
    click.echo(
        f"2. indexed {summary.indexed} products into {index_dir} in {summary.seconds:.1f} s "
        f"({summary.items_per_s:.0f} items/s, {summary.rejected} rejected)"
    )
    click.echo("3. searches (hybrid: dense + BM25, fused in Qdrant):")
    with Retriever.open(index_dir) as retriever:
        for query in SAMPLE_QUERIES[:4]:
            click.echo(format_hits(query, retriever.search(query, k=k)))
            click.echo()
        query = SAMPLE_QUERIES[0]
        click.echo(
            format_hits(
                f"{query} [in stock, under $150]",
                retriever.search(query, k=k, filters={"in_stock": True, "max_price": 150}),
            )
        )
    click.echo(f'\nTry: shopsearch search "{SAMPLE_QUERIES[1]}" --index {index_dir} -k 10')


@main.group("import")
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
    from evaluation.data import import_homedepot

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


@main.command("bench")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench"),
    show_default=True,
    help="Where indexes (one per model, reused) and the report go.",
)
@click.option(
    "--retriever",
    "retriever_model",
    default=None,
    help="Fine-tuned bi-encoder folder (adds the dense/hybrid fine-tuned stages).",
)
@click.option(
    "--reranker",
    "reranker_model",
    default=None,
    help="Cross-encoder folder (adds the reranked stage).",
)
@click.option(
    "--base-model",
    default=None,
    help="Zero-shot bi-encoder (default: the packaged all-MiniLM-L6-v2).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default="test",
    show_default=True,
    help="Which split's queries to score.",
)
@click.option(
    "--candidates",
    default=50,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Hybrid hits the reranker reorders.",
)
@click.option("--device", default=None, help="Torch device (default: cuda when present, else cpu).")
def bench_cmd(
    data: Path,
    workdir: Path,
    retriever_model: str | None,
    reranker_model: str | None,
    base_model: str | None,
    split: str,
    candidates: int,
    device: str | None,
) -> None:
    """Score every stage on DATA's test split: Recall@10/50/100, P@10, NDCG@10, MRR@10, Judged@10, latency."""
    from shopsearch.quality import run_quality_benchmark

    report = run_quality_benchmark(
        data,
        workdir,
        retriever_model=retriever_model,
        reranker_model=reranker_model,
        base_model=base_model,
        split=split,
        candidates=candidates,
        device=device,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(report.markdown())
    click.echo(
        f"\nwrote {workdir / 'bench.json'}, {workdir / 'bench.md'}, {workdir / 'recall.png'} ({report.seconds:.0f} s)"
    )


def _judgments(data: Path):
    from evaluation.data import judgments_from, load_benchmark

    bench = load_benchmark(data)
    for problem in bench.problems:
        click.echo(f"data: {problem}", err=True)
    return judgments_from(bench)


@main.group("train")
def train_group() -> None:
    """Fine-tune the bi-encoder (retriever) or the cross-encoder (reranker) on labelled data."""


@train_group.command("retriever")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--base-model",
    default=None,
    help="Starting bi-encoder folder (default: the packaged all-MiniLM-L6-v2).",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the relevant training pairs.",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(2),
    help="Pairs per step (in-batch negatives: larger is better).",
)
@click.option(
    "--lr", default=5e-5, show_default=True, type=float, help="Peak learning rate (AdamW)."
)
@click.option(
    "--weight-decay", default=0.01, show_default=True, type=float, help="AdamW weight decay."
)
@click.option(
    "--hard-negatives",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Mined hard negatives per pair (0: in-batch only).",
)
@click.option(
    "--max-pairs",
    default=None,
    type=click.IntRange(1),
    help="Use at most this many training pairs (a seeded sample).",
)
@click.option(
    "--val-catalog",
    default=20000,
    show_default=True,
    type=click.IntRange(0),
    help="Products ranked in validation besides the judged ones (0: whole catalog).",
)
@click.option(
    "--eval-every",
    default=None,
    type=click.IntRange(1),
    help="Steps between validations (default: each epoch).",
)
@click.option(
    "--max-minutes",
    default=None,
    type=click.FloatRange(0.1),
    help="Stop training after this long, keeping the best checkpoint.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--device", default=None, help="Torch device (default: cuda when present, else cpu).")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def train_retriever_cmd(
    data: Path,
    out: Path,
    base_model,
    epochs,
    batch_size,
    lr,
    weight_decay,
    hard_negatives,
    max_pairs,
    val_catalog,
    eval_every,
    max_minutes,
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the bi-encoder on DATA's train split (in-batch negatives); best checkpoint to OUT."""
    from retrieval.train import RetrieverTrainConfig, train_retriever

    config = RetrieverTrainConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        hard_negatives=hard_negatives,
        max_pairs=max_pairs,
        val_catalog=val_catalog or None,
        eval_every=eval_every,
        time_budget_s=max_minutes * 60 if max_minutes else None,
        seed=seed,
        device=device,
    )
    report = train_retriever(
        _judgments(data), out, config, progress=progress, log=lambda m: click.echo(m, err=True)
    )
    click.echo(
        f"retriever: validation Recall@100 {report.baseline_metric:.4f} -> {report.best_metric:.4f} "
        f"(best at step {report.best_step}); {report.pairs_seen} pairs in {report.seconds:.0f} s "
        f"({report.pairs_per_s:.1f} pairs/s); saved to {out}"
    )


def reranker_candidates(location, data, query_ids, depth: int = 50) -> dict[str, list[str]]:
    """Stage-1 (hybrid) candidates for queries, the negatives a reranker should learn from."""
    from retrieval.retriever import Retriever

    queries = {**data.queries["train"], **data.queries["validation"]}
    ids = [q for q in query_ids if q in queries]
    out: dict[str, list[str]] = {}
    with Retriever.open(
        location.path,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
    ) as r:
        for i in range(0, len(ids), 64):
            chunk = ids[i : i + 64]
            for q, hits in zip(
                chunk, r.search_batch([queries[q] for q in chunk], k=depth), strict=True
            ):
                out[q] = [h.product_id for h in hits]
    return out


@train_group.command("reranker")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@index_options
@click.option(
    "--base-model",
    default=None,
    help="Starting BERT folder (default: the packaged all-MiniLM-L6-v2 weights).",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Passes over the training pairs.",
)
@click.option(
    "--batch-size", default=32, show_default=True, type=click.IntRange(1), help="Pairs per step."
)
@click.option(
    "--lr", default=3e-5, show_default=True, type=float, help="Peak learning rate (AdamW)."
)
@click.option(
    "--weight-decay", default=0.01, show_default=True, type=float, help="AdamW weight decay."
)
@click.option(
    "--dropout",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 0.9),
    help="Dropout before the scoring head.",
)
@click.option(
    "--negatives",
    default=4,
    show_default=True,
    type=click.IntRange(0),
    help="Unjudged retrieved products per query per epoch (label 0).",
)
@click.option(
    "--max-queries",
    default=None,
    type=click.IntRange(1),
    help="Use at most this many train queries (a seeded sample).",
)
@click.option(
    "--val-queries",
    default=300,
    show_default=True,
    type=click.IntRange(1),
    help="Validation queries reranked at each check.",
)
@click.option(
    "--eval-every",
    default=None,
    type=click.IntRange(1),
    help="Steps between validations (default: each epoch).",
)
@click.option(
    "--max-minutes",
    default=None,
    type=click.FloatRange(0.1),
    help="Stop training after this long, keeping the best checkpoint.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--device", default=None, help="Torch device (default: cuda when present, else cpu).")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def train_reranker_cmd(
    data: Path,
    out: Path,
    location,
    base_model,
    epochs,
    batch_size,
    lr,
    weight_decay,
    dropout,
    negatives,
    max_queries,
    val_queries,
    eval_every,
    max_minutes,
    seed,
    device,
    progress,
) -> None:
    """Fine-tune the cross-encoder on DATA (graded pairs + negatives retrieved from --index)."""
    from rerank.train import RerankerTrainConfig, select_train_queries, train_reranker

    config = RerankerTrainConfig(
        base_model=base_model,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dropout=dropout,
        negatives_per_query=negatives,
        max_queries=max_queries,
        val_queries=val_queries,
        eval_every=eval_every,
        time_budget_s=max_minutes * 60 if max_minutes else None,
        seed=seed,
        device=device,
    )
    config.check()
    judgments = _judgments(data)
    wanted = select_train_queries(judgments, config) + sorted(judgments.queries["validation"])
    click.echo(
        f"retrieving negatives for {len(wanted)} queries from {location.describe()}", err=True
    )
    candidates = reranker_candidates(location, judgments, wanted)
    report = train_reranker(
        judgments, out, candidates, config, progress=progress, log=lambda m: click.echo(m, err=True)
    )
    click.echo(
        f"reranker: validation NDCG@10 {report.baseline_metric:.4f} -> {report.best_metric:.4f} "
        f"(best at step {report.best_step}); {report.pairs_seen} pairs in {report.seconds:.0f} s "
        f"({report.pairs_per_s:.1f} pairs/s); saved to {out}"
    )


PROFILES_HELP = "Directory of the shopper profile store (SQLite + the pseudonym key)."


@main.group("events")
def events_group() -> None:
    """Shopper behaviour: validate event logs and update the stored profiles."""


@events_group.command("ingest")
@click.argument("log_path", metavar="LOG", type=click.Path(path_type=Path))
@click.option(
    "--profiles",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help=PROFILES_HELP,
)
@index_options
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV for rejected events (default: ./shopsearch-event-rejects.csv).",
)
def events_ingest_cmd(log_path: Path, profiles: Path, location, rejects: Path | None) -> None:
    """Validate LOG (Parquet or JSON Lines) and add it to the profiles (user ids pseudonymized)."""
    from behaviour.events import read_events
    from catalog.reader import write_rejects
    from rerank.personalized import open_profiles
    from retrieval.store import PAYLOAD_PRODUCT_ID, open_backend

    col = open_backend(location).open()
    try:
        known = {p[PAYLOAD_PRODUCT_ID] for p in col.scroll_payloads([PAYLOAD_PRODUCT_ID])}
        store, pz = open_profiles(profiles)
        added = duplicates = 0
        bad = []
        seen: set[str] = set()
        for batch in read_events(log_path, known_products=known):
            bad.extend(batch.rejects)
            summary = store.ingest(batch.events, pz)
            added += summary.added
            duplicates += summary.duplicates
            seen.update(e.product_id for e in batch.events if e.product_id)
        new_items = sorted(seen)
        for i in range(0, len(new_items), 1000):
            got = col.retrieve(new_items[i : i + 1000], with_vectors=True)
            store.upsert_items({**v.payload, "vector": v.vector} for v in got.values())
        store.close()
    finally:
        col.close()
    path = rejects or Path("shopsearch-event-rejects.csv")
    if bad:
        write_rejects(bad, path)
    click.echo(
        f"ingested {added} events ({duplicates} already there), rejected {len(bad)}"
        + (f": see {path}" if bad else "")
    )


@main.command("forget-user")
@click.argument("user_id")
@click.option(
    "--profiles",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help=PROFILES_HELP,
)
def forget_user_cmd(user_id: str, profiles: Path) -> None:
    """Remove every trace of USER_ID from the profile store."""
    from rerank.personalized import open_profiles

    store, pz = open_profiles(profiles)
    removed = store.forget(user_id, pz, vacuum=True)
    store.close()
    click.echo(
        f"forgot the user: {removed} stored rows removed"
        if removed
        else "no stored data for that user"
    )


def simulation_options(fn):
    """What the simulator reads: the two indexes, the reranker, and the shoppers' parameters."""
    options = [
        click.option(
            "--zero-shot-index",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Index built with the zero-shot model (the simulator clusters its vectors).",
        ),
        click.option(
            "--index",
            "tuned_index",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            required=True,
            help="Index of the retriever in use (the result lists shoppers see).",
        ),
        click.option(
            "--reranker",
            "reranker_model",
            required=True,
            help="Cross-encoder folder (the relevance-only ranking shoppers see).",
        ),
        click.option(
            "--strength",
            default=1.0,
            show_default=True,
            type=click.FloatRange(0),
            help="Weight of the latent preference in the utility.",
        ),
        click.option(
            "--users",
            default=1500,
            show_default=True,
            type=click.IntRange(10),
            help="Simulated shoppers (per seed).",
        ),
        click.option(
            "--pool",
            default=800,
            show_default=True,
            type=click.IntRange(20),
            help="Real queries the shoppers search (validation + test splits).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command("simulate")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@simulation_options
@click.option("--seed", default=0, show_default=True, type=int, help="Simulator seed.")
@click.option(
    "--noise",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of shoppers who click at random.",
)
def simulate_cmd(
    data: Path,
    out: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    seed: int,
    strength: float,
    noise: float,
    users: int,
    pool: int,
) -> None:
    """Write a simulated event log (and, apart, the true utilities) over DATA's catalog and queries."""
    from behaviour.simulate import SimConfig, build_world, simulate, write_simulation
    from shopsearch.personalize import prepare

    setup = prepare(
        data,
        zero_shot_index,
        tuned_index,
        reranker_model,
        out,
        pool_size=pool,
        log=lambda m: click.echo(m, err=True),
    )
    config = SimConfig(n_users=users, preference_strength=strength, noise_share=noise, seed=seed)
    world = build_world(setup.product_ids, setup.titles, setup.world_vectors, config)
    sim = simulate(world, setup.judgments, setup.candidates, config, query_pool=setup.pool)
    write_simulation(sim, out)
    click.echo(
        f"wrote {out}: {sim.events.height} events ({out / 'events.parquet'}); true utilities for evaluation only in "
        f"{out / 'utility.parquet'}; held-out period from {sim.split_ts:.0f} (epoch s)"
    )


@main.command("bench-personal")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@simulation_options
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/personal"),
    show_default=True,
    help="Where simulations, profile stores and the report go.",
)
@click.option(
    "--seeds", default="0,1,2", show_default=True, help="Simulator seeds, comma-separated."
)
@click.option(
    "--noise",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of noisy users in the robustness run (0: skip it).",
)
def bench_personal_cmd(
    data: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    workdir: Path,
    seeds: str,
    noise: float,
    strength: float,
    users: int,
    pool: int,
) -> None:
    """Personalized vs relevance-only ranking on simulated shoppers' held-out sessions."""
    from shopsearch.personalize import prepare, run_personalization_benchmark

    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    setup = prepare(
        data, zero_shot_index, tuned_index, reranker_model, workdir, pool_size=pool, log=log
    )
    report = run_personalization_benchmark(
        setup,
        workdir,
        seeds=seed_list,
        noise=noise,
        preference_strength=strength,
        n_users=users,
        log=log,
    )
    click.echo(report.markdown())
    click.echo(
        f"\nwrote {workdir / 'personalization.json'} and {workdir / 'personalization.md'} ({report.seconds:.0f} s)"
    )


@main.command("bench-index")
@click.argument("catalog", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-index"),
    show_default=True,
    help="Where the benchmark index and report go.",
)
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Parquet/CSV with a 'query' column (default: queries made from titles).",
)
@click.option(
    "--n-queries",
    default=300,
    show_default=True,
    type=click.IntRange(10),
    help="Queries timed per mode.",
)
@click.option(
    "--encoder-sample",
    default=4000,
    show_default=True,
    type=click.IntRange(100),
    help="Products encoded for the encoder-alone baseline.",
)
@click.option(
    "--model", default=None, help="Bi-encoder folder (default: the packaged all-MiniLM-L6-v2)."
)
@click.option("--device", default=None, help="Torch device (default: cuda when present, else cpu).")
def bench_index_cmd(
    catalog: Path,
    workdir: Path,
    queries_file: Path | None,
    n_queries: int,
    encoder_sample: int,
    model: str | None,
    device: str | None,
) -> None:
    """Measure indexing items/s (vs the encoder alone) and query latency p50/p99 at k=100."""
    from shopsearch.speed import run_speed_benchmark

    queries = None
    if queries_file is not None:
        import polars as pl

        frame = (
            pl.read_parquet(queries_file)
            if queries_file.suffix in (".parquet", ".pq")
            else pl.read_csv(queries_file)
        )
        if "query" not in frame.columns:
            raise ShopsearchError(
                f"{queries_file}: no 'query' column (columns: {', '.join(frame.columns)})"
            )
        queries = frame["query"].drop_nulls().unique(maintain_order=True).to_list()
    report = run_speed_benchmark(
        catalog,
        workdir,
        queries=queries,
        n_queries=n_queries,
        encoder_sample=encoder_sample,
        model=model,
        device=device,
        log=lambda m: click.echo(m, err=True),
    )
    (workdir / "speed.json").write_text(json.dumps(report.as_dict(), indent=2))
    click.echo("\n".join(report.lines()))
    click.echo(f"report: {workdir / 'speed.json'}")


if __name__ == "__main__":  # pragma: no cover
    main()
