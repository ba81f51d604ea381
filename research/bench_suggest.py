"""``shopsearch bench-suggest``: what search-box suggestions cost at a shop's scale.

A synthetic search log of ``searches`` searches (default 1,000,000) is written as Parquet
segments (``personalization.searchlog``'s columns): queries drawn with Zipf popularity
(exponent 1.07) from a pool of queries (a file of real ones, such as Home Depot's, or made from
the catalog: two or three consecutive title words of random products, brands, category
names), shoppers drawn uniformly from ``searches / 20`` pseudonyms
(10% of searches anonymous, counted by session), 45% of searches followed by a click. The
catalog is the synthetic sample (``catalog.sample``) or a catalog file.

Measured: writing the log (not part of the cost), reading the catalog's text, building the
:class:`analytics.suggest.Suggester` from the log and that text (what the service does in the
background), the resident memory it adds, and the latency of ``suggest()`` over a mix of
prefixes: typed prefixes of 1 to 10 characters of queries drawn by the same popularity, 20%
with a typo in the last word (a swap, substitution, deletion or insertion, when that word has
four characters or more), half of the calls with a shopper context (three categories and two
brands). One thread, one call at a time; the service adds its HTTP cost on top.

    run(...) -> SuggestBench        # what ``bench-suggest`` runs
"""

from __future__ import annotations

import gc
import os
import random
import re
import resource
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from analytics.suggest import SuggestContext, Suggester, catalog_text
from personalization.searchlog import SCHEMA

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "suggest-latency"
ZIPF = 1.07
CLICK_SHARE = 0.45
ANONYMOUS_SHARE = 0.10
TYPO_SHARE = 0.20
SEARCHES_PER_SHOPPER = 20
SEGMENT_SEARCHES = 250_000
_WORD = re.compile(r"[a-z][a-z0-9-]+")


@dataclass(frozen=True)
class SuggestBench:
    """The figures of one run (times in ms unless named ``_s``; memory in MiB)."""

    searches: int
    shoppers: int
    products: int
    log_rows: int
    log_mib: float
    distinct_queries: int
    entries: int
    log_entries: int
    kept_out: int
    min_shoppers: int
    write_s: float
    catalog_s: float
    build_s: float
    held_mib: float
    rss_peak_mib: float
    calls: int
    p50: float
    p99: float
    p999: float
    max: float
    cpu_p50: float
    cpu_p99: float
    cpu_p999: float
    p99_typo: float
    p99_context: float
    p99_by_length: dict[int, float]
    load: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as markdown tables."""
        by_length = " | ".join(f"{v:.3f}" for v in self.p99_by_length.values())
        lengths = " | ".join(str(k) for k in self.p99_by_length)
        return "\n".join(
            [
                f"A synthetic search log of {self.searches:,} searches by {self.shoppers:,} "
                f"shoppers ({self.log_rows:,} rows with the clicks, {self.log_mib:.1f} MiB of "
                f"Parquet; {self.distinct_queries:,} distinct queries) over {self.products:,} "
                f"products. Logged queries need {self.min_shoppers} distinct shoppers: "
                f"{self.log_entries:,} passed, {self.kept_out:,} were kept out. The Suggester "
                f"holds {self.entries:,} completions.",
                "",
                "| build step | time |",
                "| --- | ---: |",
                f"| read the catalog's text (titles, brands, categories) | {self.catalog_s:.2f} s |",
                f"| read the log and build the Suggester | {self.build_s:.2f} s |",
                f"| memory the built Suggester holds (Python heap and arrays, tracemalloc) | "
                f"{self.held_mib:.0f} MiB |",
                f"| peak resident memory of the process | {self.rss_peak_mib:.0f} MiB |",
                "",
                f"`suggest(prefix, k=8)` over {self.calls:,} prefixes of 1 to 10 characters, "
                f"{TYPO_SHARE:.0%} with a typo in the last word, half with a shopper context "
                "(ms, one thread):",
                "",
                "| | p50 | p99 | p99.9 | max |",
                "| --- | ---: | ---: | ---: | ---: |",
                f"| every call | {self.p50:.3f} | {self.p99:.3f} | {self.p999:.3f} | "
                f"{self.max:.3f} |",
                f"| the same, CPU time of the thread | {self.cpu_p50:.3f} | {self.cpu_p99:.3f} | "
                f"{self.cpu_p999:.3f} | |",
                f"| calls with a typo | | {self.p99_typo:.3f} | | |",
                f"| calls with a context | | {self.p99_context:.3f} | | |",
                "",
                "p99 by prefix length (characters):",
                "",
                f"| length | {lengths} |",
                "| --- |" + " ---: |" * len(self.p99_by_length),
                f"| p99 (ms) | {by_length} |",
                "",
                f"Load average at the end of the run: {self.load:.1f}; a wall-clock p99 on a "
                "shared machine measures when the scheduler gave the core back as much as the "
                "work, the CPU time does not.",
            ]
        )


def _sample_payloads(n: int, seed: int) -> list[dict[str, Any]]:
    from catalog.sample import generate_products

    return [
        {"product_id": p.product_id, "title": p.title, "brand": p.brand, "category": p.category}
        for p in generate_products(n, seed=seed)
    ]


def _file_payloads(path: Path) -> list[dict[str, Any]]:
    from catalog.reader import read_catalog

    return [
        {"product_id": p.product_id, "title": p.title, "brand": p.brand, "category": p.category}
        for batch in read_catalog(path)
        for p in batch.products
    ]


def query_pool(payloads: Sequence[Mapping[str, Any]], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct queries a shopper could type: two or three consecutive title words of
    random products, and the catalog's brands and category names."""
    rng = random.Random(seed)
    pool: dict[str, None] = {}
    for p in payloads:
        for name in (p.get("brand"), str(p.get("category") or "").rsplit(" > ", 1)[-1]):
            if name:
                pool[str(name).lower()] = None
    tries = 0
    while len(pool) < n and tries < 20 * n:
        tries += 1
        words = _WORD.findall(str(rng.choice(payloads).get("title", "")).lower())
        if len(words) >= 2:
            start = rng.randrange(max(1, len(words) - 2))
            pool[" ".join(words[start : start + rng.choice((2, 3))])] = None
    out = list(pool)
    rng.shuffle(out)
    return out


