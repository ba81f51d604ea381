"""Speed benchmark: indexing throughput against the encoder alone, and query latency.

Figures are ratios against a baseline measured in the same run (machines are noisy): the
store's share of indexing time, and filtered latency over unfiltered latency. Every dense and
hybrid latency comes with its Recall@100 against exact search (the same queries, mode and filter
with every dense source scanned exactly), and exact search is timed too, so a reader can choose
between exact search and HNSW per catalog size. Optionally the same catalog is built again with
Qdrant's int8 scalar quantization of the stored vectors, from the vectors of the first build
(not re-encoded), and measured the same way against exact search over the fp32 vectors.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catalog.reader import read_catalog
from catalog.schema import Product
from catalog.text import product_text
from core.errors import ShopsearchError
from indexer.build import index_catalog
from retrieval.encoder import BiEncoder
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation, open_backend

WARMUP_QUERIES = 50
#: Hits per timed query (and the depth of Recall@k against exact search).
BENCH_K = 100
#: Modes with a dense source, whose HNSW search is measured against exact search.
EXACT_MODES = ("dense", "hybrid")


@dataclass(frozen=True)
class Latency:
    """Latency of one kind of query, milliseconds."""

    name: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    #: Recall@100 against exact search for the same queries, mode and filter: the mean over
    #: queries of |top 100 ids & exact top 100 ids| / |exact top 100 ids| (queries exact search
    #: finds nothing for left out). None where not measured (BM25 is exact; exact rows).
    recall_vs_exact: float | None = None
    #: ann-benchmarks' k-NN recall against the same exact search (:func:`knn_recall`): a hit
    #: counts when its score reaches the exact 100th score, so a product tied with one exact
    #: search returned (the same text, the same vector) is not a miss. Dense rows only.
    knn_recall: float | None = None

    def cell(self) -> str:
        """``p50 / p99`` for a markdown table."""
        return f"{self.p50_ms:.1f} / {self.p99_ms:.1f}"

    def recall_cell(self) -> str:
        """Recall@100 against exact search for a markdown table (``-`` where not measured),
        with the k-NN recall (ties counted) in brackets where measured."""
        if self.recall_vs_exact is None:
            return "-"
        knn = f" (k-NN {self.knn_recall:.3f})" if self.knn_recall is not None else ""
        return f"{self.recall_vs_exact:.3f}{knn}"


@dataclass(frozen=True)
class SearchMemory:
    """Resident memory of a process that only searches one index (see
    :func:`search_process_memory`), MB.

    Attributes:
        after_mb: Resident (``VmRSS``) after all the queries.
        peak_mb: The process's peak resident memory (``VmHWM``).
        anon_mb: Of ``after_mb``, anonymous memory (``RssAnon``): heaps, the model, what Qdrant
            loaded into RAM; only swap can take it back.
        file_mb: Of ``after_mb``, file pages (``RssFile``): the index's memory-mapped files
            and the shared libraries; the kernel drops them under memory pressure and reads
            them back. Both None where ``/proc`` does not tell (not Linux).
        phases: ``(phase, resident, peak)`` after opening the index and the query tower, then
            after each pass of all the queries in one mode (``dense``, ``dense+filter``,
            ``bm25``, ...), in that order: which step raised the peak.
    """

    after_mb: float
    peak_mb: float
    anon_mb: float | None = None
    file_mb: float | None = None
    phases: tuple[tuple[str, float, float], ...] = ()

    def cell(self) -> str:
        """``after / peak`` for a table."""
        return f"{self.after_mb:.0f} / {self.peak_mb:.0f}"

    def text(self) -> str:
        """One readable line: the totals, their split, and the peak after each phase."""
        steps = ", ".join(f"{name} {peak:.0f}" for name, _, peak in self.phases)
        split = (
            f" ({self.anon_mb:.0f} anonymous, {self.file_mb:.0f} file pages)"
            if self.anon_mb is not None and self.file_mb is not None
            else ""
        )
        return (
            f"a search process alone: {self.after_mb:.0f} MB after the queries{split}, peak "
            f"{self.peak_mb:.0f} MB" + (f"; peak after {steps}" if steps else "")
        )


@dataclass(frozen=True)
class QuantizedVectorsReport:
    """The same catalog built again with Qdrant's scalar quantization of the stored vectors.

    Attributes:
        quantization: ``int8`` (quantile 0.99, kept in RAM, searched with rescoring by fp32).
        index_seconds: That build end to end, without encoding (the vectors were reused).
        store_seconds: Its time inside the store (upserts, HNSW and quantization, promotion).
        latencies: The same rows as the fp32 build, each dense/hybrid row with Recall@100
            against this build's own exact search (its fp32 vectors, the int8 copy ignored).
        rss_mb: Resident memory after its queries (same process, fp32 index closed).
        search_memory: Resident memory of a fresh process that only opens this index with
            the query tower and runs the timed queries: what a search process needs, without
            the benchmark's catalog and first build in memory.
        index_disk_mb: Its index on disk: the files' apparent sizes (as ``SpeedReport``).
        index_disk_allocated_mb: The blocks its files take (Qdrant preallocates sparse files:
            at small sizes far less than the apparent size).
        vectors: Where its vectors came from.
    """

    quantization: str
    index_seconds: float
    store_seconds: float
    latencies: list[Latency]
    rss_mb: float
    index_disk_mb: float
    index_disk_allocated_mb: float = 0.0
    vectors: str = "the fp32 build's stored vectors, not re-encoded"
    search_memory: SearchMemory | None = None


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
    quantized_vectors: QuantizedVectorsReport | None = None
    #: Blocks the index's files take (``index_disk_mb`` is their apparent size).
    index_disk_allocated_mb: float = 0.0
    #: A fresh process that only searches this index (:func:`search_process_memory`); None
    #: where not measured.
    search_memory: SearchMemory | None = None

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
        out += latency_lines(self.latencies)
        if self.filter_desc:
            out.append(f"filter used: {self.filter_desc}")
        out.append(
            f"memory: resident {self.rss_mb:.0f} MB after the queries, peak {self.peak_rss_mb:.0f} MB; "
            f"index on disk {self.index_disk_mb:.0f} MB ({self.index_disk_allocated_mb:.0f} MB "
            "allocated)" + _search_memory_text(self.search_memory)
        )
        q = self.quantized_vectors
        if q is not None:
            out.append(
                f"{q.quantization} scalar-quantized vectors ({q.vectors}): built in "
                f"{q.index_seconds:.1f} s ({q.store_seconds:.1f} s in the store); Recall@100 "
                "against exact search over the fp32 vectors"
            )
            out += latency_lines(q.latencies, indent="  ")
            out.append(
                f"  memory: resident {q.rss_mb:.0f} MB after its queries; index on disk "
                f"{q.index_disk_mb:.0f} MB ({q.index_disk_allocated_mb:.0f} MB allocated)"
                + _search_memory_text(q.search_memory)
            )
        return out

    def markdown(self) -> list[str]:
        """This run as a markdown table: latency and Recall@100 against exact search per query
        kind, for the fp32 build and (when measured) the int8-quantized one; memory and disk."""
        q = self.quantized_vectors
        head = ["query", "p50 / p99 ms", "Recall@100 vs exact"]
        if q is not None:
            head += [f"{q.quantization} vectors: p50 / p99 ms", f"{q.quantization}: Recall@100"]
        quantized = {lat.name: lat for lat in q.latencies} if q is not None else {}
        rows = []
        for lat in self.latencies:
            cells = [
                lat.name,
                lat.cell(),
                "exact" if lat.name.startswith("exact ") else lat.recall_cell(),
            ]
            if q is not None:
                other = quantized.get(lat.name)
                cells += [other.cell(), other.recall_cell()] if other else ["-", "-"]
            rows.append(cells)
        memory = ["resident memory after the queries, MB", f"{self.rss_mb:.0f}", ""]
        search = ["search process alone: resident after the queries / peak, MB"]
        search += [_search_memory_cell(self.search_memory), ""]
        disk = ["index on disk, MB", f"{self.index_disk_mb:.0f}", ""]
        allocated = ["index on disk, allocated, MB", f"{self.index_disk_allocated_mb:.0f}", ""]
        if q is not None:
            memory += [f"{q.rss_mb:.0f}", ""]
            search += [_search_memory_cell(q.search_memory), ""]
            disk += [f"{q.index_disk_mb:.0f}", ""]
            allocated += [f"{q.index_disk_allocated_mb:.0f}", ""]
        rows += [memory, search, disk, allocated]
        out = [
            f"{self.products:,} products, {self.backend}{' ' + self.quantize if self.quantize else ''}"
            f" towers, k = {BENCH_K}"
            + (f"; filter: {self.filter_desc}" if self.filter_desc else ""),
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        out += ["| " + " | ".join(cells) + " |" for cells in rows]
        return out


def latency_lines(latencies: Sequence[Latency], indent: str = "") -> list[str]:
    """One readable line per latency, with Recall@100 against exact search where measured."""
    base = {lat.name: lat for lat in latencies}
    out = []
    for lat in latencies:
        line = f"{indent}query latency {lat.name:<28} p50 {lat.p50_ms:6.2f} ms  p99 {lat.p99_ms:6.2f} ms  (n={lat.n})"
        if lat.recall_vs_exact is not None:
            line += f"  Recall@{BENCH_K} vs exact {lat.recall_vs_exact:.3f}"
        if lat.knn_recall is not None:
            line += f" (k-NN recall, ties counted, {lat.knn_recall:.3f})"
        unfiltered = base.get(lat.name.replace("+filter", ""))
        if lat.name.endswith("+filter") and unfiltered:
            line += f"  p99 ratio to unfiltered {lat.p99_ms / unfiltered.p99_ms:.2f}x"
        out.append(line)
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
    rows += _latency_rows("", reports[0].latencies, [r.latencies for r in reports])
    rows.append(("resident memory, MB", [f"{r.rss_mb:.0f}" for r in reports]))
    rows.append(
        (
            "search process alone: resident / peak, MB",
            [_search_memory_cell(r.search_memory) for r in reports],
        )
    )
    quantized = [r.quantized_vectors for r in reports]
    first = next((q for q in quantized if q is not None), None)
    if first is not None:
        label = f"{first.quantization} vectors: "
        rows += _latency_rows(label, first.latencies, [q.latencies if q else [] for q in quantized])
        rows.append(
            (f"{label}resident memory, MB", [f"{q.rss_mb:.0f}" if q else "-" for q in quantized])
        )
        rows.append(
            (
                f"{label}search process alone: resident / peak, MB",
                [_search_memory_cell(q.search_memory) if q else "-" for q in quantized],
            )
        )
        rows.append(
            (
                f"{label}index on disk, MB",
                [f"{q.index_disk_mb:.0f}" if q else "-" for q in quantized],
            )
        )
        rows.append(
            (
                f"{label}index on disk, allocated, MB",
                [f"{q.index_disk_allocated_mb:.0f}" if q else "-" for q in quantized],
            )
        )
    return _column_table(names, rows)


def _column_table(names: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """A markdown table: an empty corner, a column per name, a row per (label, cells)."""
    out = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    out += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return out


def _latency_rows(
    label: str, names: Sequence[Latency], per_report: Sequence[Sequence[Latency]]
) -> list[tuple[str, list[str]]]:
    """``p50 / p99`` rows (and a Recall@100 row under each row that has one), a column each."""
    lats = [{lat.name: lat for lat in latencies} for latencies in per_report]
    rows = []
    for lat in names:
        name = lat.name
        rows.append(
            (f"{label}{name} p50 / p99 ms", [lt[name].cell() if name in lt else "-" for lt in lats])
        )
        if lat.recall_vs_exact is not None:
            rows.append(
                (
                    f"{label}{name} Recall@{BENCH_K} vs exact",
                    [lt[name].recall_cell() if name in lt else "-" for lt in lats],
                )
            )
    return rows


def _search_memory_cell(memory: SearchMemory | None) -> str:
    return "-" if memory is None else memory.cell()


def _search_memory_text(memory: SearchMemory | None, sep: str = "; ") -> str:
    return "" if memory is None else sep + memory.text()


def run_isolated(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh (spawned) process; its result or its exception.

    ``bench-index`` runs each of several variants this way, so that what one leaves behind
    (its models, thread pools, a heap grown by indexing) neither slows the next one's timings
    nor counts in its resident memory. With fp32 torch run first in the same process, the
    int8 6-layer reranker took 24.1-26.5 ms p50 for 10 candidates and 47.0-47.6 for 20 (two
    runs), against 18.1 and 34.4-37.5 in a process of its own (two runs; Home Depot, 2 cores,
    2026-11-30).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def search_process_memory(
    path: Path,
    queries: Sequence[str],
    flt: dict[str, Any] | None,
    *,
    model: str | None,
    device: str | None,
    backend: str,
    quantize: str | None,
) -> SearchMemory:
    """Resident memory of a search process: a fresh (spawned) Python process opens the index
    at ``path`` with the query tower, then runs all the queries in one mode after another
    (dense, BM25, hybrid; each unfiltered, then with ``flt``), noting its memory after opening
    and after each pass.

    The benchmark's own process holds the catalog and the build; a shop's search process holds
    neither, so this is the figure to size a server by.
    """
    return run_isolated(
        _search_and_measure,
        str(path),
        list(queries),
        flt,
        {"model": model, "device": device, "backend": backend, "quantize": quantize},
    )


def _search_and_measure(
    path: str, queries: list[str], flt: dict[str, Any] | None, tower: dict[str, Any]
) -> SearchMemory:
    encoder = BiEncoder(**tower)
    hits = 0
    phases = []
    with Retriever.open(path, encoder=encoder) as retriever:
        phases.append(("opening", *_rss_mb()))
        for mode in ("dense", "bm25", "hybrid"):
            for f in (None, flt) if flt is not None else (None,):
                for q in queries:
                    hits += len(retriever.search(q, k=BENCH_K, mode=mode, filters=f))
                phases.append((mode + ("+filter" if f else ""), *_rss_mb()))
        status = _proc_status_mb()
    if not hits:  # pragma: no cover - a bug: the memory of a process that found nothing
        raise AssertionError(f"the search process found nothing in {path}")
    after, peak = _rss_mb(status)
    return SearchMemory(after, peak, status.get("RssAnon"), status.get("RssFile"), tuple(phases))


def _proc_status_mb() -> dict[str, float]:
    """The ``Vm*`` and ``Rss*`` lines of ``/proc/self/status``, MB (empty off Linux)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.startswith(("Vm", "Rss")):
                    out[key] = int(value.split()[0]) / 1024.0  # kB
    except OSError:  # pragma: no cover - not Linux
        pass
    return out


