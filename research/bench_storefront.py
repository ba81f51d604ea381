"""``shopsearch bench-storefront``: what facets, sort and diversity cost and change.

Three parts, each its own report (``storefront-<part>.md`` in the workdir, and with ``--docs``
its block of docs/benchmarks/storefront.md):

* ``sort``: on the sample catalog, per query (each leaf category's name, as a shopper types
  it: "drills", "wood screws", and 40 title words: "cordless compact hammer"), the share of
  the price-sorted top 10 (ascending and
  descending) that the unsorted search also returns in its top 50, and the share of it in the
  query's own category, for candidate depths and relevance floors
  (:func:`rerank.storefront.sort_relevant`).
* ``diversity``: distinct brands and product lines in the top 10 against NDCG@10, without
  and with :func:`rerank.storefront.diversify` by brand and by product line, on Home Depot's
  test split (titles only: the brand is a title's first word, the product line its first
  three words without digits) and on the sample catalog (relevant: the query's category).
* ``latency``: p50/p99 of ``SearchPipeline.search`` with facets over brand, voltage (the
  sample schema's; category without it) and price and a price sort against the same query without them, interleaved in one run; with a
  brand selected (a disjunctive facet: one more retrieval); and Qdrant's own facet over the
  candidates (a has-id filter) against counting their payloads.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank import storefront
from rerank.defaults import DEFAULT_RERANK_DEPTH

PARTS = ("sort", "diversity", "latency")
#: Candidate depths and relevance floors the sort part compares.
SORT_DEPTHS = (50, 100, 200)
SORT_FLOORS = (0.0, 0.3, 0.5, 0.6, 0.7)
#: Diversity settings compared (None: off).
DIVERSITY = (None, ("brand", 1), ("brand", 2), ("brand", 3), ("line", 1), ("line", 2))
_WORD = re.compile(r"[a-z][a-z'&.-]*")


def title_brand(title: str) -> str:
    """A Home Depot title's brand: its first word, lower-cased (HD has no brand column)."""
    words = title.lower().split()
    return words[0] if words else ""


def title_line(title: str) -> str:
    """A title's product line: its first three words without a digit, lower-cased (colour,
    size and pack variants of one product share it: "Delta Vero 1-Handle Shower ...")."""
    words = [w for w in title.lower().split() if not any(c.isdigit() for c in w)]
    return " ".join(words[:3])


@dataclass
class Report:
    """Each part's markdown, figures and the run's time."""

    parts: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def markdown(self) -> str:
        return "\n\n".join(self.parts.values())


def _pipeline(index: Path, model: str | None):
    from rerank.pipeline import SearchPipeline
    from retrieval.retriever import Retriever

    return SearchPipeline(Retriever.open(index, model=model, auto_refresh_s=None))


def sample_index(workdir: Path, products: int, seed: int, model: str | None, log) -> Path:
    """The sample catalog's index in ``workdir``, with its schema file (built once, reused)."""
    from catalog.fields import SAMPLE_SCHEMA, FieldSchema
    from catalog.sample import write_sample_catalog
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    index = workdir / f"index-{products}-{seed}"
    if not (index / "CURRENT").exists():
        catalog = write_sample_catalog(
            workdir / f"catalog-{products}-{seed}.parquet", n=products, seed=seed
        )
        log(f"indexing {products} sample products into {index} ...")
        encoder = None
        if model is not None:
            from retrieval.encoder import BiEncoder

            encoder = BiEncoder(model)
        index_catalog(
            catalog,
            IndexLocation(path=index),
            encoder=encoder,
            progress=True,
            schema=FieldSchema.load(SAMPLE_SCHEMA),  # voltage, colour, ... as fields
        )
    return index


def leaf_queries() -> list[tuple[str, str]]:
    """(query, category path) per leaf of the sample catalog: the leaf's name, lower-cased."""
    from catalog.sample import _LEAVES

    return [(leaf.path.split(" > ")[-1].lower(), leaf.path) for leaf in _LEAVES]


# --------------------------------------------------------------------------------------------
# Sort
# --------------------------------------------------------------------------------------------


