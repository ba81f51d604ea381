"""Speed benchmark: indexing throughput against the encoder alone, and query latency.

Figures are ratios against a baseline measured in the same run (machines are noisy): the
store's share of indexing time, and filtered latency over unfiltered latency.
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalog.errors import ShopsearchError
from catalog.reader import read_catalog
from catalog.text import product_text
from indexer.build import index_catalog
from retrieval.encoder import BiEncoder
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation

WARMUP_QUERIES = 50


@dataclass(frozen=True)
class Latency:
    """Latency of one kind of query, milliseconds."""

    name: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class SpeedReport:
    """What ``shopsearch bench-index`` measured."""

    machine: str
    products: int
    encoder_alone_items_per_s: float
    encoder_sample: int
    index_seconds: float
    index_items_per_s: float
    encode_seconds_in_index: float
    store_overhead_share: float
    store_seconds: float = 0.0
    latencies: list[Latency] = field(default_factory=list)
    filter_desc: str | None = None
    backend: str = "torch"
    quantize: str | None = None
    threads: int = 0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    index_disk_mb: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)

    def lines(self) -> list[str]:
        """Readable report."""
        out = [
            f"machine: {self.machine}",
            f"backend: {self.backend}{' ' + self.quantize if self.quantize else ''}, "
            f"{self.threads} intra-op threads",
            f"products indexed: {self.products}",
            f"encoder alone: {self.encoder_alone_items_per_s:.1f} items/s (on {self.encoder_sample} products)",
            f"indexing: {self.index_items_per_s:.1f} items/s ({self.index_seconds:.1f} s in all, "
            f"{self.encode_seconds_in_index:.1f} s of it in the encoder)",
            f"store (Qdrant upserts, HNSW build, flush, promotion): {self.store_seconds:.1f} s = "
            f"{self.store_seconds / self.index_seconds:.1%} of indexing time",
            f"everything but the encoder (store + reading, validation, BM25): {self.store_overhead_share:.1%}",
        ]
        base = {lat.name: lat for lat in self.latencies}
        for lat in self.latencies:
            line = f"query latency {lat.name:<22} p50 {lat.p50_ms:6.2f} ms  p99 {lat.p99_ms:6.2f} ms  (n={lat.n})"
            unfiltered = base.get(lat.name.replace("+filter", ""))
            if lat.name.endswith("+filter") and unfiltered:
                line += f"  p99 ratio to unfiltered {lat.p99_ms / unfiltered.p99_ms:.2f}x"
            out.append(line)
        if self.filter_desc:
            out.append(f"filter used: {self.filter_desc}")
        out.append(
            f"memory: resident {self.rss_mb:.0f} MB after the queries, peak {self.peak_rss_mb:.0f} MB; "
            f"index on disk {self.index_disk_mb:.0f} MB"
        )
        return out


def side_by_side(reports: Sequence[SpeedReport]) -> list[str]:
    """A markdown table: one column per backend variant, the first as the baseline."""
    if not reports:
        return []
    names = [f"{r.backend}{' ' + r.quantize if r.quantize else ''}" for r in reports]
    rows = [
        ("encoder alone, items/s", [f"{r.encoder_alone_items_per_s:.0f}" for r in reports]),
        ("indexing, items/s", [f"{r.index_items_per_s:.0f}" for r in reports]),
        (
            "indexing vs first",
            [f"{r.index_items_per_s / reports[0].index_items_per_s:.2f}x" for r in reports],
        ),
    ]
    lats = [{lat.name: lat for lat in r.latencies} for r in reports]
    for name in [lat.name for lat in reports[0].latencies]:
        rows.append(
            (
                f"{name} p50 / p99 ms",
                [
                    f"{lt[name].p50_ms:.1f} / {lt[name].p99_ms:.1f}" if name in lt else "-"
                    for lt in lats
                ],
            )
        )
    rows.append(("resident memory, MB", [f"{r.rss_mb:.0f}" for r in reports]))
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return out


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        current = peak
    return current, peak


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def machine_description() -> str:
    """CPU/GPU summary for reports."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = ""
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {torch.get_num_threads()} torch threads{gpu}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def _percentiles(name: str, samples: Sequence[float]) -> Latency:
    arr = np.asarray(samples) * 1000.0
    return Latency(
        name,
        len(arr),
        float(np.percentile(arr, 50)),
        float(np.percentile(arr, 99)),
        float(arr.mean()),
    )


def time_queries(
    fn: Callable[[str], object], queries: Sequence[str], warmup: Sequence[str] = ()
) -> list[float]:
    """Seconds per call of ``fn(query)`` over ``queries``, after untimed calls on ``warmup``."""
    for q in warmup or queries[:5]:
        fn(q)
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append(time.perf_counter() - t0)
    return out


