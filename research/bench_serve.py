"""Load benchmark of the HTTP service: ``shopsearch serve`` on loopback, driven by concurrent
clients, against the same searches in-process.

    python research/bench_serve.py --workdir runs/bench-serve [--n 2000] [--seconds 10]
        [--concurrency 1,4,16] [--workers 1] [--index DIR] [--reranker DIR]

It writes a sample catalog and indexes it with the packaged model (unless ``--index``), starts
``shopsearch serve`` on 127.0.0.1 (never another address), warms it up, then for
each concurrency level runs that many client threads (one httpx client each) for a fixed time,
and reports requests/s, p50/p95/p99 latency and errors. Last, it times the same searches
through ``SearchPipeline.search`` in this process (one at a time): the service's overhead is
the difference of the p50s at concurrency 1. A last level runs the most clients while
``shopsearch index`` rebuilds the served index and a thread posts events (unless
``--no-change``, or with ``--index``, whose catalog is not known). Results: ``WORKDIR/bench_serve.json`` and a table
on stdout.

Clients and server share the machine: on a small one the clients' own CPU use lowers the
figures at high concurrency. Bounded: at most 120 s per level, 64 clients, 5 levels.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAX_SECONDS = 120.0
MAX_CLIENTS = 64
MAX_LEVELS = 5
WARMUP = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """This environment, with the repository importable (the commands run from a checkout)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    arr = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
    }


def build_index(workdir: Path, n: int, seed: int) -> Path:
    """A sample catalog of ``n`` products indexed with the packaged model (reused if there)."""
    from catalog.sample import write_sample_catalog
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    index = workdir / f"index-{n}-{seed}"
    if (index / "CURRENT").exists():
        return index
    catalog = write_sample_catalog(workdir / f"catalog-{n}-{seed}.parquet", n=n, seed=seed)
    index_catalog(catalog, IndexLocation(path=index), progress=True)
    return index


