"""``shopsearch bench-rules``: what a set of merchandising rules costs per search.

A set of ``n`` synthetic rules (default 1,000: exact and contains rules on catalog words, pins
and hides of catalog products, boosts and buries by brand, and two rules for any query) is
written to a temporary rules directory (never the index's own), and each query is searched
with the rules and without (``rules=False``), interleaved in one run, so both sides see the
same machine. The report gives p50/p99 of the whole search each way, their difference, and
the pipeline's own time in the rules (``stage_ms["rules"]``: matching, hide, boost, pins),
which is the cost the rules add without the noise of two searches. Redirects are left out:
they change what is searched, so the two sides would not search the same query.

    rules_cost(pipeline, queries, rules) -> RulesCost      # for another benchmark to call
    run(index) -> RulesCost                                 # what ``bench-rules`` runs
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerank.defaults import DEFAULT_RERANK_DEPTH
from rerank.rules import Rule, RuleStore

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "rules-cost"
_WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True)
class RulesCost:
    """p50/p99 (ms) of searches with and without the rules, from one interleaved run."""

    rules: int
    queries: int
    searches: int
    fired_share: float
    p50_without: float
    p99_without: float
    p50_with: float
    p99_with: float
    stage_p50: float
    stage_p99: float
    match_p99_us: float
    replay_wall_p50: float
    replay_wall_p99: float
    replay_cpu_p50: float
    replay_cpu_p99: float
    load: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as a markdown table."""
        lines = [
            f"{self.rules:,} rules, {self.queries} queries x {self.searches // self.queries} "
            f"rounds, each searched with and without the rules in turn; "
            f"{self.fired_share:.0%} of the searches had a rule fire (besides the two for any "
            "query). Times in ms.",
            "",
            "| | p50 | p99 |",
            "| --- | ---: | ---: |",
            f"| search without rules | {self.p50_without:.2f} | {self.p99_without:.2f} |",
            f"| search with {self.rules:,} rules | {self.p50_with:.2f} | {self.p99_with:.2f} |",
            f"| difference | {self.p50_with - self.p50_without:+.2f} | "
            f"{self.p99_with - self.p99_without:+.2f} |",
            f'| the rules stage itself (`stage_ms["rules"]`) | {self.stage_p50:.3f} | '
            f"{self.stage_p99:.3f} |",
            f"| the rules' work replayed on each ranking, wall clock | "
            f"{self.replay_wall_p50:.3f} | {self.replay_wall_p99:.3f} |",
            f"| the same, CPU time of the thread | {self.replay_cpu_p50:.3f} | "
            f"{self.replay_cpu_p99:.3f} |",
            "",
            f"Finding the rules of a query in the book (indexed: a dict per exact query, a word "
            f"index for contains): p99 {self.match_p99_us:.1f} µs. Load average at the end of "
            f"the run: {self.load:.1f} on 2 cores shared with other jobs, so a wall-clock p99 "
            "measures when the scheduler gave the core back as much as the work; the CPU time "
            "does not.",
        ]
        return "\n".join(lines)


