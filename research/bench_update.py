"""Live-update benchmark: how fast price/stock updates land, and what they cost searches.

    shopsearch bench-update --workdir runs/bench-update [--n 55000] [--batch 1000 --batch 5000]

On the sample catalog, indexed once in ``WORKDIR`` (the packaged MiniLM unless ``--model``;
``--from-index`` copies an index of that catalog instead of building one), each run works on a
fresh copy of it:

1. Throughput: ``apply_updates`` alone, for each batch size, batches of random products with a
   new price and stock each, for at least ``--seconds`` per size: products acknowledged per
   second (validation, the new build, its seal and promotion included) and each batch's
   acknowledgement time.
2. Searches while updates stream: the same queries (half of them with an in-stock and price
   filter) at ``--qps`` a second in this process for ``--seconds``, first alone, then while a
   separate updater process applies batches of ``--stream-batch`` back to back (what a
   ``shopsearch update`` beside a running service does). The searcher is a ``Retriever`` as the
   service holds it (refresh every second): p50/p99/max search latency in both phases and the
   p99 ratio, and the visibility lag (an update's acknowledgement to the first search that ran
   on its build).

Writes ``WORKDIR/updates.json`` and ``WORKDIR/updates.md``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Batch sizes of the throughput phase.
DEFAULT_BATCHES = (1000, 5000, 20000)

_UPDATER = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    from indexer.update import apply_updates, update_records
    from retrieval.store import IndexLocation

    loc, batch, stop = IndexLocation(path=Path(sys.argv[1])), int(sys.argv[3]), Path(sys.argv[4])
    ids = Path(sys.argv[2]).read_text().split()
    rng = random.Random(7)
    while not stop.exists():
        rows = [{"product_id": p, "price": round(rng.uniform(1, 500), 2), "in_stock": rng.random() < 0.8}
                for p in rng.sample(ids, batch)]
        s = apply_updates(loc, update_records(rows))
        print(json.dumps({"ack": time.time(), "build": s.build_id, "n": s.products, "s": s.seconds}), flush=True)
    """
)


@dataclass
class BatchRun:
    """Throughput of one batch size."""

    batch: int
    batches: int
    products: int
    seconds: float
    ack_p50_s: float
    ack_max_s: float

    @property
    def products_per_s(self) -> float:
        return self.products / self.seconds if self.seconds else 0.0