def _rss_mb(status: dict[str, float] | None = None) -> tuple[float, float]:
    """(current, peak) resident memory of this process, MB (from ``status``, a
    :func:`_proc_status_mb` reading, when given).

    The peak is ``VmHWM`` of ``/proc/self/status``, which belongs to the address space: a
    spawned process starts its own. ``getrusage``'s ``ru_maxrss`` (the fallback off Linux)
    survives fork and exec, so a child would report its parent's peak.
    """
    import resource

    fields = _proc_status_mb() if status is None else status
    peak = fields.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return fields.get("VmRSS", peak), peak


def _disk_mb(path: Path, allocated: bool = False) -> float:
    """Size of the files under ``path``, MB: apparent, or the blocks they take (``allocated``)."""
    files = [f.stat() for f in Path(path).rglob("*") if f.is_file()]
    return sum(st.st_blocks * 512 if allocated else st.st_size for st in files) / 2**20


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


def _percentiles(name: str, samples: Sequence[float], recall: float | None = None) -> Latency:
    arr = np.asarray(samples) * 1000.0
    return Latency(
        name,
        len(arr),
        float(np.percentile(arr, 50)),
        float(np.percentile(arr, 99)),
        float(arr.mean()),
        recall,
    )


def time_queries(
    fn: Callable[[str], object], queries: Sequence[str], warmup: Sequence[str] = ()
) -> list[float]:
    """Seconds per call of ``fn(query)`` over ``queries``, after untimed calls on ``warmup``."""
    return timed_calls(fn, queries, warmup)[0]