def catalog_queries(payloads: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[str]:
    """``n`` queries a shopper could type: two or three title words of random products."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        words = _WORD.findall(str(rng.choice(payloads).get("title", "")).lower())
        if len(words) >= 2:
            start = rng.randrange(max(1, len(words) - 2))
            out.append(" ".join(words[start : start + rng.choice((2, 3))]))
    return out


def synthetic_rules(
    queries: Sequence[str],
    product_ids: Sequence[str],
    brands: Sequence[str],
    n: int = 1000,
    seed: int = 0,
) -> list[Rule]:
    """``n`` rules like a shop's: half on the measured queries (so they fire), half on other
    text; 60% exact, 40% contains; pins, hides, boosts and buries; two for any query."""
    rng = random.Random(seed)
    vocabulary = sorted({w for q in queries for w in q.split()})
    rules = [
        Rule("any-bury", "bury", "any", filter="in_stock = false", percent=10),
        Rule("any-hide", "hide", "any", products=(rng.choice(product_ids),)),
    ]
    for i in range(n - len(rules)):
        text = rng.choice(queries) if i % 2 == 0 else f"{rng.choice(vocabulary)} other{i}"
        if i % 5 < 3:
            match = "exact"
        else:
            match = "contains"
            text = " ".join(text.split()[:2])
        action = ("pin", "hide", "boost", "bury")[i % 4]
        fields: dict[str, Any] = {}
        if action == "pin":
            fields = {"products": (rng.choice(product_ids),), "position": rng.randint(1, 20)}
        elif action == "hide":
            fields = {"products": tuple(rng.sample(list(product_ids), 2))}
        elif brands:
            fields = {"filter": f'brand = "{rng.choice(brands)}"', "percent": 20}
        else:  # a catalog without brands (Home Depot's)
            fields = {"filter": f"price < {rng.choice((10, 20, 50, 100))}", "percent": 20}
        rules.append(Rule(f"b{i}", action, match, text, **fields))
    return rules


def rules_cost(
    pipeline: Any,
    queries: Sequence[str],
    rules: Sequence[Rule],
    rounds: int = 3,
    k: int = 10,
    rules_dir: str | Path | None = None,
) -> RulesCost:
    """Times ``pipeline.search`` with ``rules`` and without, interleaved.

    Args:
        pipeline: A ``SearchPipeline``; its ``rules`` are replaced for the run (and restored).
        queries: What to search.
        rules: The rule set (written to ``rules_dir`` or a temporary directory).
        rounds: Passes over the queries (the first, untimed, warms up).
        k: Results per search.
        rules_dir: Where to write ``rules.json``; None: a temporary directory.
    """
    with tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp:
        store = RuleStore(rules_dir or tmp)
        store.file.update(lambda _: [r.to_dict() for r in rules])
        saved, pipeline.rules = pipeline.rules, store
        try:
            book = store.book()
            assert len(book) == len(rules)
            for q in queries:  # warm: caches, the rule filters bound to the schema
                pipeline.search(q, k=k)
                pipeline.search(q, k=k, rules=False)
            without: list[float] = []
            with_: list[float] = []
            stage: list[float] = []
            fired = 0
            for r in range(rounds):
                for i, q in enumerate(queries):
                    order = (True, False) if (i + r) % 2 == 0 else (False, True)
                    for use in order:
                        t0 = time.perf_counter()
                        hits = pipeline.search(q, k=k, rules=use)
                        took = (time.perf_counter() - t0) * 1000
                        if use:
                            with_.append(took)
                            stage.append(hits.stage_ms["rules"])
                            fired += any(not x.startswith("any-") for x in hits.rules)
                        else:
                            without.append(took)
            now = store.clock()
            match_us = []
            for q in queries:
                t0 = time.perf_counter()
                book.matching([q], now)
                match_us.append((time.perf_counter() - t0) * 1e6)
            replay_wall, replay_cpu = _replay(pipeline, book, queries, rounds, k, now)
        finally:
            pipeline.rules = saved

    def pct(xs: list[float], p: float) -> float:
        return float(np.percentile(np.asarray(xs), p))

    return RulesCost(
        rules=len(rules),
        queries=len(queries),
        searches=len(with_),
        fired_share=fired / max(1, len(with_)),
        p50_without=pct(without, 50),
        p99_without=pct(without, 99),
        p50_with=pct(with_, 50),
        p99_with=pct(with_, 99),
        stage_p50=pct(stage, 50),
        stage_p99=pct(stage, 99),
        match_p99_us=pct(match_us, 99),
        replay_wall_p50=pct(replay_wall, 50),
        replay_wall_p99=pct(replay_wall, 99),
        replay_cpu_p50=pct(replay_cpu, 50),
        replay_cpu_p99=pct(replay_cpu, 99),
        load=os.getloadavg()[0],
    )


def _replay(
    pipeline: Any, book: Any, queries: Sequence[str], rounds: int, k: int, now: Any
) -> tuple[list[float], list[float]]:
    """The rules' own work on each query's ranking (what ``search`` does with them: match,
    hide, boost/bury, pin), timed alone: wall clock and this thread's CPU time (ms), the
    latter free of the time other processes take the core away."""
    from retrieval.filters import Filters

    schema = pipeline.retrieval_schema if hasattr(pipeline, "retrieval_schema") else None
    schema = schema or pipeline.retriever.schema
    rankings = []
    for q in queries:
        depth = max(DEFAULT_RERANK_DEPTH, k)  # every candidate, as search ranks them
        hits = pipeline.search(q, k=depth, rerank_depth=depth, rules=False)
        rankings.append((q, list(hits), hits.corrected))
    none = Filters()
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for q, top, corrected in rankings:
            t0, c0 = time.perf_counter(), time.thread_time()
            redirect = book.redirect(q, now)
            plan = book.plan((q, corrected), now, redirect)
            if plan:
                ranked = plan.boost(plan.hide(top), book.matcher(schema))
                plan.pin(ranked, pipeline.retriever.payloads, lambda p: none.matches(p, schema))
            cpu.append((time.thread_time() - c0) * 1000)
            wall.append((time.perf_counter() - t0) * 1000)
    return wall, cpu


def run(
    index: Path,
    n_rules: int = 1000,
    n_queries: int = 200,
    rounds: int = 3,
    seed: int = 0,
    threads: int | None = None,
) -> RulesCost:
    """:func:`rules_cost` on an embedded index with :func:`synthetic_rules`."""
    from rerank.pipeline import SearchPipeline

    with SearchPipeline.open(index, threads=threads) as pipeline:
        pipeline.rules = None  # the index's own rules play no part
        collection = pipeline.retriever.collection
        sample = _sample_payloads(collection, 5000, seed)
        queries = catalog_queries(sample, n_queries, seed)
        ids = [p["product_id"] for p in sample]
        brands = sorted({str(p["brand"]) for p in sample if p.get("brand")})
        rules = synthetic_rules(queries, ids, brands, n_rules, seed)
        return rules_cost(pipeline, queries, rules, rounds=rounds)


def _sample_payloads(collection: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random stored payloads (product id, title, brand) of the index."""
    from retrieval.store import PAYLOAD_PRODUCT_ID

    rows = [
        {"product_id": p.get(PAYLOAD_PRODUCT_ID), "title": p.get("title"), "brand": p.get("brand")}
        for p in collection.scroll_payloads([PAYLOAD_PRODUCT_ID, "title", "brand"])
    ]
    rng = random.Random(seed)
    return rng.sample(rows, min(n, len(rows)))