def _zipf(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** ZIPF
    return w / w.sum()


def write_log(
    folder: Path, queries: Sequence[str], products: Sequence[str], searches: int, seed: int = 0
) -> tuple[int, int]:
    """Writes the synthetic log into ``folder`` (Parquet segments); returns (rows, shoppers)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    shoppers = max(100, searches // SEARCHES_PER_SHOPPER)
    weights = _zipf(len(queries))
    qarr = np.array(queries, dtype=object)
    parr = np.array(products, dtype=object)
    rows = 0
    for part, start in enumerate(range(0, searches, SEGMENT_SEARCHES)):
        n = min(SEGMENT_SEARCHES, searches - start)
        ids = np.array([f"q{start + i}" for i in range(n)], dtype=object)
        who = rng.integers(0, shoppers, n)
        anonymous = rng.random(n) < ANONYMOUS_SHARE
        pseudonyms = [None if a else f"p{w:07d}" for w, a in zip(who, anonymous, strict=True)]
        sessions = [f"s{w:07d}" if a else "" for w, a in zip(who, anonymous, strict=True)]
        t = 1_800_000_000.0 + start + np.arange(n, dtype=np.float64)
        chosen = qarr[rng.choice(len(queries), n, p=weights)]
        search = pl.DataFrame(
            {
                "event": ["search"] * n,
                "timestamp": t,
                "search_id": ids,
                "pseudonym": pseudonyms,
                "session": sessions,
                "query": chosen,
                "offset": np.zeros(n, dtype=np.int32),
                "k": np.full(n, 10, dtype=np.int32),
            },
            strict=False,
        )
        clicked = np.flatnonzero(rng.random(n) < CLICK_SHARE)
        clicks = pl.DataFrame(
            {
                "event": ["click"] * len(clicked),
                "timestamp": t[clicked] + 5.0,
                "search_id": ids[clicked],
                "session": [""] * len(clicked),
                "product_id": parr[rng.integers(0, len(products), len(clicked))],
                "position": rng.integers(1, 11, len(clicked)).astype(np.int32),
            },
            strict=False,
        )
        frame = pl.concat([_full(search), _full(clicks)])
        frame.write_parquet(folder / f"{part:05d}-bench.parquet", compression="zstd")
        rows += frame.height
    return rows, shoppers


def _full(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with every column of the log's schema (null where it has none), in order."""
    return df.select(
        [
            pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in SCHEMA.items()
        ]
    )


def _typo(prefix: str, rng: random.Random) -> str:
    head, _, last = prefix.rpartition(" ")
    if len(last) < 4:
        return prefix
    i = rng.randrange(len(last) - 1)
    kind = rng.choice(("swap", "sub", "del", "ins"))
    c = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if kind == "swap":
        last = last[:i] + last[i + 1] + last[i] + last[i + 2 :]
    elif kind == "sub":
        last = last[:i] + c + last[i + 1 :]
    elif kind == "del":
        last = last[:i] + last[i + 1 :]
    else:
        last = last[:i] + c + last[i:]
    return f"{head} {last}" if head else last


def prefixes(queries: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, bool]]:
    """``n`` typed prefixes (1 to 10 characters) of queries drawn by popularity, and whether a
    typo was put in the last word."""
    rng = random.Random(seed)
    weights = _zipf(len(queries))
    picks = np.random.default_rng(seed).choice(len(queries), n, p=weights)
    out = []
    for i in picks:
        text = queries[int(i)][: rng.randint(1, 10)]
        if rng.random() < TYPO_SHARE:
            typo = _typo(text, rng)
            out.append((typo, typo != text))
        else:
            out.append((text, False))
    return out