def timed_calls(
    fn: Callable[[str], Any], queries: Sequence[str], warmup: Sequence[str] = ()
) -> tuple[list[float], list[Any]]:
    """:func:`time_queries` that also keeps what each timed call returned."""
    for q in warmup or queries[:5]:
        fn(q)
    seconds, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        got = fn(q)
        seconds.append(time.perf_counter() - t0)
        results.append(got)
    return seconds, results


def recall_against(got: Sequence[Sequence[str]], exact: Sequence[Sequence[str]]) -> float | None:
    """Mean over queries of ``|got & exact| / |exact|`` (the ids of each query's hits).

    Queries exact search finds nothing for (a filter nothing meets) are left out; None when
    that is all of them.
    """
    shares = [len(set(g) & set(e)) / len(e) for g, e in zip(got, exact, strict=True) if len(e) > 0]
    return float(np.mean(shares)) if shares else None


#: Score slack of :func:`knn_recall`, ann-benchmarks' default.
KNN_EPSILON = 1e-3


def knn_recall(
    got: Sequence[Sequence[float]],
    exact: Sequence[Sequence[float]],
    epsilon: float = KNN_EPSILON,
) -> float | None:
    """ann-benchmarks' k-NN recall, for similarities: the mean over queries of the share of the
    first ``len(exact)`` returned hits whose score is at least the exact search's last (k-th)
    score minus ``epsilon`` (Aumüller, Bernhardsson and Faithfull, "ANN-Benchmarks", Information
    Systems 87, 2020; ``knn_threshold`` in its ``plotting/metrics.py``, with distances).

    Unlike :func:`recall_against` (ids), a returned product that ties with one exact search
    returned counts as found: catalogs repeat texts, and equal vectors tie. Scores must be on
    one scale (dense similarities, not fused ranks). Queries exact search finds nothing for are
    left out; None when that is all of them.
    """
    shares = []
    for g, e in zip(got, exact, strict=True):
        if len(e) == 0:
            continue
        cut = min(e) - epsilon
        shares.append(sum(1 for score in list(g)[: len(e)] if score >= cut) / len(e))
    return float(np.mean(shares)) if shares else None