def sort_part(pipeline, queries: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
    """Share of the sorted top 10 in the unsorted top 50, and in the query's category."""
    price = pipeline.retriever.schema.field("price")
    rows = []
    unsorted = {q: {h.product_id for h in pipeline.search(q, k=50)} for q, _ in queries}
    by_depth = {
        d: {q: pipeline.search(q, k=d, rerank_depth=d) for q, _ in queries} for d in SORT_DEPTHS
    }
    for depth in SORT_DEPTHS:
        for floor in SORT_FLOORS:
            row: dict[str, Any] = {"depth": depth, "floor": floor}
            for direction in ("asc", "desc"):
                kept, on_target, pools = [], [], []
                for q, leaf in queries:
                    cands = by_depth[depth][q]
                    pool = storefront.relevant(cands, floor=floor, depth=None)
                    top = storefront.sort_hits(pool, price, direction == "desc")[:10]
                    pools.append(len(pool))
                    if top:
                        kept.append(sum(h.product_id in unsorted[q] for h in top) / len(top))
                        on_target.append(
                            sum(h.payload.get("category") == leaf for h in top) / len(top)
                        )
                row[f"in_top50_{direction}"] = float(np.mean(kept))
                row[f"on_category_{direction}"] = float(np.mean(on_target))
                row["pool"] = float(np.mean(pools))
            rows.append(row)
    unsorted_on = float(
        np.mean(
            [
                sum(h.payload.get("category") == leaf for h in pipeline.search(q, k=10)) / 10
                for q, leaf in queries
            ]
        )
    )
    lines = [
        "## Sort: how relevant the sorted results stay",
        "",
        f'{len(queries)} queries (each leaf category\'s name, e.g. "drills", and 40 title '
        'words such as "cordless compact hammer"), sorted by price. '
        "*In top 50*: share of the sorted top 10 the unsorted search also returns in its top "
        "50; *on category*: share of it in the query's own category (a title query's: its "
        "product's; the unsorted top 10: "
        f"{unsorted_on:.3f}); *pool*: candidates kept to sort (mean).",
        "",
        "| candidates | floor | in top 50 (asc) | in top 50 (desc) | on category (asc) "
        "| on category (desc) | pool |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = (
            " **(default)**"
            if (r["floor"], r["depth"])
            == (
                storefront.SORT_FLOOR,
                DEFAULT_RERANK_DEPTH,
            )
            else ""
        )
        lines.append(
            f"| {r['depth']} | {r['floor']:.1f}{mark} | {r['in_top50_asc']:.3f} | "
            f"{r['in_top50_desc']:.3f} | {r['on_category_asc']:.3f} | "
            f"{r['on_category_desc']:.3f} | {r['pool']:.1f} |"
        )
    return "\n".join(lines), {"rows": rows, "unsorted_on_category": unsorted_on}


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


def _diversity_rows(
    ranked: dict[str, list],
    qrels: dict[str, dict[str, float]],
    gain_offset: float,
    brand: Callable[[Any], str],
    line: Callable[[Any], str],
) -> list[dict[str, Any]]:
    from evaluation.metrics import ndcg_at_k

    rows = []
    for setting in DIVERSITY:
        ndcg, brands, lines = [], [], []
        for qid, hits in ranked.items():
            if setting is None:
                top = hits[:10]
            else:
                key = brand if setting[0] == "brand" else line
                top = storefront.diversify(hits, key, setting[1])[:10]
            run = {h.product_id: float(10 - i) for i, h in enumerate(top)}
            ndcg.append(ndcg_at_k(qrels.get(qid, {}), run, 10, gain_offset))
            brands.append(len({brand(h) for h in top}))
            lines.append(len({line(h) for h in top}))
        rows.append(
            {
                "diversify": "off" if setting is None else f"{setting[0]}:{setting[1]}",
                "ndcg@10": float(np.mean(ndcg)),
                "brands": float(np.mean(brands)),
                "lines": float(np.mean(lines)),
            }
        )
    return rows


def _diversity_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    base = rows[0]["ndcg@10"]
    out = [
        title,
        "",
        "| diversify | NDCG@10 | change | distinct brands in top 10 | distinct lines in top 10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['diversify']} | {r['ndcg@10']:.4f} | {r['ndcg@10'] - base:+.4f} | "
            f"{r['brands']:.2f} | {r['lines']:.2f} |"
        )
    return out


def diversity_part(
    hd_data: Path | None,
    hd_index: Path | None,
    sample_pipeline,
    queries: Sequence[tuple[str, str]],
    model: str | None,
    log,
) -> tuple[str, dict[str, Any]]:
    """Distinct brands and lines in the top 10 against NDCG@10, per diversity setting."""
    lines = [
        "## Diversity against NDCG@10",
        "",
        "Each query's 50 candidates (the rerank depth; hybrid retrieval, no cross-encoder) "
        "reordered by `diversify` (a cap per group in rounds), then cut to 10. A product line "
        "is a title's first three words without a digit (colour, size and pack variants share "
        "it).",
        "",
    ]
    figures: dict[str, Any] = {}
    if hd_data is not None and hd_index is not None:
        from evaluation.data import load_benchmark

        data = load_benchmark(hd_data)
        frame, qrels = data.split("test")
        log(f"diversity: {frame.height} Home Depot test queries ...")
        pipe = _pipeline(hd_index, model)
        try:
            ids, texts = frame["query_id"].to_list(), frame["query"].to_list()
            ranked = {}
            for at in range(0, len(texts), 64):
                batch = pipe.search_batch(texts[at : at + 64], k=DEFAULT_RERANK_DEPTH)
                ranked.update(zip(ids[at : at + 64], batch, strict=True))
        finally:
            pipe.close()
        rows = _diversity_rows(
            ranked,
            qrels,
            data.gain_offset,
            lambda h: title_brand(h.title),
            lambda h: title_line(h.title),
        )
        figures["home_depot"] = rows
        lines += _diversity_table(
            f"**Home Depot**, test split ({len(ranked)} queries; graded qrels; brand: a "
            "title's first word):",
            rows,
        )
        lines.append("")
    log(f"diversity: {len(queries)} sample-catalog queries ...")
    ranked = {q: sample_pipeline.search(q, k=DEFAULT_RERANK_DEPTH) for q, _ in queries}
    catalog_rows = _diversity_rows(
        ranked,
        _leaf_qrels(sample_pipeline, queries, ranked),
        0.0,
        lambda h: str(h.payload.get("brand") or "").lower(),
        lambda h: title_line(h.title),
    )
    figures["sample"] = catalog_rows
    lines += _diversity_table(
        f"**Sample catalog** ({len(queries)} leaf-name queries; relevant: a product of the "
        "query's category, gain 1; brand: the brand column):",
        catalog_rows,
    )
    return "\n".join(lines), figures


def _leaf_qrels(pipeline, queries, ranked) -> dict[str, dict[str, float]]:
    """query -> {product of the query's category: 1.0} (every such product in the index)."""
    leaf_of = dict(queries)
    wanted = {leaf: q for q, leaf in queries}
    qrels: dict[str, dict[str, float]] = {q: {} for q in ranked}
    for payload in pipeline.retriever.collection.scroll_payloads(["product_id", "category"]):
        q = wanted.get(payload.get("category"))
        if q is not None:
            qrels[q][payload["product_id"]] = 1.0
    assert set(qrels) <= set(leaf_of)
    return qrels


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------


def _percentiles(ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(ms, dtype=float)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99))}