@dataclass
class SearchPhase:
    """Search latency of one phase (ms)."""

    name: str
    searches: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class UpdateBenchReport:
    """What ``bench-update`` measured."""

    n: int
    model: str
    machine: str
    batches: list[BatchRun] = field(default_factory=list)
    phases: list[SearchPhase] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    qps: float = 0.0
    stream_batch: int = 0
    stream_products_per_s: float = 0.0
    stream_builds: int = 0
    lag_p50_s: float | None = None
    lag_max_s: float | None = None

    @property
    def p99_ratio(self) -> float | None:
        if len(self.phases) < 2 or not self.phases[0].p99_ms:
            return None
        return self.phases[1].p99_ms / self.phases[0].p99_ms

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for run, d in zip(self.batches, out["batches"], strict=True):
            d["products_per_s"] = round(run.products_per_s, 1)
        out["p99_ratio"] = None if self.p99_ratio is None else round(self.p99_ratio, 2)
        return out

    def markdown(self) -> str:
        lines = [
            f"Sample catalog of {self.n:,} products, embedded index, model {self.model}; "
            f"{self.machine}; load average {self.load[0]:.1f} at the start, "
            f"{self.load[1]:.1f} at the end (other processes share the 2 cores).",
            "",
            "Throughput (`apply_updates` alone; a batch = one new build, validated, sealed, "
            "promoted):",
            "",
            "| batch | batches | products/s | ack p50 (s) | ack max (s) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in self.batches:
            lines.append(
                f"| {r.batch:,} | {r.batches} | {r.products_per_s:,.0f} | {r.ack_p50_s:.2f} | "
                f"{r.ack_max_s:.2f} |"
            )
        lines += [
            "",
            f"Searches ({'back to back' if not self.qps else f'{self.qps:g} a second'}) "
            f"while an updater process streams batches of {self.stream_batch:,} "
            f"({self.stream_products_per_s:,.0f} products/s, {self.stream_builds} builds "
            "promoted during the phase), against the same searches alone:",
            "",
            "| phase | searches | p50 (ms) | p99 (ms) | max (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in self.phases:
            lines.append(
                f"| {p.name} | {p.searches} | {p.p50_ms:.1f} | {p.p99_ms:.1f} | {p.max_ms:.1f} |"
            )
        ratio = "n/a" if self.p99_ratio is None else f"{self.p99_ratio:.2f}"
        lag = (
            "no build was seen"
            if self.lag_p50_s is None
            else f"{self.lag_p50_s:.2f} s p50, {self.lag_max_s:.2f} s max"
        )
        lines += [
            "",
            f"p99 with updates / without: **{ratio}**. Visibility lag (acknowledged -> first "
            f"search on its build): {lag}.",
        ]
        return "\n".join(lines) + "\n"


def tiny_model(folder: Path, catalog: Path, dim: int = 384) -> Path:
    """A one-layer BERT bi-encoder of ``dim`` dimensions whose vocabulary covers the catalog
    (built from a config: no download). Its vectors are as large as MiniLM's, so what an
    update copies, seals and reloads is what it would be; embedding is much faster."""
    import re

    import polars as pl
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = folder / "st"
    if (out / "modules.json").exists():
        return out
    frame = pl.read_parquet(catalog, columns=["title", "brand", "category"])
    words: set[str] = set()
    for row in frame.iter_rows():
        for text in row:
            words.update(re.findall(r"[a-z]+|\d+", str(text or "").lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]
    hf = folder / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=max(1, dim // 64),
        intermediate_size=dim,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    transformer = models.Transformer(str(hf), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(
        str(out)
    )
    return out


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _queries(catalog: Path, count: int, seed: int) -> list[tuple[str, dict | None]]:
    import polars as pl

    from catalog.sample import SAMPLE_QUERIES

    rng = random.Random(seed)
    titles = pl.read_parquet(catalog, columns=["title"])["title"].to_list()
    texts = list(SAMPLE_QUERIES) + [
        " ".join(t.split()[1:4]) for t in rng.sample(titles, max(0, count - len(SAMPLE_QUERIES)))
    ]
    return [
        (q, {"in_stock": True, "max_price": 250.0} if i % 2 else None)
        for i, q in enumerate(texts[:count])
    ]


def _search_phase(
    retriever, queries, seconds: float, seen: dict[str, float] | None, qps: float
) -> list[float]:
    """Searches at ``qps`` a second (0: back to back) for ``seconds``; latencies in ms (and
    when each build was first used)."""
    out: list[float] = []
    start = time.monotonic()
    end = start + seconds
    i = 0
    while time.monotonic() < end:
        if qps > 0:
            time.sleep(max(0.0, start + i / qps - time.monotonic()))
        q, filters = queries[i % len(queries)]
        t0 = time.perf_counter()
        retriever.search(q, k=10, filters=filters)
        out.append((time.perf_counter() - t0) * 1000)
        if seen is not None:
            seen.setdefault(retriever.manifest["build_id"], time.time())
        i += 1
    return out


def run_update_benchmark(
    workdir: Path,
    *,
    n: int = 55_000,
    seed: int = 0,
    batches: Sequence[int] = DEFAULT_BATCHES,
    stream_batch: int = 5000,
    seconds: float = 20.0,
    queries: int = 200,
    model: str | None = None,
    from_index: Path | None = None,
    threads: int = 1,
    tiny: bool = False,
    qps: float = 10.0,
) -> UpdateBenchReport:
    """Runs both phases; writes ``updates.json`` and ``updates.md`` into ``workdir``.

    ``tiny``: a one-layer 384-dimension model built here (:func:`tiny_model`) in place of
    ``model``: what updates cost does not depend on the model, only on the vectors' size.
    """
    from catalog.sample import write_sample_catalog
    from indexer.build import index_catalog
    from indexer.update import apply_updates, update_records
    from research.bench_speed import machine_description
    from retrieval.retriever import Retriever
    from retrieval.store import IndexLocation
    from retrieval.store.edge import sparse_copy

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalog = workdir / f"catalog-{n}-{seed}.parquet"
    if not catalog.exists():
        write_sample_catalog(catalog, n=n, seed=seed)
    if tiny:
        model = str(tiny_model(workdir / f"tiny-{n}-{seed}", catalog))
    base = workdir / f"index-{n}-{seed}{'-tiny' if tiny else ''}"
    if not (base / "CURRENT").exists():
        if from_index is not None:
            shutil.copytree(from_index, base, copy_function=sparse_copy, dirs_exist_ok=True)
        else:
            index_catalog(catalog, IndexLocation(path=base), model=model, progress=False)
    scratch = workdir / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    index = scratch / "index"
    shutil.copytree(base, index, copy_function=sparse_copy)
    loc = IndexLocation(path=index)
    import polars as pl

    ids = pl.read_parquet(catalog, columns=["product_id"])["product_id"].to_list()
    rng = random.Random(seed)

    def rows(size: int) -> list[dict[str, Any]]:
        return [
            {
                "product_id": p,
                "price": round(rng.uniform(1, 500), 2),
                "in_stock": rng.random() < 0.8,
            }
            for p in rng.sample(ids, min(size, len(ids)))
        ]

    load_start = os.getloadavg()[0]
    retriever = Retriever.open(index, model=model, auto_refresh_s=1.0, threads=threads)
    report = UpdateBenchReport(
        n=n,
        model="a one-layer 384-d BERT (--tiny)" if tiny else retriever.manifest["model"]["name"],
        machine=machine_description(),
        stream_batch=stream_batch,
        qps=qps,
    )
    try:
        for size in batches:
            acks: list[float] = []
            done = 0
            t0 = time.perf_counter()
            while len(acks) < 3 or time.perf_counter() - t0 < seconds:
                summary = apply_updates(loc, update_records(rows(size)))
                acks.append(summary.seconds)
                done += summary.products
            report.batches.append(
                BatchRun(
                    size, len(acks), done, time.perf_counter() - t0, _pct(acks, 0.5), max(acks)
                )
            )
        qs = _queries(catalog, queries, seed)
        retriever.refresh()
        _search_phase(retriever, qs, min(3.0, seconds), None, 0)  # warm up
        alone = _search_phase(retriever, qs, seconds, None, qps)
        stop = scratch / "stop"
        script = scratch / "updater.py"
        script.write_text(_UPDATER)
        (scratch / "ids.txt").write_text("\n".join(ids))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(index),
                str(scratch / "ids.txt"),
                str(stream_batch),
                str(stop),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        seen: dict[str, float] = {}
        try:
            first = proc.stdout.readline() if proc.stdout is not None else ""  # started, warm
            if not first:
                raise RuntimeError("the updater process died before its first update")
            t0 = time.time()
            streaming = _search_phase(retriever, qs, seconds, seen, qps)
            t1 = time.time()
        finally:
            stop.touch()
            out, _ = proc.communicate(timeout=600)
        acked = [json.loads(line) for line in [first, *out.splitlines()] if line.startswith("{")]
        during = [a for a in acked if t0 <= a["ack"] <= t1]
        report.stream_builds = len(during)
        report.stream_products_per_s = sum(a["n"] for a in during) / (t1 - t0)
        lags = [seen[a["build"]] - a["ack"] for a in during if a["build"] in seen]
        if lags:
            report.lag_p50_s, report.lag_max_s = _pct(lags, 0.5), max(lags)
        for name, lat in (("searches alone", alone), ("while updates stream", streaming)):
            report.phases.append(
                SearchPhase(name, len(lat), _pct(lat, 0.5), _pct(lat, 0.99), max(lat))
            )
    finally:
        retriever.close()
        shutil.rmtree(scratch, ignore_errors=True)
    report.load = (load_start, os.getloadavg()[0])
    (workdir / "updates.json").write_text(json.dumps(report.as_dict(), indent=2))
    (workdir / "updates.md").write_text(report.markdown())
    return report