def measure_queries(
    retriever: Retriever,
    queries: Sequence[str],
    warm: Sequence[str],
    flt: dict[str, Any] | None,
) -> tuple[list[Latency], dict[str, list[list[str]]]]:
    """Latency of each mode at k = 100, unfiltered and with ``flt``, and Recall@100 against
    exact search for each dense and hybrid row (by ids), with ann-benchmarks' k-NN recall
    (:func:`knn_recall`, ties counted) for the dense rows.

    Returns:
        The latencies (with an ``exact ...`` row timing each exact search), and the exact
        top-100 ids per row name (``"dense k=100"``, ...) and query.
    """
    latencies: list[Latency] = []
    exact_ids: dict[str, list[list[str]]] = {}
    for mode in ("dense", "bm25", "hybrid"):
        exact_rows = []
        for f in (None, flt) if flt is not None else (None,):
            name = f"{mode} k={BENCH_K}" + ("+filter" if f is not None else "")

            def run(q: str, m=mode, f=f, exact: bool = False) -> list[tuple[str, float]]:
                hits = retriever.search(q, k=BENCH_K, mode=m, filters=f, exact=exact)
                return [(h.product_id, h.score) for h in hits]

            seconds, got = timed_calls(run, queries, warm)
            recall = knn = None
            if mode in EXACT_MODES:
                exact_s, exact_hits = timed_calls(
                    lambda q, run=run: run(q, exact=True), queries, warm
                )
                exact_rows.append(_percentiles(f"exact {name}", exact_s))
                exact_ids[name] = [[pid for pid, _ in hits] for hits in exact_hits]
                recall = recall_against([[pid for pid, _ in g] for g in got], exact_ids[name])
                if mode == "dense":  # similarities: one scale in both searches
                    knn = knn_recall(
                        [[sc for _, sc in g] for g in got],
                        [[sc for _, sc in e] for e in exact_hits],
                    )
            latencies.append(replace(_percentiles(name, seconds, recall), knn_recall=knn))
        latencies += exact_rows
    return latencies, exact_ids


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class ReusedDocumentVectors:
    """A bi-encoder whose product tower returns the vectors an index already stores.

    Builds the same catalog again (another store setting) without encoding it again: each
    product text maps to the stored vector of its product. Everything else (query tower,
    fingerprint, probes, ``describe``) is the wrapped encoder's, so the new build records the
    same model and opens with the same query tower. Only for a catalog the index was built from.
    """

    def __init__(self, encoder: BiEncoder, rows: dict[bytes, int], vectors: np.ndarray) -> None:
        self.encoder = encoder
        self.rows = rows
        self.vectors = vectors

    @classmethod
    def from_index(
        cls,
        encoder: BiEncoder,
        location: IndexLocation,
        products: Sequence[Product],
        batch: int = 1024,
    ) -> ReusedDocumentVectors:
        """The stored vectors of ``products`` (read in batches through the store facade)."""
        vectors = np.empty((len(products), encoder.dim), dtype=np.float32)  # one block
        rows: dict[bytes, int] = {}
        collection = open_backend(location).open()
        try:
            for i in range(0, len(products), batch):
                chunk = products[i : i + batch]
                got = collection.retrieve([p.product_id for p in chunk], with_vectors=True)
                for p in chunk:
                    hit = got.get(p.product_id)
                    key = _text_key(product_text(p))
                    if hit is None or hit.vector is None or key in rows:
                        continue
                    vectors[len(rows)] = hit.vector
                    rows[key] = len(rows)
        finally:
            collection.close()
        return cls(encoder, rows, vectors)

    def encode_document(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """The stored vectors of these product texts, shape ``(n, dim)``."""
        try:
            rows = [self.rows[_text_key(t)] for t in texts]
        except KeyError:
            raise ShopsearchError(
                "a product text that the first build did not store: the catalog changed "
                "between the two builds"
            ) from None
        return self.vectors[rows]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)


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