def title_queries(pipeline, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (query, category) pairs from product titles: two or three words after the brand
    ("cordless compact hammer"), and the category of the product it came from; seeded."""
    rows = [
        (p["title"], p.get("category") or "")
        for p in pipeline.retriever.collection.scroll_payloads(["title", "category"])
        if p.get("title")
    ]
    rows.sort()
    rng = random.Random(seed)
    out = []
    for title, category in rng.sample(rows, min(n, len(rows))):
        words = [w for w in title.split()[1:] if _WORD.fullmatch(w.lower())]
        if words:
            out.append((" ".join(words[: rng.choice((2, 3))]).lower(), category))
    return out


def latency_part(
    pipeline, queries: Sequence[str], repeats: int, products: int, log
) -> tuple[str, dict[str, Any]]:
    """p50/p99 with and without facets + sort, interleaved; the storefront stage alone."""
    facetable = pipeline.retriever.schema.names("facetable")
    facet3 = ["brand", "voltage" if "voltage" in facetable else "category", "price"]
    brand_of = {}
    for q in queries:  # the top candidate's brand: what a shopper would click
        hits = pipeline.search(q, k=1)
        if hits and hits[0].payload.get("brand"):
            brand_of[q] = hits[0].payload["brand"]
    variants: dict[str, Callable[[str], Any]] = {
        "plain": lambda q: pipeline.search(q, k=10),
        "facets+sort": lambda q: pipeline.search(q, k=10, facets=facet3, sort="price:asc"),
        "facets+sort, brand selected": lambda q: pipeline.search(
            q,
            k=10,
            facets=facet3,
            sort="price:asc",
            filters={"brands": brand_of.get(q)} if q in brand_of else None,
        ),
        "diversify brand:2": lambda q: pipeline.search(q, k=10, diversify="brand:2"),
    }
    for q in queries[:20]:  # warm up
        for run in variants.values():
            run(q)
    ms: dict[str, list[float]] = {name: [] for name in variants}
    stage: dict[str, list[float]] = {name: [] for name in variants}
    retrieve: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    rng = random.Random(0)
    log(f"latency: {len(queries)} queries x {repeats} x {len(variants)} variants ...")
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        for q in queries:
            rng.shuffle(order)
            for name in order:
                t0 = time.perf_counter()
                hits = variants[name](q)
                ms[name].append((time.perf_counter() - t0) * 1000)
                stage[name].append(hits.stage_ms.get("storefront", 0.0))
                retrieve[name].append(hits.stage_ms.get("retrieve", 0.0))
    load_after = os.getloadavg()[0]
    rows = {name: _percentiles(v) for name, v in ms.items()}
    stages = {name: _percentiles(v) for name, v in stage.items()}
    retrieves = {name: _percentiles(v) for name, v in retrieve.items()}
    engine = engine_facet_cost(pipeline, queries[:100])
    base = rows["plain"]
    lines = [
        "## Facets, sort and rules: latency at 55k and 1M products",
        "",
        f"{products} sample products, embedded index, no cross-encoder; {len(queries)} queries "
        f"from titles x {repeats}, the variants interleaved in one run (k=10, "
        f"{DEFAULT_RERANK_DEPTH} candidates); facets over {', '.join(facet3)}, sort "
        "`price:asc`. *Storefront*: the facet, diversify and sort "
        "stage alone (`stage_ms`); *retrieve*: query encoding and the store. Load average "
        f"(1 min) at the start and the end: {load_before:.1f}, {load_after:.1f}.",
        "",
        "| search | p50 ms | p99 ms | p99 over plain | storefront p50 / p99 ms "
        "| retrieve p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p99'] - base['p99']:+.2f} | "
            f"{stages[name]['p50']:.3f} / {stages[name]['p99']:.3f} | "
            f"{retrieves[name]['p50']:.2f} / {retrieves[name]['p99']:.2f} |"
        )
    if engine:
        lines += [
            "",
            f"Counting the brand facet of a query's {DEFAULT_RERANK_DEPTH} candidates: in "
            f"Python over their payloads (already returned by the search) "
            f"{engine['python_p50_us']:.0f} us p50 / {engine['python_p99_us']:.0f} us p99; "
            f"Qdrant's facet (`EdgeShard.facet`, a has-id filter over the candidates) "
            f"{engine['engine_p50_us']:.0f} us p50 / {engine['engine_p99_us']:.0f} us p99 "
            f"per field, and keyword/integer values only (no price bands). Counts agree: "
            f"{engine['agree']}.",
        ]
    return "\n".join(lines), {
        "total_ms": rows,
        "storefront_ms": stages,
        "retrieve_ms": retrieves,
        "engine_facet": engine,
    }


def engine_facet_cost(pipeline, queries: Sequence[str]) -> dict[str, Any] | None:
    """Qdrant's facet with a has-id filter over the candidates against counting payloads."""
    shard = getattr(pipeline.retriever.collection, "shard", None)
    if shard is None:
        return None
    import qdrant_edge as qe

    from rerank.storefront import FacetSpec, facet_counts
    from retrieval.store.base import point_id

    brand = pipeline.retriever.schema.field("brand")
    engine, python, agree = [], [], True
    for q in queries:
        hits = pipeline.retriever.search(q, k=DEFAULT_RERANK_DEPTH)
        t0 = time.perf_counter()
        mine = facet_counts(hits, brand, FacetSpec("brand", 100))
        python.append((time.perf_counter() - t0) * 1e6)
        ids = {point_id(h.product_id) for h in hits}
        t0 = time.perf_counter()
        got = shard.facet(
            qe.FacetRequest(
                key=brand.key,
                limit=100,
                exact=True,
                filter=qe.Filter(must=[qe.HasIdCondition(ids)]),
            )
        )
        engine.append((time.perf_counter() - t0) * 1e6)
        theirs = {str(h.value): int(h.count) for h in got.hits}
        agree = agree and theirs == {str(c.value): c.count for c in mine}
    return {
        "python_p50_us": float(np.percentile(python, 50)),
        "python_p99_us": float(np.percentile(python, 99)),
        "engine_p50_us": float(np.percentile(engine, 50)),
        "engine_p99_us": float(np.percentile(engine, 99)),
        "agree": agree,
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run_storefront_benchmark(
    workdir: Path,
    *,
    products: int = 55_000,
    seed: int = 0,
    index: Path | None = None,
    model: str | None = None,
    hd_data: Path | None = None,
    hd_index: Path | None = None,
    parts: Sequence[str] = PARTS,
    latency_queries: int = 300,
    repeats: int = 2,
    log: Callable[[str], None] = print,
) -> Report:
    """Runs the parts asked for and writes ``storefront-<part>.md`` (and one JSON) in workdir.

    Args:
        workdir: Where the sample catalog, its index and the reports go.
        products: Sample-catalog size (when ``index`` is not given).
        seed: Sample-catalog seed, and the latency queries'.
        index: An index of the sample catalog to use instead of building one.
        model: Query/product tower for a built index (default: the packaged MiniLM); a small
            model makes a 1M-product index buildable on a CPU.
        hd_data: The imported Home Depot benchmark (``runs/hd``), for the diversity part.
        hd_index: An index of its catalog.
        parts: Any of ``sort``, ``diversity``, ``latency``.
        latency_queries: Title queries of the latency part.
        repeats: Passes over them.
        log: Progress lines.
    """
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report()
    index = index or sample_index(workdir, products, seed, model, log)
    pipeline = _pipeline(index, None)  # the tower the index records
    try:
        count = int(pipeline.retriever.manifest.get("count", products))
        queries = leaf_queries()
        if "sort" in parts:
            md, fig = sort_part(pipeline, queries + title_queries(pipeline, 40, seed + 1))
            report.parts["sort"], report.figures["sort"] = md, fig
        if "diversity" in parts:
            md, fig = diversity_part(hd_data, hd_index, pipeline, queries, None, log)
            report.parts["diversity"], report.figures["diversity"] = md, fig
        if "latency" in parts:
            texts = [q for q, _ in title_queries(pipeline, latency_queries, seed)]
            md, fig = latency_part(pipeline, texts, repeats, count, log)
            # one block per catalog size: the 55k and the 1M runs sit side by side
            report.parts[f"latency-{count}"], report.figures["latency"] = md, fig
    finally:
        pipeline.close()
    report.seconds = time.perf_counter() - started
    for part, md in report.parts.items():
        # the report's heading is the docs page's own: the block goes under it
        body = md.split("\n", 2)[2] if md.startswith("## ") else md
        (workdir / f"storefront-{part}.md").write_text(body.strip() + "\n")
    (workdir / "storefront.json").write_text(
        json.dumps({"products": products, "figures": report.figures}, indent=2, default=str)
    )
    return report


__all__ = ["PARTS", "Report", "run_storefront_benchmark", "title_brand", "title_line"]
