"""The research commands' jobs, callable from Python: the demo, a simulation run, the
personalization benchmark and the indexing-speed benchmark from files.

``research/cli.py`` parses options and calls one of these; they used to live in the command
bodies. Progress goes to ``log``; what a command prints as its result is returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ShopsearchError

if TYPE_CHECKING:
    from research.bench_personal import PersonalizationReport
    from research.bench_speed import SpeedReport
    from research.simulate import SimOutput

Log = Callable[[str], None]


def demo_steps(workdir: Path, n: int = 2000, seed: int = 0, k: int = 5) -> Iterator[str]:
    """The main job end to end: sample catalog -> embedded index -> a few searches.

    Yields the demo's output, a block at a time, as each step finishes.
    """
    from catalog.sample import SAMPLE_QUERIES, write_sample_catalog
    from indexer.build import index_catalog
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation
    from shopsearch.cli.search import format_hits

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = write_sample_catalog(workdir / "catalog.parquet", n=n, seed=seed)
    yield f"1. wrote a sample catalog of {n} products: {catalog}"
    index_dir = workdir / "index"
    summary = index_catalog(
        catalog, IndexLocation(path=index_dir), rejects_path=workdir / "rejects.csv"
    )
    yield (
        f"2. indexed {summary.indexed} products into {index_dir} in {summary.seconds:.1f} s "
        f"({summary.items_per_s:.0f} items/s, {summary.rejected} rejected)"
    )
    yield "3. searches (hybrid: dense + BM25, fused in Qdrant):"
    with Retriever.open(index_dir) as retriever:
        for query in SAMPLE_QUERIES[:4]:
            yield format_hits(query, retriever.search(query, k=k))
            yield ""
        query = SAMPLE_QUERIES[0]
        yield format_hits(
            f"{query} [in stock, under $150]",
            retriever.search(query, k=k, filters={"in_stock": True, "max_price": 150}),
        )
    yield f'\nTry: shopsearch search "{SAMPLE_QUERIES[1]}" --index {index_dir} -k 10'
    yield f"Serve it: shopsearch serve --index {index_dir}, then open http://127.0.0.1:8000/"


def run_simulation(
    data: Path,
    out: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    *,
    seed: int = 0,
    strength: float = 1.0,
    noise: float = 0.0,
    users: int = 1500,
    pool: int = 800,
    examine_eta: float = 1.0,
    log: Log = print,
) -> SimOutput:
    """Simulate shoppers over DATA's catalog and queries and write the log to ``out``."""
    from research.bench_personal import prepare, simulate_setup

    setup = prepare(
        data,
        zero_shot_index,
        tuned_index,
        reranker_model,
        out,
        pool_size=pool,
        log=log,
    )
    _, sim = simulate_setup(
        setup,
        out,
        seed=seed,
        n_users=users,
        preference_strength=strength,
        noise_share=noise,
        examine_eta=examine_eta,
    )
    return sim


def run_personal_benchmark(
    data: Path,
    zero_shot_index: Path,
    tuned_index: Path,
    reranker_model: str,
    workdir: Path,
    *,
    seeds: Sequence[int] = (201, 202, 203),
    noise: float = 0.2,
    strength: float = 1.0,
    users: int = 1500,
    pool: int = 800,
    examine_eta: float = 1.0,
    click_evidence: bool = True,
    log: Log = print,
) -> PersonalizationReport:
    """Personalized vs relevance-only ranking on simulated shoppers' held-out sessions."""
    from research.bench_personal import prepare, run_personalization_benchmark

    setup = prepare(
        data, zero_shot_index, tuned_index, reranker_model, workdir, pool_size=pool, log=log
    )
    return run_personalization_benchmark(
        setup,
        workdir,
        seeds=list(seeds),
        noise=noise,
        preference_strength=strength,
        n_users=users,
        log=log,
        examine_eta=examine_eta,
        click_evidence=click_evidence,
    )


def read_queries_file(queries_file: Path) -> list[str]:
    """The distinct, non-null ``query`` column of a Parquet or CSV file, in file order."""
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
    return frame["query"].drop_nulls().unique(maintain_order=True).to_list()