def bench_queries(
    catalog: str | Path,
    queries: Sequence[str] | None,
    n_queries: int,
    encoder_sample: int,
    seed: int,
) -> tuple[
    list[Product],
    list[Product],
    list[str],
    list[str],
    tuple[dict[str, Any] | None, str | None],
]:
    """What ``bench-index`` measures with, the same for the same arguments.

    Returns:
        The catalog's valid products, the encoder-alone sample, the timed queries (``queries``
        or shopper-like ones from titles: 2 to 4 leading words), the warm-up queries and
        (filter, its description) from :func:`pick_filter`.

    Raises:
        ShopsearchError: No valid product in the catalog.
    """
    products = [p for batch in read_catalog(catalog) for p in batch.products]
    if not products:
        raise ShopsearchError(f"{catalog}: no valid product to benchmark")
    rng = random.Random(seed)
    sample = rng.sample(products, min(encoder_sample, len(products)))
    if queries is None:
        queries = [
            " ".join(p.title.split()[: rng.randint(2, 4)])
            for p in rng.sample(products, min(n_queries + WARMUP_QUERIES, len(products)))
        ]
    queries = list(queries)
    # a separate set of queries warms each mode up (the index's pages, the encoder), so the
    # first mode timed is not charged for a cold start that a running service pays once
    warm = queries[n_queries : n_queries + WARMUP_QUERIES] or queries[:WARMUP_QUERIES]
    payloads = [
        {"category": p.category, "brand": p.brand, "price": p.price, "in_stock": p.in_stock}
        for p in products
    ]
    return products, sample, queries[:n_queries], warm, pick_filter(payloads)


