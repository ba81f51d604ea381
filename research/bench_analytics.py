"""``shopsearch bench-analytics``: how long a full analytics report takes over N logged searches,
and how much disk the log takes.

A synthetic search log in the service's format (:data:`personalization.searchlog.SCHEMA`) is
generated with numpy and polars, vectorised, in Parquet segments of ``segment_searches``
searches each (zstd, as the service's writer rotates them; the writer's 64 MiB JSON Lines
segments hold some 60,000 searches):

* shoppers: ``searches / 10`` pseudonyms with Zipf-like activity, a fifth of the searches
  anonymous (a session each); sessions of a few searches;
* queries: a vocabulary of ``searches / 200`` texts (at least 1,000) drawn Zipf-like, typed
  with random case; 5% spelling-corrected, 3% of first pages empty, 10% second pages;
* each page: ten product ids of a 100,000-product catalog, score parts decreasing with rank;
* clicks: each shown product with probability ``examination(rank) * attraction`` with
  ``examination = 1 / rank`` and attraction from its relevance; 10% of clicks add to the cart
  and 3% buy;
* timestamps spread over ``days`` UTC days, segments in time order.

The report (:func:`analytics.report.analytics_report`, everything: days, query lists, shopper
distribution, examination curve) is then timed twice in this process: the first run ("cold":
the first in the process, the segments in the OS cache as the generation left them) and a
second one. The machine, the threads polars uses and the peak memory go with the figures.

    generate_log(folder, searches) -> LogStats     # the synthetic log
    run(workdir, searches) -> AnalyticsBench        # what ``bench-analytics`` runs
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from personalization.searchlog import SCHEMA

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "analytics"
START = 1_796_083_200.0  # 2026-12-01T00:00:00Z
PAGE = 10
CATALOG = 100_000
MARKER = "bench-analytics.json"  # in the log folder: what generated it (reuse when it matches)


@dataclass(frozen=True)
class LogStats:
    """The synthetic log on disk.

    Attributes:
        searches: Search rows.
        interactions: Interaction rows.
        segments: Parquet files.
        bytes: Their size on disk.
        seconds: Time to generate and write it.
    """

    searches: int
    interactions: int
    segments: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class AnalyticsBench:
    """A full report's time over the synthetic log.

    Attributes:
        log: The log.
        days: UTC days it spans.
        cold_s: The first report in the process (seconds).
        warm_s: A second one.
        threads: Threads of polars' pool.
        peak_rss_mb: Peak resident memory of the process (MiB), generation included when
            the log was made in this run.
        ctr: The report's click-through rate (a check that the log is what it should be).
        theta: Its examination curve (true: ``1 / rank``).
    """

    log: LogStats
    days: int
    cold_s: float
    warm_s: float
    threads: int
    peak_rss_mb: float
    ctr: float
    theta: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as a markdown table."""
        mib = self.log.bytes / 2**20
        per = self.log.bytes / max(1, self.log.searches)
        theta = ", ".join(f"{t:.2f}" for t in self.theta[:5])
        return "\n".join(
            [
                f"{self.log.searches:,} searches and {self.log.interactions:,} interactions "
                f"over {self.days} UTC days, in {self.log.segments} Parquet segments (zstd); "
                f"polars on {self.threads} threads.",
                "",
                "| | |",
                "| --- | ---: |",
                f"| size on disk | {mib:,.0f} MiB ({per:,.0f} bytes per search) |",
                f"| full report, first in the process | {self.cold_s:.1f} s |",
                f"| full report, second run | {self.warm_s:.1f} s |",
                f"| peak memory of the process | {self.peak_rss_mb:,.0f} MiB |",
                "",
                f"The report's click-through rate: {self.ctr:.1%}; its examination curve, ranks "
                f"1-5: {theta} (simulated: 1.00, 0.50, 0.33, 0.25, 0.20).",
            ]
        )