def pick_filter(products_payload: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """A realistic filter for this catalog: the commonest top-level category, else brand, else price."""
    cats = [p["category"].split(" > ")[0] for p in products_payload if p.get("category")]
    if cats:
        top = max(set(cats), key=cats.count)
        return {"category": top, "in_stock": True} if any(
            p.get("in_stock") for p in products_payload
        ) else {"category": top}, f"category '{top}' (+ in stock)"
    brands = [p["brand"] for p in products_payload if p.get("brand")]
    if brands:
        top = max(set(brands), key=brands.count)
        return {"brands": (top,)}, f"brand '{top}'"
    prices = sorted(p["price"] for p in products_payload if p.get("price") is not None)
    if prices:
        cap = prices[len(prices) // 2]
        return {"max_price": cap}, f"price <= {cap} (median)"
    return None, None


def run_speed_benchmark(
    catalog: str | Path,
    workdir: str | Path,
    *,
    queries: Sequence[str] | None = None,
    n_queries: int = 300,
    encoder_sample: int = 4000,
    model: str | None = None,
    device: str | None = None,
    seed: int = 0,
    backend: str = "torch",
    quantize: str | None = None,
    reranker: str | None = None,
    rerank_depths: Sequence[int] = (10, 20, 50, 100),
    log: Callable[[str], None] = print,
) -> SpeedReport:
    """Indexes ``catalog`` into ``workdir/index`` and measures throughput and latency.

    Args:
        backend: How both towers (and the reranker) run: torch, onnx or openvino.
        quantize: None or ``int8`` (the quantized copies ``shopsearch optimize`` wrote).
        reranker: A reranker folder: adds rerank latency at each of ``rerank_depths``
            candidates and retrieve (hybrid) + rerank 50 latency.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    encoder = BiEncoder(model, device=device, backend=backend, quantize=quantize)
    products = [p for batch in read_catalog(catalog) for p in batch.products]
    if not products:
        raise ShopsearchError(f"{catalog}: no valid product to benchmark")
    rng = random.Random(seed)
    sample = rng.sample(products, min(encoder_sample, len(products)))
    texts = [product_text(p) for p in sample]
    encoder.encode_document(texts[:64])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(texts), 1024):  # same chunking as the indexer
        encoder.encode_document(texts[i : i + 1024])
    enc_rate = len(texts) / (time.perf_counter() - t0)
    log(f"encoder alone: {enc_rate:.1f} items/s on {len(texts)} products")

    location = IndexLocation(path=workdir / "index")
    summary = index_catalog(
        catalog, location, encoder=encoder, rejects_path=workdir / "rejects.csv"
    )
    overhead = 1.0 - summary.encode_seconds / summary.seconds
    log(f"indexing: {summary.items_per_s:.1f} items/s; store overhead {overhead:.1%}")

    if queries is None:  # shopper-like queries from titles: 2-4 leading words
        queries = [
            " ".join(p.title.split()[: rng.randint(2, 4)])
            for p in rng.sample(products, min(n_queries + WARMUP_QUERIES, len(products)))
        ]
    queries = list(queries)
    # a separate set of queries warms each mode up (the index's pages, the encoder), so the
    # first mode timed is not charged for a cold start that a running service pays once
    warm = queries[n_queries : n_queries + WARMUP_QUERIES] or queries[:WARMUP_QUERIES]
    queries = queries[:n_queries]
    payloads = [
        {"category": p.category, "brand": p.brand, "price": p.price, "in_stock": p.in_stock}
        for p in products
    ]
    flt, flt_desc = pick_filter(payloads)
    latencies = []
    with Retriever.open(location.path, encoder=encoder) as retriever:
        for mode in ("dense", "bm25", "hybrid"):
            samples = time_queries(
                lambda q, m=mode: retriever.search(q, k=100, mode=m), queries, warm
            )
            latencies.append(_percentiles(f"{mode} k=100", samples))
            if flt is not None:
                samples = time_queries(
                    lambda q, m=mode: retriever.search(q, k=100, mode=m, filters=flt), queries, warm
                )
                latencies.append(_percentiles(f"{mode} k=100+filter", samples))
        enc_only = time_queries(lambda q: encoder.encode_query(q), queries, warm)
        latencies.append(_percentiles("query encoder alone", enc_only))
        if reranker is not None:
            from rerank.pipeline import SearchPipeline
            from rerank.reranker import Reranker

            rr = Reranker.load(reranker, device=device, backend=backend, quantize=quantize)
            few = queries[: max(20, len(queries) // 3)]
            hits = {q: retriever.search(q, k=max(rerank_depths), mode="hybrid") for q in few}
            for depth in rerank_depths:
                samples = time_queries(lambda q, d=depth: rr.rank(q, hits[q][:d]), few)
                latencies.append(_percentiles(f"rerank {depth} candidates", samples))
            pipe = SearchPipeline(retriever, rr)
            samples = time_queries(
                lambda q: pipe.search(q, k=10, rerank_depth=50, mode="hybrid"), few, warm[:5]
            )
            latencies.append(_percentiles("hybrid + rerank 50", samples))
    rss, peak = _rss_mb()
    return SpeedReport(
        machine=machine_description(),
        products=summary.total,
        encoder_alone_items_per_s=enc_rate,
        encoder_sample=len(texts),
        index_seconds=summary.seconds,
        index_items_per_s=summary.items_per_s,
        encode_seconds_in_index=summary.encode_seconds,
        store_overhead_share=overhead,
        store_seconds=summary.store_seconds,
        latencies=latencies,
        filter_desc=flt_desc,
        backend=backend,
        quantize=quantize,
        threads=int(encoder.runtime.get("threads") or torch.get_num_threads()),
        rss_mb=rss,
        peak_rss_mb=peak,
        index_disk_mb=_disk_mb(location.path),
    )