#: What ``bench-index`` timed, saved beside its indexes for ``--memory-only`` and
#: ``--search-only`` to reuse.
BENCH_QUERIES_FILE = "bench-queries.json"


def query_tower(model: str | None, backend: str, quantize: str | None) -> dict[str, Any]:
    """How a run embedded its queries, as ``bench-queries.json`` records it."""
    return {
        "model": str(Path(model).expanduser().resolve()) if model else None,
        "backend": backend,
        "quantize": quantize,
    }


def save_bench_queries(
    workdir: Path,
    queries: Sequence[str],
    flt: dict[str, Any] | None,
    tower: dict[str, Any],
    indexes: Sequence[str],
    warm: Sequence[str] = (),
) -> Path:
    """Writes the timed and warm-up queries, the filter, the query tower and the index folders
    this run builds to ``workdir`` (atomically: a killed run leaves the old file or the new one)."""
    from research.simulate import write_atomically

    file = workdir / BENCH_QUERIES_FILE
    record = {
        "queries": list(queries),
        "warm": list(warm),
        "filter": flt,
        "tower": tower,
        "indexes": list(indexes),
    }
    text = json.dumps(record, indent=1, default=list) + "\n"
    write_atomically(file, lambda tmp: Path(tmp).write_text(text))
    return file


def _read_bench_queries(
    file: Path,
) -> tuple[list[str], dict[str, Any] | None, dict, list[str], list[str] | None]:
    """(queries, filter, tower, index folders, warm-up queries) from a
    :func:`save_bench_queries` file (warm-up None: a file from before they were saved).

    Raises:
        ShopsearchError: Not such a file (damaged, or written by something else).
    """
    try:
        record = json.loads(file.read_text())
        queries, flt, tower = list(record["queries"]), record["filter"], dict(record["tower"])
        indexes = [str(x) for x in record.get("indexes", ["index"])]
        warm = [str(x) for x in record["warm"]] if record.get("warm") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShopsearchError(
            f"{file}: not a bench-queries file ({type(exc).__name__}: {exc}); run bench-index "
            "without --memory-only or --search-only to write it again"
        ) from exc
    if not queries or not all(isinstance(q, str) for q in queries):
        raise ShopsearchError(f"{file}: no queries in it; run bench-index again to write it")
    return queries, flt, tower, indexes, warm