def _contexts(payloads: Sequence[Mapping[str, Any]], n: int, seed: int) -> list[SuggestContext]:
    rng = random.Random(seed)
    categories = sorted({str(p["category"]) for p in payloads if p.get("category")})
    brands = sorted({str(p["brand"]) for p in payloads if p.get("brand")})
    out = []
    for _ in range(n):
        cats: dict[str, float] = {}
        for path in rng.sample(categories, min(3, len(categories))):
            parts = path.split(" > ")
            share = rng.random()
            for j in range(len(parts)):
                level = " > ".join(parts[: j + 1])
                cats[level] = max(cats.get(level, 0.0), share)
        picked = rng.sample(brands, min(2, len(brands)))
        out.append(SuggestContext(categories=cats, brands={b: rng.random() for b in picked}))
    return out


def read_queries(path: Path) -> list[str]:
    """The distinct queries of a file with a ``query`` column (Parquet, CSV), lowercased, in
    the file's order (``runs/hd/queries.parquet``: Home Depot's shoppers' queries)."""
    df = pl.read_parquet(path) if path.suffix in (".parquet", ".pq") else pl.read_csv(path)
    if "query" not in df.columns:
        from core.errors import ShopsearchError

        raise ShopsearchError(f"{path}: no 'query' column (give a file of queries)")
    seen: dict[str, None] = {}
    for q in df["query"].drop_nulls().to_list():
        q = " ".join(str(q).lower().split())
        if q:
            seen[q] = None
    return list(seen)


def run(
    workdir: Path,
    searches: int = 1_000_000,
    products: int = 20_000,
    catalog: Path | None = None,
    queries_file: Path | None = None,
    calls: int = 20_000,
    min_shoppers: int = 5,
    seed: int = 0,
) -> SuggestBench:
    """Writes the log into ``workdir/log``, builds a Suggester, times ``suggest()``.

    The queries are those of ``queries_file`` (shuffled; their popularity Zipf over that
    order) when given, else made from the catalog (:func:`query_pool`).
    """
    payloads = _file_payloads(catalog) if catalog else _sample_payloads(products, seed)
    if queries_file is not None:
        queries = read_queries(queries_file)
        random.Random(seed).shuffle(queries)
    else:
        queries = query_pool(payloads, max(1000, min(50_000, searches // 20)), seed)
    t0 = time.perf_counter()
    log = Path(workdir) / "log"
    rows, shoppers = write_log(log, queries, [str(p["product_id"]) for p in payloads], searches)
    write_s = time.perf_counter() - t0
    log_mib = sum(f.stat().st_size for f in log.glob("*.parquet")) / 2**20

    t0 = time.perf_counter()
    text = catalog_text(payloads)
    catalog_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    suggester = Suggester.build(log, text, min_shoppers=min_shoppers)
    build_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    mix = prefixes(queries, calls, seed + 1)
    contexts = _contexts(payloads, 64, seed + 2)
    for prefix, _ in mix[:1000]:  # warm-up, untimed
        suggester.suggest(prefix)
    times = np.empty(len(mix))
    cpu = np.empty(len(mix))
    with_context = np.zeros(len(mix), dtype=bool)
    typo = np.array([t for _, t in mix])
    length = np.array([len(p) for p, _ in mix])
    clock, thread = time.perf_counter_ns, time.thread_time_ns
    for i, (prefix, _) in enumerate(mix):
        context = contexts[i % len(contexts)] if i % 2 else None
        with_context[i] = context is not None
        t, c = clock(), thread()
        suggester.suggest(prefix, k=8, context=context)
        times[i] = (clock() - t) / 1e6
        cpu[i] = (thread() - c) / 1e6

    def pct(values: np.ndarray, q: float) -> float:
        return round(float(np.percentile(values, q)), 4) if len(values) else float("nan")

    stats = suggester.stats
    del suggester
    gc.collect()
    tracemalloc.start()  # after the timings: tracing slows every allocation
    before = tracemalloc.get_traced_memory()[0]
    held = Suggester.build(log, text, min_shoppers=min_shoppers)
    gc.collect()
    held_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del held
    return SuggestBench(
        searches=searches,
        shoppers=shoppers,
        products=len(payloads),
        log_rows=rows,
        log_mib=round(log_mib, 2),
        distinct_queries=len(queries),
        entries=stats.entries,
        log_entries=stats.log_entries,
        kept_out=stats.kept_out,
        min_shoppers=min_shoppers,
        write_s=round(write_s, 2),
        catalog_s=round(catalog_s, 2),
        build_s=round(build_s, 2),
        held_mib=round(held_bytes / 2**20, 1),
        rss_peak_mib=round(peak, 1),
        calls=len(mix),
        p50=pct(times, 50),
        p99=pct(times, 99),
        p999=pct(times, 99.9),
        max=round(float(times.max()), 4),
        cpu_p50=pct(cpu, 50),
        cpu_p99=pct(cpu, 99),
        cpu_p999=pct(cpu, 99.9),
        p99_typo=pct(times[typo], 99),
        p99_context=pct(times[with_context], 99),
        p99_by_length={n: pct(times[length == n], 99) for n in range(1, 11)},
        load=round(os.getloadavg()[0], 2),
    )