def _segment(rng: np.random.Generator, first: int, n: int, total: int, days: int, vocab: int):
    """Rows of searches ``first .. first + n - 1`` (and their interactions) as one frame."""
    idx = np.arange(first, first + n, dtype=np.int64)
    span = days * 86_400.0
    ts = START + (idx + rng.uniform(0, 1, n)) * (span / total)
    shoppers = max(10, total // 10)
    # Zipf-like activity: a few shoppers search a lot
    shopper = np.minimum((rng.pareto(1.2, n) * shoppers / 20).astype(np.int64), shoppers - 1)
    anonymous = rng.uniform(size=n) < 0.2
    session = shopper * 8 + (idx // 3) % 8
    query_id = np.minimum((rng.pareto(1.0, n) * vocab / 50).astype(np.int64), vocab - 1)
    upper = rng.uniform(size=n) < 0.1
    corrected = rng.uniform(size=n) < 0.05
    later = rng.uniform(size=n) < 0.1
    empty = (~later) & (rng.uniform(size=n) < 0.03)
    a, b = rng.integers(0, 2**62, n), rng.integers(0, 2**62, n)
    products = rng.integers(0, CATALOG, (n, PAGE))
    rank = np.arange(1, PAGE + 1)
    relevance = np.sort(rng.uniform(0, 1, (n, PAGE)), axis=1)[:, ::-1]
    personal = rng.normal(0, 0.1, (n, PAGE))
    attraction = 0.05 + 0.35 * relevance
    clicked = (rng.uniform(size=(n, PAGE)) < attraction / rank) & ~empty[:, None]

    base = pl.DataFrame(
        {
            "i": idx,
            "timestamp": ts,
            "a": a,
            "b": b,
            "shopper": shopper,
            "anonymous": anonymous,
            "session": session,
            "query_id": query_id,
            "upper": upper,
            "corrected_": corrected,
            "later": later,
            "empty": empty,
        }
    ).with_columns(
        search_id=pl.format("{}{}", pl.col("a"), pl.col("b")),
        pseudonym=pl.when(~pl.col("anonymous")).then(pl.format("u{}", pl.col("shopper"))),
        session=pl.format("s{}", pl.col("session")),
        query=pl.format("word{} thing{}", pl.col("query_id") % 997, pl.col("query_id") // 997),
    )
    base = base.with_columns(
        query=pl.when(pl.col("upper")).then(pl.col("query").str.to_uppercase()).otherwise("query"),
        corrected=pl.when(pl.col("corrected_")).then(pl.col("query").str.to_lowercase()),
        offset=pl.when(pl.col("later")).then(PAGE).otherwise(0).cast(pl.Int32),
    )
    lists = pl.DataFrame(
        {
            "results": pl.Series(products.reshape(-1)).cast(pl.String).reshape((n, PAGE)),
            "relevance": pl.Series(relevance.reshape(-1)).reshape((n, PAGE)),
            "personal": pl.Series(personal.reshape(-1)).reshape((n, PAGE)),
        }
    ).select(
        results=pl.col("results").arr.eval(pl.lit("p") + pl.element()).arr.to_list(),
        relevance=pl.col("relevance").arr.to_list(),
        personal=pl.col("personal").arr.to_list(),
    )
    empty_list = pl.lit([], dtype=pl.List(pl.String))
    searches = pl.concat([base, lists], how="horizontal").select(
        event=pl.lit("search"),
        timestamp="timestamp",
        search_id="search_id",
        pseudonym="pseudonym",
        session="session",
        replica=pl.lit("bench:1"),
        query="query",
        corrected="corrected",
        filter=pl.lit(None, pl.String),
        sort=pl.lit(None, pl.String),
        offset="offset",
        k=pl.lit(PAGE, pl.Int32),
        results=pl.when(pl.col("empty")).then(empty_list).otherwise("results"),
        scores=pl.when(pl.col("empty"))
        .then(pl.lit([], dtype=pl.List(pl.Float64)))
        .otherwise(pl.col("relevance").list.eval(pl.element() * 0.9) + pl.col("personal")),
        relevance=pl.when(pl.col("empty"))
        .then(pl.lit([], dtype=pl.List(pl.Float64)))
        .otherwise("relevance"),
        personal=pl.when(pl.col("empty"))
        .then(pl.lit([], dtype=pl.List(pl.Float64)))
        .otherwise("personal"),
        total_candidates=pl.when(pl.col("empty")).then(0).otherwise(50).cast(pl.Int32),
        models=pl.lit('{"retriever": "3f2a9c1d", "reranker": "8be01f77", "personal": "c41d"}'),
        rules=pl.lit([], dtype=pl.List(pl.String)),
        experiment=pl.lit(None, pl.String),
        teams=pl.lit(None, pl.List(pl.String)),
        took_ms=pl.lit(12.0) + pl.col("timestamp").mod(7.0),
        product_id=pl.lit(None, pl.String),
        position=pl.lit(None, pl.Int32),
    )
    row, col = np.nonzero(clicked)
    kind = np.where(rng.uniform(size=len(row)) < 0.1, 1, 0)  # add_to_cart after the click
    buy = rng.uniform(size=len(row)) < 0.03
    rows = np.concatenate([row, row[kind == 1], row[buy]])
    cols = np.concatenate([col, col[kind == 1], col[buy]])
    events = np.concatenate(
        [
            np.zeros(len(row), dtype=np.int8),
            np.ones(int((kind == 1).sum()), dtype=np.int8),
            np.full(int(buy.sum()), 2, dtype=np.int8),
        ]
    )
    picked = searches.select("timestamp", "search_id", "pseudonym", "session", "offset", "results")
    picked = picked[rows]
    interactions = picked.with_columns(
        kind=pl.Series(events),
        i=pl.Series(cols, dtype=pl.Int32),
    ).select(
        event=pl.col("kind").replace_strict({0: "click", 1: "add_to_cart", 2: "purchase"}),
        timestamp=pl.col("timestamp") + 3.0 + pl.col("kind").cast(pl.Float64) * 20,
        search_id="search_id",
        pseudonym="pseudonym",
        session="session",
        replica=pl.lit("bench:1"),
        product_id=pl.col("results").list.get(pl.col("i")),
        position=pl.col("offset") + pl.col("i") + 1,
    )
    out = pl.concat([searches, interactions], how="diagonal_relaxed").select(list(SCHEMA))
    return out.cast(SCHEMA).sort("timestamp"), interactions.height


def generate_log(
    folder: str | os.PathLike[str],
    searches: int,
    days: int = 30,
    segment_searches: int = 100_000,
    seed: int = 0,
) -> LogStats:
    """Writes a synthetic search log of ``searches`` searches into ``folder`` (its segments
    replaced), see the module docstring; returns its size."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.parquet"):
        old.unlink()
    rng = np.random.default_rng(seed)
    vocab = max(1_000, searches // 200)
    started = time.perf_counter()
    interactions = segments = size = 0
    for first in range(0, searches, segment_searches):
        n = min(segment_searches, searches - first)
        df, n_interactions = _segment(rng, first, n, searches, days, vocab)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(df["timestamp"][0]))
        path = out / f"{stamp}-bench-{segments:05d}.parquet"
        df.write_parquet(path, compression="zstd")
        interactions += n_interactions
        segments += 1
        size += path.stat().st_size
    stats = LogStats(searches, interactions, segments, size, time.perf_counter() - started)
    (out / MARKER).write_text(json.dumps({**asdict(stats), "days": days, "seed": seed}))
    return stats


def _reuse(folder: Path, searches: int, days: int, seed: int) -> LogStats | None:
    """The log a previous run left in ``folder``, when it is the same one."""
    try:
        meta = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if (meta.get("searches"), meta.get("days"), meta.get("seed")) != (searches, days, seed):
        return None
    if len(list(folder.glob("*.parquet"))) != meta["segments"]:
        return None
    return LogStats(**{k: meta[k] for k in LogStats.__dataclass_fields__})


def run(
    workdir: str | os.PathLike[str],
    searches: int = 10_000_000,
    days: int = 30,
    segment_searches: int = 100_000,
    seed: int = 0,
    reuse: bool = True,
) -> AnalyticsBench:
    """Generates the log in ``workdir/log`` (or reuses the same one), times two full reports,
    and leaves ``analytics.md`` and ``analytics.json`` in ``workdir``."""
    from analytics.report import analytics_report

    work = Path(workdir)
    folder = work / "log"
    stats = _reuse(folder, searches, days, seed) if reuse else None
    if stats is None:
        stats = generate_log(folder, searches, days, segment_searches, seed)
    times = []
    report = None
    for _ in range(2):
        started = time.perf_counter()
        report = analytics_report(folder)
        times.append(time.perf_counter() - started)
    assert report is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bench = AnalyticsBench(
        log=stats,
        days=days,
        cold_s=times[0],
        warm_s=times[1],
        threads=pl.thread_pool_size(),
        peak_rss_mb=peak,
        ctr=report.ctr,
        theta=list(report.examination.theta),
    )
    (work / "analytics.md").write_text(bench.markdown() + "\n")
    (work / "analytics.json").write_text(json.dumps(bench.as_dict(), indent=2) + "\n")
    return bench