def saved_indexes(
    catalog: str | Path,
    workdir: str | Path,
    *,
    queries: Sequence[str] | None = None,
    n_queries: int = 300,
    encoder_sample: int = 4000,
    model: str | None = None,
    seed: int = 0,
    backend: str = "torch",
    quantize: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[Path], list[str], list[str], dict[str, Any] | None]:
    """The indexes an earlier ``bench-index`` run left in ``workdir`` (``index``, and each
    built ``index-*-vectors``) and what that run measured them with.

    The queries and filter are the ones that run saved (``bench-queries.json``); a run from
    before that file existed gets them derived again from the same arguments
    (:func:`bench_queries`), which is said in the log.

    Returns:
        (index folders, timed queries, warm-up queries, filter).

    Raises:
        ShopsearchError: No ``workdir/index``, or a query tower (model, backend,
            quantization) other than the one that run recorded.
    """
    workdir = Path(workdir)
    index = workdir / "index"
    if not (index / "CURRENT").is_file():  # what an embedded index has once built
        raise ShopsearchError(
            f"no benchmark index in {index}: run bench-index without --memory-only or "
            "--search-only first"
        )
    folders = [
        index,
        *(f for f in sorted(workdir.glob("index-*-vectors")) if (f / "CURRENT").is_file()),
    ]
    saved = workdir / BENCH_QUERIES_FILE
    if saved.is_file():
        timed, flt, tower, built, warm = _read_bench_queries(saved)
        mine = query_tower(model, backend, quantize)
        theirs = {k: tower.get(k) for k in mine}
        if mine != theirs:
            raise ShopsearchError(
                f"{workdir} was measured with {theirs}, not {mine}: give the same --model and "
                "--variant"
            )
        folders = [f for f in folders if f.name in built]  # not a folder an older run left
        log(
            f"{len(timed)} queries and the filter of the run that built {workdir} ({saved}); "
            "--queries and --n-queries are not used"
        )
        if warm is None:  # saved before the warm-up queries were: derive them as that run did
            _, _, _, warm, _ = bench_queries(catalog, queries, n_queries, encoder_sample, seed)
            log(f"its warm-up queries derived again from {catalog} with the same arguments")
    else:
        _, _, timed, warm, (flt, _) = bench_queries(
            catalog, queries, n_queries, encoder_sample, seed
        )
        log(
            f"no {BENCH_QUERIES_FILE} in {workdir} (a run from before it was saved): "
            f"{len(timed)} queries derived again from {catalog} with the same arguments"
        )
    return folders, timed, warm, flt


@dataclass(frozen=True)
class SavedIndexReport:
    """An index an earlier ``bench-index`` run left, measured again (``--search-only``, or
    ``--memory-only``: no latencies)."""

    latencies: list[Latency]
    search_memory: SearchMemory


def run_search_again(
    catalog: str | Path,
    workdir: str | Path,
    *,
    latency: bool = True,
    device: str | None = None,
    log: Callable[[str], None] = print,
    **saved: Any,
) -> dict[str, SavedIndexReport]:
    """Each of the :func:`saved_indexes` (its keyword arguments in ``saved``) measured again
    as the run that built it measured it (:func:`measure_queries`: latency at k = 100 per mode,
    unfiltered and filtered, and Recall@100 against exact search; skipped when ``latency`` is
    False), and :func:`search_process_memory`; building nothing.

    For a query-time change (threads, search parameters) on indexes that took hours to build.

    Returns:
        Per index folder name, its latencies and search-process memory.
    """
    folders, timed, warm, flt = saved_indexes(catalog, workdir, log=log, **saved)
    tower = {
        "model": saved.get("model"),
        "backend": saved.get("backend") or "torch",
        "quantize": saved.get("quantize"),
    }
    encoder = BiEncoder(**tower, device=device) if latency else None
    out = {}
    for folder in folders:
        latencies: list[Latency] = []
        if encoder is not None:
            with Retriever.open(folder, encoder=encoder) as retriever:
                latencies, _ = measure_queries(retriever, timed, warm, flt)
            for line in latency_lines(latencies, indent=f"{folder.name}: "):
                log(line)
        memory = search_process_memory(folder, timed, flt, device=device, **tower)
        log(f"{folder.name}: " + memory.text())
        out[folder.name] = SavedIndexReport(latencies, memory)
    return out


