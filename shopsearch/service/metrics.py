"""Prometheus metrics of the search service (prometheus-client, the reference Python client).

With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` names a directory they share (the
``serve`` command sets it); each worker writes its values there and ``/metrics`` sums them, so
a scrape sees the whole service whichever worker answers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Request latency buckets (seconds): a few ms (health) to several s (reranking on a CPU).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Pipeline stages observed per search (``Hits.stage_ms`` keys).
STAGES = ("profile", "retrieve", "rerank", "personal")


class Metrics:
    """The service's metrics, on a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shopsearch_http_requests",
            "HTTP requests answered, by endpoint (route template), method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "shopsearch_http_errors",
            "HTTP requests answered with an error: kind is client (4xx) or server (5xx).",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shopsearch_http_request_duration_seconds",
            "Time to answer a request, by endpoint (route template).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "shopsearch_search_stage_duration_seconds",
            "Time per search pipeline stage: profile, retrieve (query encoding + store "
            "search), rerank (cross-encoder + blend), personal (features + fusion).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "shopsearch_events",
            "Behaviour events received: added, duplicate, forgotten (their shopper was erased: "
            "not stored) or rejected (invalid).",
            ["outcome"],
            registry=self.registry,
        )
        self.interleaved = Counter(
            "shopsearch_interleaved_searches",
            "Searches served as a team-draft interleaving of rankers A and B, by experiment.",
            ["experiment"],
            registry=self.registry,
        )
        self.search_log = Counter(
            "shopsearch_search_log_rows",
            "Rows for the search log (served searches, posted events), by outcome: written "
            "(flushed to disk), dropped (the writer's queue was full: the disk is slower than "
            "the traffic), failed (the folder could not be written: disk full, permissions) or "
            "forgotten (the shopper was erased: never written).",
            ["outcome"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "shopsearch_model_reloads",
            "Model reloads, by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "server" if status >= 500 else "client").inc()

    def observe_stages(self, stage_ms: dict[str, float]) -> None:
        for name in STAGES:
            if name in stage_ms:
                self.stage.labels(name).observe(stage_ms[name] / 1000.0)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type (all workers' values when multiprocess)."""
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
