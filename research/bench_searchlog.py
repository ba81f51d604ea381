"""``shopsearch bench-searchlog``: what recording each search in the search log costs a search.

The service (FastAPI, in process through its test client, so the whole request path counts)
answers each query twice in turn, once with its search log writer attached and once without
(the writer is detached from the app between the two: one process, one pipeline, one index),
the order alternating, so both sides see the same machine. The report gives the p50/p99 of a
``POST /search`` each way and their difference, and the time of the logging call itself on
the request's thread (building the row and queueing it: what a search waits for; the disk is
written by the writer's own thread), with the rows written and dropped.

    run(index) -> LogCost        # what ``bench-searchlog`` runs
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "search-log-cost"


@dataclass(frozen=True)
class LogCost:
    """p50/p99 (ms) of searches with and without the search log, from one interleaved run."""

    queries: int
    searches: int
    p50_off: float
    p99_off: float
    p50_on: float
    p99_on: float
    call_p50_us: float
    call_p99_us: float
    rows_written: int
    rows_dropped: int
    bytes_per_search: float
    load: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as a markdown table."""
        return "\n".join(
            [
                f"{self.queries} queries x {self.searches // max(self.queries, 1)} rounds, each "
                "searched through the service (`POST /search`, k=10, a shopper id) with the "
                "search log on and off in turn, in one process. Times in ms.",
                "",
                "| | p50 | p99 |",
                "| --- | ---: | ---: |",
                f"| search, log off | {self.p50_off:.2f} | {self.p99_off:.2f} |",
                f"| search, log on | {self.p50_on:.2f} | {self.p99_on:.2f} |",
                f"| difference | {self.p50_on - self.p50_off:+.2f} | "
                f"{self.p99_on - self.p99_off:+.2f} |",
                f"| the logging call on the request's thread (µs) | {self.call_p50_us:.1f} | "
                f"{self.call_p99_us:.1f} |",
                "",
                f"Rows written {self.rows_written:,}, dropped {self.rows_dropped:,} (a full "
                f"queue); {self.bytes_per_search:,.0f} bytes per search in the rotated Parquet "
                f"segments. Load average at the end of the run: {self.load:.1f}.",
            ]
        )


def run(
    index: Path, n_queries: int = 200, rounds: int = 3, seed: int = 0, threads: int | None = None
) -> LogCost:
    """Times ``POST /search`` on the embedded index at ``index`` with the log on and off."""
    from fastapi.testclient import TestClient

    from research.bench_rules import _sample_payloads, catalog_queries
    from shopsearch.service import ServiceSettings, create_app
    from shopsearch.service.routers import search as search_router

    with tempfile.TemporaryDirectory(prefix="shopsearch-bench-log-") as tmp:
        log_dir = Path(tmp) / "log"
        settings = ServiceSettings(
            index=str(index), search_log=str(log_dir), background_load=False, threads=threads
        )
        app = create_app(settings)
        calls: list[float] = []
        real = search_router.log_search

        def timed(*args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            real(*args, **kwargs)
            if app.state.search_log is not None:
                calls.append(time.perf_counter() - t0)

        search_router.log_search = timed  # run_search looks it up in its module
        try:
            with TestClient(app) as client:
                writer = app.state.search_log
                with app.state.runtime.pin() as loaded:
                    sample = _sample_payloads(loaded.pipeline.retriever.collection, 5000, seed)
                queries = catalog_queries(sample, n_queries, seed)
                on: list[float] = []
                off: list[float] = []
                for q in queries[:5]:  # warm-up, untimed
                    client.post("/search", json={"q": q, "user_id": "warm"})
                for r in range(rounds):
                    for i, q in enumerate(queries):
                        body = {"q": q, "k": 10, "user_id": f"shopper{i % 50}"}
                        order = (True, False) if (i + r) % 2 == 0 else (False, True)
                        for logged in order:
                            app.state.search_log = writer if logged else None
                            t0 = time.perf_counter()
                            got = client.post("/search", json=body)
                            took = time.perf_counter() - t0
                            got.raise_for_status()
                            (on if logged else off).append(took)
                app.state.search_log = writer
            # the client's exit closed the writer: flushed and rotated to Parquet
            size = sum(p.stat().st_size for p in log_dir.glob("*.parquet"))
        finally:
            search_router.log_search = real
        ms = 1000.0
        return LogCost(
            queries=len(queries),
            searches=len(on),
            p50_off=float(np.percentile(off, 50) * ms),
            p99_off=float(np.percentile(off, 99) * ms),
            p50_on=float(np.percentile(on, 50) * ms),
            p99_on=float(np.percentile(on, 99) * ms),
            call_p50_us=float(np.percentile(calls, 50) * 1e6),
            call_p99_us=float(np.percentile(calls, 99) * 1e6),
            rows_written=writer.counts["written"],
            rows_dropped=writer.counts["dropped"],
            bytes_per_search=size / max(writer.counts["written"], 1),
            load=os.getloadavg()[0],
        )