def saved_indexes_table(reports: dict[str, SavedIndexReport]) -> list[str]:
    """A markdown table of :func:`run_search_again`: a column per index folder."""
    if not reports:
        return []
    names = list(reports)
    first = reports[names[0]].latencies
    rows = _latency_rows("", first, [reports[n].latencies for n in names])
    rows.append(
        (
            "search process alone: resident / peak, MB",
            [reports[n].search_memory.cell() for n in names],
        )
    )
    return _column_table(names, rows)


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
    quantize_vectors: str | None = None,
    log: Callable[[str], None] = print,
) -> SpeedReport:
    """Indexes ``catalog`` into ``workdir/index`` and measures throughput and latency.

    Args:
        backend: How both towers (and the reranker) run: torch, onnx or openvino.
        quantize: None or ``int8`` (the quantized copies ``shopsearch optimize`` wrote).
        reranker: A reranker folder: adds rerank latency at each of ``rerank_depths``
            candidates and retrieve (hybrid) + rerank 50 latency.
        quantize_vectors: None, or ``int8``: also build the catalog into
            ``workdir/index-int8-vectors`` with Qdrant's int8 scalar quantization of the stored
            vectors, from the first build's vectors (not re-encoded), and measure its latency and
            Recall@100 against exact search over the fp32 vectors, memory and disk.
    """
    if quantize_vectors not in (None, "int8"):
        raise ShopsearchError(f"unknown vector quantization '{quantize_vectors}': use int8")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    encoder = BiEncoder(model, device=device, backend=backend, quantize=quantize)
    products, sample, queries, warm, (flt, flt_desc) = bench_queries(
        catalog, queries, n_queries, encoder_sample, seed
    )
    # saved before anything is built: an interrupted run leaves no older run's queries behind
    save_bench_queries(
        workdir,
        queries,
        flt,
        query_tower(model, backend, quantize),
        ["index"] + ([f"index-{quantize_vectors}-vectors"] if quantize_vectors else []),
        warm,
    )
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

    with Retriever.open(location.path, encoder=encoder) as retriever:
        latencies, _ = measure_queries(retriever, queries, warm, flt)
        enc_only = time_queries(lambda q: encoder.encode_query(q), queries, warm)
        latencies.append(_percentiles("query encoder alone", enc_only))
        if reranker is not None:
            from rerank.cross_encoder import Reranker
            from rerank.pipeline import SearchPipeline

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
    process = {"model": model, "device": device, "backend": backend, "quantize": quantize}
    search_memory = search_process_memory(location.path, queries, flt, **process)
    log(_search_memory_text(search_memory, sep=""))
    disk, allocated = _disk_mb(location.path), _disk_mb(location.path, allocated=True)
    quantized = None
    if quantize_vectors is not None:
        quantized = _quantized_build(
            catalog,
            workdir,
            encoder,
            fp32=location,
            products=products,
            quantization=quantize_vectors,
            queries=(queries, warm, flt),
            process=process,
            log=log,
        )
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
        index_disk_mb=disk,
        index_disk_allocated_mb=allocated,
        quantized_vectors=quantized,
        search_memory=search_memory,
    )


def _quantized_build(
    catalog: str | Path,
    workdir: Path,
    encoder: BiEncoder,
    *,
    fp32: IndexLocation,
    products: Sequence[Product],
    quantization: str,
    queries: tuple[Sequence[str], Sequence[str], dict[str, Any] | None],
    process: dict[str, Any],
    log: Callable[[str], None],
) -> QuantizedVectorsReport:
    """The catalog built again with quantized vectors (the fp32 build's) and measured.

    ``queries`` is (timed queries, warm-up queries, filter) as the fp32 build was measured
    with. Recall is against this build's own exact search, which reads its fp32 vectors (the
    same as the first build's) and ignores the int8 copy: not against the first build's exact
    ids, because products with the same text have the same vector, and two builds break such
    ties at the 100th hit differently (on the 100k sample catalog, 15,796 distinct titles, the
    two builds' exact top 100 share only about 92%).
    """
    timed, warm, flt = queries
    location = IndexLocation(path=workdir / f"index-{quantization}-vectors")
    reused = ReusedDocumentVectors.from_index(encoder, fp32, products)
    summary = index_catalog(
        catalog,
        location,
        encoder=reused,  # type: ignore[arg-type]  # duck-typed: the encoder but for documents
        quantize_vectors=quantization,
        rejects_path=workdir / f"rejects-{quantization}-vectors.csv",
    )
    del reused
    gc.collect()  # the reused vectors: out of the resident memory measured below
    log(
        f"{quantization} vectors: built in {summary.seconds:.1f} s from the fp32 build's vectors "
        f"({summary.store_seconds:.1f} s in the store)"
    )
    with Retriever.open(location.path, encoder=encoder) as retriever:
        latencies, _ = measure_queries(retriever, timed, warm, flt)
    rss = _rss_mb()[0]
    search_memory = search_process_memory(location.path, timed, flt, **process)
    log(f"{quantization} vectors: " + _search_memory_text(search_memory, sep=""))
    return QuantizedVectorsReport(
        quantization=quantization,
        index_seconds=summary.seconds,
        store_seconds=summary.store_seconds,
        latencies=latencies,
        rss_mb=rss,
        index_disk_mb=_disk_mb(location.path),
        index_disk_allocated_mb=_disk_mb(location.path, allocated=True),
        search_memory=search_memory,
    )