def run_index_benchmark(
    catalog: Path,
    workdir: Path,
    *,
    queries_file: Path | None = None,
    n_queries: int = 300,
    encoder_sample: int = 4000,
    model: str | None = None,
    device: str | None = None,
    backend: str = "torch",
    quantize: str | None = None,
    reranker: str | None = None,
    quantize_vectors: str | None = None,
    log: Log = print,
) -> SpeedReport:
    """Indexing items/s and query latency on ``catalog``; the report also goes to
    ``workdir/speed.json`` and, as a table with Recall@100 against exact search, ``speed.md``."""
    from research.bench_speed import run_speed_benchmark

    queries = read_queries_file(queries_file) if queries_file is not None else None
    report = run_speed_benchmark(
        catalog,
        workdir,
        queries=queries,
        n_queries=n_queries,
        encoder_sample=encoder_sample,
        model=model,
        device=device,
        backend=backend,
        quantize=quantize,
        reranker=reranker,
        quantize_vectors=quantize_vectors,
        log=log,
    )
    (Path(workdir) / "speed.json").write_text(json.dumps(report.as_dict(), indent=2))
    (Path(workdir) / "speed.md").write_text("\n".join(report.markdown()) + "\n")
    return report


def _new_file(workdir: Path, stem: str, suffix: str) -> Path:
    """Reserves ``workdir/<stem>-<UTC time><suffix>`` (created empty, exclusively), never an
    earlier run's file (``-2``, ``-3`` ... when the second is taken)."""
    import time

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    n = 1
    while True:
        file = Path(workdir) / (f"{stem}-{stamp}" + (f"-{n}" if n > 1 else "") + suffix)
        try:
            file.open("x").close()
            return file
        except FileExistsError:
            n += 1


def _write(file: Path, text: str) -> None:
    """``text`` into ``file`` atomically (a killed run leaves the old content or the new)."""
    from research.simulate import write_atomically

    write_atomically(file, lambda tmp: Path(tmp).write_text(text))


def run_search_benchmark(
    catalog: Path,
    workdir: Path,
    *,
    memory_only: bool = False,
    queries_file: Path | None = None,
    n_queries: int = 300,
    encoder_sample: int = 4000,
    model: str | None = None,
    device: str | None = None,
    backend: str = "torch",
    quantize: str | None = None,
    log: Log = print,
) -> tuple[dict[str, Any], Path, Path | None]:
    """The indexes a ``bench-index`` run left in ``workdir`` measured again: latency and
    Recall@100 against exact search per mode (not with ``memory_only``), and a search
    process's memory (``research.bench_speed.run_search_again``).

    Returns:
        Per index folder, its report as a dict (with ``memory_only``, its ``SearchMemory``);
        the file they were written to, ``workdir/search-<UTC time>.json`` (with
        ``memory_only``, ``search-memory-<UTC time>.json``); and the table beside it,
        ``search-<UTC time>.md`` (None with ``memory_only``). Each run writes its own files:
        none is overwritten.
    """
    from dataclasses import asdict

    from research.bench_speed import run_search_again, saved_indexes_table

    queries = read_queries_file(queries_file) if queries_file is not None else None
    reports = run_search_again(
        catalog,
        workdir,
        latency=not memory_only,
        queries=queries,
        n_queries=n_queries,
        encoder_sample=encoder_sample,
        model=model,
        device=device,
        backend=backend,
        quantize=quantize,
        log=log,
    )
    if memory_only:
        out = {name: asdict(r.search_memory) for name, r in reports.items()}
        file = _new_file(workdir, "search-memory", ".json")
        _write(file, json.dumps(out, indent=2))
        return out, file, None
    out = {name: asdict(r) for name, r in reports.items()}
    file = _new_file(workdir, "search", ".json")  # the .md beside it shares its unique stem
    table = file.with_suffix(".md")
    _write(table, "\n".join(saved_indexes_table(reports)) + "\n")
    _write(file, json.dumps(out, indent=2))
    return out, file, table