def start_server(
    index: Path,
    port: int,
    workers: int,
    reranker: Path | None,
    log: Path,
    profiles: Path | None = None,
    extra: list[str] | None = None,
) -> subprocess.Popen:
    env = _env()
    for name in ("SHOPSEARCH_API_KEY", "SHOPSEARCH_ADMIN_KEY", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "shopsearch.cli", "serve", "--index", str(index)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    cmd += ["--log-level", "WARNING"]  # one line per request would cost the server time
    if reranker is not None:
        cmd += ["--reranker", str(reranker)]
    if profiles is not None:
        cmd += ["--profiles", str(profiles)]
    cmd += extra or []
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def drive(url: str, queries: list[str], clients: int, seconds: float, k: int) -> dict[str, Any]:
    """``clients`` threads searching for ``seconds``; latency of each request, errors counted."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            j = i
            start.wait()
            while time.perf_counter() < stop_at[0]:
                q = queries[j % len(queries)]
                j += clients
                t0 = time.perf_counter()
                try:
                    r = http.get("/search", params={"q": q, "k": k})
                    ok = r.status_code == 200
                    if not ok and not first_error:
                        first_error.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    if not first_error:
                        first_error.append(repr(exc)[:200])
                if ok:
                    latencies[i].append((time.perf_counter() - t0) * 1000)
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.perf_counter() - t0
    ms = [x for per in latencies for x in per]
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(ms),
        "errors": sum(errors),
        "first_error": first_error[0] if first_error else None,
        "requests_per_s": round(len(ms) / elapsed, 2),
        **_percentiles(ms),
    }


def under_change(
    url: str,
    queries: list[str],
    clients: int,
    seconds: float,
    k: int,
    index: Path,
    catalog: Path,
    product_ids: list[str],
) -> dict[str, Any]:
    """``drive`` while ``shopsearch index`` rebuilds the served index and events are posted.

    The rebuild is a full build of the same catalog (a new version, promoted while searches
    run; the service picks it up without a restart); a poster thread sends batches of 20 view
    and click events of 50 shoppers to ``/events`` until the level ends.
    """
    before = (index / "CURRENT").read_text().strip()
    rebuild = subprocess.Popen(
        [sys.executable, "-m", "shopsearch.cli", "index", str(catalog), "--index", str(index)]
        + ["--no-progress", "--rejects", str(index.parent / "rejects.csv")],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    posted = {"batches": 0, "accepted": 0, "rejected": 0, "http_errors": 0}
    stop = threading.Event()

    def poster() -> None:
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                now = time.time()
                events = [
                    {
                        "user_id": f"bench-shopper-{int(rng.integers(50))}",
                        "timestamp": now,
                        "session_id": "bench",
                        "event": "view" if i % 2 else "click",
                        "product_id": product_ids[int(rng.integers(len(product_ids)))],
                        "position": 1 + i % 10,
                    }
                    for i in range(20)
                ]
                try:
                    r = http.post("/events", json={"events": events})
                    if r.status_code == 200:
                        body = r.json()
                        posted["accepted"] += body["accepted"]
                        posted["rejected"] += len(body["rejected"])
                    else:
                        posted["http_errors"] += 1
                except httpx.HTTPError:
                    posted["http_errors"] += 1
                posted["batches"] += 1
                stop.wait(0.1)

    thread = threading.Thread(target=poster, daemon=True)
    thread.start()
    try:
        result = drive(url, queries, clients, seconds, k)
    finally:
        stop.set()
        thread.join(60)
    try:
        _, err = rebuild.communicate(timeout=MAX_SECONDS * 5)
    except subprocess.TimeoutExpired:
        rebuild.kill()
        _, err = rebuild.communicate()
    after = (index / "CURRENT").read_text().strip()
    return {
        **result,
        "rebuild_exit": rebuild.returncode,
        "rebuild_error": err.strip().splitlines()[-1]
        if rebuild.returncode and err.strip()
        else None,
        "rebuild_promoted": after != before,
        "events": posted,
    }


def in_process(
    index: Path,
    reranker: Path | None,
    queries: list[str],
    seconds: float,
    k: int,
    workers: int = 1,
):
    """The same searches through ``SearchPipeline.search``, one at a time, for ``seconds``.

    Runs as many inference threads as one of ``workers`` service workers does (``serve``
    splits the cores between its workers), so the difference is the service's own cost.
    """
    from inference.backend import apply_torch_threads, worker_threads
    from rerank.pipeline import SearchPipeline
    from shopsearch.cli.options import THREADS_ENV

    # as serve: its --threads (this variable) when given, else the cores split between workers
    threads = int(os.environ.get(THREADS_ENV) or worker_threads(workers))
    apply_torch_threads(threads)
    with SearchPipeline.open(index, reranker=reranker, threads=threads) as pipe:
        for q in queries[:WARMUP]:
            pipe.search(q, k=k, explain=False)
        ms = []
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            pipe.search(queries[i % len(queries)], k=k, explain=False)
            ms.append((time.perf_counter() - t0) * 1000)
            i += 1
    return {
        "threads": threads,
        "requests": len(ms),
        "requests_per_s": round(len(ms) / seconds, 2),
        **_percentiles(ms),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, required=True, help="Where the catalog, index, log and results go."
    )
    parser.add_argument(
        "--index", type=Path, default=None, help="An existing index (default: build a sample one)."
    )
    parser.add_argument("--n", type=int, default=2000, help="Sample catalog size (default 2000).")
    parser.add_argument("--seed", type=int, default=7, help="Sample catalog seed.")
    parser.add_argument(
        "--reranker", type=Path, default=None, help="Cross-encoder folder to serve with."
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1).")
    parser.add_argument("--concurrency", default="1,4,16", help="Client counts, comma-separated.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Time per level (default 10).")
    parser.add_argument("-k", type=int, default=10, help="Results per search.")
    parser.add_argument(
        "--no-change",
        action="store_true",
        help="Skip the last level (the most clients while the index is rebuilt and events posted).",
    )
    args = parser.parse_args(argv)

    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or len(levels) > MAX_LEVELS or not all(1 <= c <= MAX_CLIENTS for c in levels):
        parser.error(f"--concurrency: 1 to {MAX_LEVELS} levels of 1..{MAX_CLIENTS} clients")
    if not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in 1..{MAX_SECONDS:.0f}")
    from catalog.sample import SAMPLE_QUERIES

    queries = list(SAMPLE_QUERIES)
    args.workdir.mkdir(parents=True, exist_ok=True)
    index = args.index or build_index(args.workdir, args.n, args.seed)
    catalog = args.workdir / f"catalog-{args.n}-{args.seed}.parquet"
    change = not args.no_change and args.index is None  # the rebuild needs the sample catalog
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = args.workdir / "serve.log"
    profiles = args.workdir / "profiles" if change else None
    proc = start_server(index, port, args.workers, args.reranker, log, profiles)
    try:
        wait_ready(url, proc, log)
        with httpx.Client(base_url=url, timeout=60) as http:  # warm-up, not timed
            for q in queries[:WARMUP]:
                http.get("/search", params={"q": q, "k": args.k})
        results = []
        for clients in levels:
            results.append(drive(url, queries, clients, args.seconds, args.k))
            print(json.dumps(results[-1]), flush=True)
        changing = None
        if change:
            import polars as pl

            ids = pl.read_parquet(catalog, columns=["product_id"])["product_id"].to_list()
            seconds = max(args.seconds, 30.0)  # long enough for the rebuild to be promoted
            changing = under_change(url, queries, max(levels), seconds, args.k, index, catalog, ids)
            print(json.dumps(changing), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    from research.bench_speed import machine_description

    direct = in_process(index, args.reranker, queries, args.seconds, args.k, args.workers)
    one = next((r for r in results if r["clients"] == 1), None)
    report = {
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d"),
        "index": str(index),
        "reranker": str(args.reranker) if args.reranker else None,
        "workers": args.workers,
        "k": args.k,
        "seconds_per_level": args.seconds,
        "http": results,
        "under_change": changing,
        "in_process": direct,
        "overhead_p50_ms": round(one["p50_ms"] - direct["p50_ms"], 2) if one else None,
    }
    (args.workdir / "bench_serve.json").write_text(json.dumps(report, indent=2))
    print()
    print("| clients | requests/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p95_ms']} "
            f"| {r['p99_ms']} | {r['errors']} |"
        )
    if changing is not None:
        c = changing
        print(
            f"| {c['clients']}, during a rebuild and event posting | {c['requests_per_s']} "
            f"| {c['p50_ms']} | {c['p95_ms']} | {c['p99_ms']} | {c['errors']} |"
        )
    print(
        f"| in-process | {direct['requests_per_s']} | {direct['p50_ms']} | {direct['p95_ms']} "
        f"| {direct['p99_ms']} | 0 |"
    )
    if changing is not None:
        ev = changing["events"]
        print(
            f"\nrebuild promoted during the level: {changing['rebuild_promoted']} "
            f"(exit {changing['rebuild_exit']}); events accepted {ev['accepted']}, "
            f"rejected {ev['rejected']}, failed batches {ev['http_errors']}"
        )
    if report["overhead_p50_ms"] is not None:
        print(f"\nservice overhead at 1 client (p50): {report['overhead_p50_ms']} ms")
    return report


if __name__ == "__main__":
    main()
