"""Fault benchmark: what an index and a profile store survive, counted.

    shopsearch bench-faults --workdir runs/bench-faults [--n 300] [--seed 0] [--model DIR]

Eight scenarios on a small sample catalog, each reported as counts in ``WORKDIR/faults.json``
and ``WORKDIR/faults.md``:

1. ``kill_build``: ``shopsearch index`` (a subprocess) on an existing index, killed with SIGKILL
   at a random moment after its staging folder appears; after each kill the index must still
   open (its seal verified) and answer the old build's results. One complete build then runs:
   no staging leftover may remain under ``builds/``.
2. ``promotions``: reader processes search in a loop while this process promotes new builds.
3. ``two_writers``: a second embedded writer while another holds the lock must fail with one
   line and exit status 2, leaving the index as it was.
4. ``damage``: one file of a copy of the index truncated or garbled at a time (segment files,
   manifest, seal, ``CURRENT``), then opened and searched in a worker process; each case is
   *detected* (a one-line ``ShopsearchError``), *silent* (results that differ, or none) or a
   *crash* (another exception, or the worker process dying).
5. ``kill_ingest``: ``shopsearch events ingest`` killed with SIGKILL once events are partly
   stored, then run again: the stored count must equal the log's valid events exactly.
6. ``forget``: ``forget_user`` while another connection holds a read snapshot must not claim
   success; once the reader is gone it completes, no byte of the user's pseudonym is left in
   the database files, and re-ingesting the log skips the user (tombstone).
7. ``server_writers``: the server backend (``qdrant-client``'s local mode, as the tests use)
   refuses a second writer while one holds the lock, and builds again once it is released.
8. ``memory``: ``shopsearch index`` at several catalog sizes, in segments and in one segment:
   peak RSS and peak anonymous memory per 1,000 products more, and the disk of an upsert's
   copy against the build it copies.

Bounded: every subprocess has a timeout, every count is a parameter. Everything but the two
report files is written under ``WORKDIR/scratch`` and removed at the end (``keep=True`` keeps it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ShopsearchError

ROOT = Path(__file__).resolve().parents[1]
#: The scenarios, in the order they run.
SCENARIOS = (
    "kill_build",
    "promotions",
    "two_writers",
    "damage",
    "kill_ingest",
    "forget",
    "server_writers",
    "memory",
)
#: Longest any one subprocess may run before it is killed and counted as a failure.
SUBPROCESS_TIMEOUT_S = 300.0
#: Results compared per query.
TOP_K = 10
#: Share of the catalog changed between the two catalog versions (A and B).
CHANGED_SHARE = 0.1
#: Bad rows in the event log (unknown product or unreadable timestamp), per event.
BAD_EVENT_SHARE = 0.01


@dataclass
class FaultReport:
    """What ``shopsearch bench-faults`` counted."""

    machine: str
    date: str
    settings: dict[str, Any]
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "machine": self.machine,
            "date": self.date,
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
            "scenarios": self.scenarios,
        }

    def passed(self) -> dict[str, bool]:
        """Per scenario: did everything come out as it should."""
        return {name: bool(s.get("passed")) for name, s in self.scenarios.items()}

    def markdown(self) -> str:
        """The report as a short Markdown document."""
        lines = [
            "# Fault benchmark",
            "",
            f"{self.machine}; {self.date}; {self.seconds:.0f} s. Settings: "
            + ", ".join(f"{k}={v}" for k, v in self.settings.items()),
            "",
            "| scenario | passed | counts |",
            "|---|---|---|",
        ]
        for name, s in self.scenarios.items():
            counts = ", ".join(
                f"{k} {v}"
                for k, v in s.items()
                if k not in ("passed", "cases", "kills", "notes", "readers", "attempts", "runs")
                and not isinstance(v, (dict, list))
            )
            lines.append(f"| {name} | {'yes' if s.get('passed') else '**no**'} | {counts} |")
        for name, s in self.scenarios.items():
            for note in s.get("notes", []):
                lines.append(f"- {name}: {note}")
        damage = self.scenarios.get("damage", {}).get("cases", [])
        if damage:
            lines += ["", "## Damage cases", "", "| file | damage | outcome | message |"]
            lines.append("|---|---|---|---|")
            for c in damage:
                msg = (c.get("message") or "").replace("|", "/")[:240]
                lines.append(f"| {c['file']} | {c['damage']} | {c['outcome']} | {msg} |")
        return "\n".join(lines) + "\n"


# -- helpers --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "shopsearch.cli", *args]


def _popen(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )


def _error_lines(stderr: str) -> list[str]:
    """stderr without warnings and progress output: what a user reads as the error."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def _stagings(index: Path) -> list[Path]:
    return sorted((index / "builds").glob("*.staging")) if (index / "builds").is_dir() else []


def _current(index: Path) -> str | None:
    try:
        return (index / "CURRENT").read_text().strip() or None
    except OSError:
        return None


def _leftovers(index: Path, keep: set[str]) -> tuple[int, int]:
    """(entries, bytes on disk) under builds/ other than ``keep``, plus temporary files."""
    found = [p for p in (index / "builds").iterdir() if p.name not in keep]
    found += list(index.glob(".CURRENT.*.tmp"))
    return len(found), sum(_disk_bytes(p) for p in found)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)


# -- catalogs, queries, events --------------------------------------------------------------------


def _catalogs(scratch: Path, n: int, seed: int) -> tuple[Path, Path, list[str]]:
    """Catalog A, catalog B (a share of A's products retitled and repriced), and queries."""
    import polars as pl

    from catalog.sample import write_sample_catalog

    a = write_sample_catalog(scratch / "catalog-a.parquet", n=n, seed=seed)
    df = pl.read_parquet(a)
    rng = random.Random(seed)
    changed = set(rng.sample(range(df.height), max(1, int(df.height * CHANGED_SHARE))))
    flags = pl.Series([i in changed for i in range(df.height)])
    b_df = df.with_columns(
        pl.when(flags).then(pl.lit("Clearance ") + pl.col("title")).otherwise(pl.col("title")),
        pl.when(flags).then(pl.col("price") * 0.5).otherwise(pl.col("price")),
    )
    b = scratch / "catalog-b.parquet"
    b_df.write_parquet(b)
    titles = df["title"].to_list()
    picks = rng.sample(titles, min(8, len(titles)))
    queries = [" ".join(t.split()[1:4]) or t for t in picks]
    return a, b, queries


def _write_event_log(path: Path, product_ids: list[str], n: int, seed: int) -> tuple[int, dict]:
    """A JSON Lines log of ``n`` events (a share of them bad); returns (valid, per-user valid)."""
    rng = random.Random(seed)
    start = 1_735_689_600  # 2025-01-01T00:00:00Z
    users = [f"shopper{u:03d}@example.com" for u in range(max(2, n // 150))]
    per_user: dict[str, int] = {}
    valid = 0
    with open(path, "w") as fh:
        for i in range(n):
            user = rng.choice(users)
            kind = rng.choice(["view", "view", "click", "click", "add_to_cart", "purchase"])
            row = {
                "user_id": user,
                "timestamp": start + i,  # distinct: every valid event is stored once
                "session_id": f"{user}-s{i // 40}",
                "event": kind,
                "product_id": rng.choice(product_ids),
            }
            if rng.random() < BAD_EVENT_SHARE:
                if rng.random() < 0.5:
                    row["product_id"] = f"NO-SUCH-{i}"
                else:
                    row["timestamp"] = "yesterday-ish"
            else:
                valid += 1
                per_user[user] = per_user.get(user, 0) + 1
            fh.write(json.dumps(row) + "\n")
    return valid, per_user


def _stored_events(db: Path) -> int | None:
    """Events stored now, read through a short-lived connection (None: not readable yet)."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return None


# -- worker processes -----------------------------------------------------------------------------


def _reader_main(spec_path: str) -> None:
    """A reader process: searches in a loop until the stop file appears, then writes counts."""
    from retrieval.retriever import Retriever

    spec = json.loads(Path(spec_path).read_text())
    r = Retriever.open(spec["index"], model=spec["model"])
    builds = [r.manifest["build_id"]]
    Path(spec["ready"]).write_text("ready")
    searches = errors = empty = 0
    messages: list[str] = []
    i = 0
    while not Path(spec["stop"]).exists():
        query = spec["queries"][i % len(spec["queries"])]
        i += 1
        try:
            hits = r.search(query, k=TOP_K)
            searches += 1
            empty += not hits
        except Exception as exc:  # every failure counts; the first few are kept
            errors += 1
            if len(messages) < 5:
                messages.append(_first_line(exc))
        build = r.manifest["build_id"]
        if build != builds[-1]:
            builds.append(build)
    r.close()
    out = {"searches": searches, "errors": errors, "empty": empty, "builds": builds}
    Path(spec["out"]).write_text(json.dumps({**out, "messages": messages}))


def _damage_main(spec_path: str) -> None:
    """A damage worker: opens and searches each damaged copy; one JSON line per case."""
    from core.errors import ShopsearchError
    from retrieval.encoder import BiEncoder
    from retrieval.retriever import Retriever

    spec = json.loads(Path(spec_path).read_text())
    encoder = BiEncoder(spec["model"], device="cpu")
    with open(spec["out"], "a") as out:
        for case in spec["cases"]:
            out.write(json.dumps({"id": case["id"], "started": True}) + "\n")
            out.flush()
            record: dict[str, Any] = {"id": case["id"]}
            try:
                with Retriever.open(case["index"], encoder=encoder, auto_refresh_s=None) as r:
                    record["results"] = [
                        [h.product_id for h in r.search(q, k=TOP_K)] for q in spec["queries"]
                    ]
            except ShopsearchError as exc:
                record["error"] = "ShopsearchError"
                record["message"] = str(exc)
            except BaseException as exc:  # a panic is a BaseException; counted as a crash
                record["error"] = type(exc).__name__
                record["message"] = str(exc)
            out.write(json.dumps(record) + "\n")
            out.flush()


def _python_worker(fn: str, spec: Path, cwd: Path) -> subprocess.Popen:
    code = f"from research.bench_faults import {fn}; {fn}({str(spec)!r})"
    return _popen([sys.executable, "-c", code], cwd)


# -- the benchmark --------------------------------------------------------------------------------


class _Bench:
    def __init__(
        self, workdir: Path, n: int, seed: int, model: str | None, n_events: int, log
    ) -> None:
        from retrieval.encoder import BiEncoder

        self.workdir = workdir
        self.scratch = workdir / "scratch"
        self.n, self.seed, self.model, self.log = n, seed, model, log
        self.n_events = n_events
        self.events: Path | None = None
        self.profiles: Path | None = None
        self.rng = random.Random(seed)
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        self.scratch.mkdir(parents=True)
        self.index = self.scratch / "index"
        self.cat_a, self.cat_b, self.queries = _catalogs(self.scratch, n, seed)
        self.encoder = BiEncoder(model, device="cpu")
        self.reference: dict[str, list[list[str]]] = {}  # build id -> top ids per query

    def _model_args(self) -> list[str]:
        return ["--model", self.model] if self.model else []

    def _index_cmd(self, catalog: Path, index: Path, mode: str = "full") -> list[str]:
        return _cli(
            "index",
            str(catalog),
            "--index",
            str(index),
            "--mode",
            mode,
            "--no-progress",
            "--rejects",
            str(self.scratch / "rejects.csv"),
            *self._model_args(),
        )

    def results(self, index: Path) -> tuple[str, list[list[str]]]:
        """(live build id, top ids per query) of an index, opened and verified from scratch."""
        from retrieval.retriever import Retriever

        with Retriever.open(index, encoder=self.encoder, auto_refresh_s=None) as r:
            ids = [[h.product_id for h in r.search(q, k=TOP_K)] for q in self.queries]
            return r.manifest["build_id"], ids

    def ensure_index(self) -> None:
        """Builds catalog A in this process when no scenario before built the index."""
        from indexer.build import index_catalog
        from retrieval.store import IndexLocation

        if _current(self.index) is None:
            index_catalog(
                self.cat_a,
                IndexLocation(path=self.index),
                encoder=self.encoder,
                progress=False,
                rejects_path=self.scratch / "rejects.csv",
            )

    def ensure_log(self) -> None:
        """Writes the event log (once)."""
        import polars as pl

        if getattr(self, "events", None) is None:
            ids = pl.read_parquet(self.cat_a, columns=["product_id"])["product_id"].to_list()
            self.events = self.scratch / "events.jsonl"
            self.valid_events, self.per_user = _write_event_log(
                self.events, ids, self.n_events, self.seed
            )

    # 1 -------------------------------------------------------------------------------------------

    def kill_build(self, kills: int) -> dict[str, Any]:
        self.log(f"[kill_build] first build of {self.n} products (a subprocess, timed)")
        t0 = time.monotonic()
        proc = _popen(self._index_cmd(self.cat_a, self.index), self.scratch)
        staged_at = done_at = None
        while proc.poll() is None:
            now = time.monotonic()
            if staged_at is None and _stagings(self.index):
                staged_at = now
            elif staged_at is not None and done_at is None and not _stagings(self.index):
                done_at = now
            time.sleep(0.02)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"the first build failed: {err.strip()[-500:]}")
        end = time.monotonic()
        stage_s = ((done_at or end) - (staged_at or t0)) if staged_at else end - t0
        build_a, ref_a = self.results(self.index)
        self.reference[build_a] = ref_a
        catalog_of = {build_a: "a"}
        self.log(f"[kill_build] built in {end - t0:.1f} s ({stage_s:.1f} s with a staging folder)")

        records = []
        live = previous = build_a  # previous: the build a promotion keeps for readers
        for k in range(kills):
            stale = set(_stagings(self.index))  # a killed run's folder, until cleaned
            proc = _popen(self._index_cmd(self.cat_b, self.index), self.scratch)
            deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
            while proc.poll() is None and not set(_stagings(self.index)) - stale:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            delay = self.rng.uniform(0.0, stage_s)
            time.sleep(delay)
            staging_at_kill = bool(set(_stagings(self.index)) - stale)
            exited_before = proc.poll() is not None
            _kill(proc)
            rec: dict[str, Any] = {
                "delay_after_staging_s": round(delay, 2),
                "staging_at_kill": staging_at_kill,
                "exited_before_kill": exited_before,
            }
            now_live = _current(self.index)
            try:
                build, ids = self.results(self.index)
                if build != live:  # the kill came after the promotion: the new build is live
                    rec["promoted_before_kill"] = True
                    catalog_of[build] = "b"
                    live, previous = build, live
                    expected = self.reference.get(build)
                    if expected is None:
                        expected = self.reference[build] = ids  # checked against B's below
                else:
                    expected = self.reference[live]
                rec["searches_ok"] = sum(a == b for a, b in zip(ids, expected, strict=True))
                rec["searches_wrong"] = len(ids) - rec["searches_ok"]
                rec["searches_error"] = 0
            except Exception as exc:
                rec["searches_ok"] = rec["searches_wrong"] = 0
                rec["searches_error"] = len(self.queries)
                rec["error"] = _first_line(exc)
            rec["live"] = now_live
            rec["staging_folders_left"] = len(_stagings(self.index))
            records.append(rec)
            self.log(f"[kill_build] kill {k + 1}/{kills} after {delay:.1f} s: {rec}")

        before = _leftovers(self.index, {live, previous})
        self.log("[kill_build] one complete build after the kills")
        done = _run(self._index_cmd(self.cat_b, self.index), self.scratch)
        final = _current(self.index)
        after = _leftovers(self.index, {final, live} - {None})
        build_b, ref_b = self.results(self.index)
        # a build of B promoted by a killed run must answer as a complete build of B does
        for build, cat in catalog_of.items():
            if cat == "b" and self.reference[build] != ref_b:
                for rec in records:
                    if rec["live"] == build and rec.get("promoted_before_kill"):
                        rec["searches_wrong"] += rec["searches_ok"]
                        rec["searches_ok"] = 0
        self.reference[build_b] = ref_b
        total = kills * len(self.queries)
        ok = sum(r["searches_ok"] for r in records)
        summary = {
            "kills": records,
            "kills_total": kills,
            "kills_with_staging_folder": sum(r["staging_at_kill"] for r in records),
            "promoted_before_kill": sum(bool(r.get("promoted_before_kill")) for r in records),
            "searches": total,
            "searches_ok": ok,
            "searches_wrong": sum(r["searches_wrong"] for r in records),
            "searches_error": sum(r["searches_error"] for r in records),
            "leftover_entries_before_next_build": before[0],
            "leftover_bytes_before_next_build": before[1],
            "next_build_exit": done.returncode,
            "leftover_entries_after_next_build": after[0],
            "leftover_bytes_after_next_build": after[1],
            "build_seconds": round(end - t0, 1),
        }
        summary["passed"] = ok == total and done.returncode == 0 and after[0] == 0
        return summary

    # 2 -------------------------------------------------------------------------------------------

    def promotions(self, promotions: int, readers: int) -> dict[str, Any]:
        from indexer.build import index_catalog
        from retrieval.store import IndexLocation

        self.ensure_index()
        work = self.scratch / "readers"
        work.mkdir()
        stop = work / "stop"
        procs = []
        for i in range(readers):
            spec = {
                "index": str(self.index),
                "model": self.model,
                "queries": self.queries,
                "stop": str(stop),
                "ready": str(work / f"ready-{i}"),
                "out": str(work / f"out-{i}.json"),
            }
            path = work / f"spec-{i}.json"
            path.write_text(json.dumps(spec))
            procs.append(_python_worker("_reader_main", path, self.scratch))
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while not all((work / f"ready-{i}").exists() for i in range(readers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                break
            time.sleep(0.1)
        self.log(f"[promotions] {readers} readers searching; {promotions} promotions")
        t0 = time.monotonic()
        promoted = []
        writer_errors = []
        for m in range(promotions):
            catalog = self.cat_a if m % 2 == 0 else self.cat_b
            try:
                index_catalog(
                    catalog,
                    IndexLocation(path=self.index),
                    mode="upsert",
                    encoder=self.encoder,
                    progress=False,
                    rejects_path=self.scratch / "rejects.csv",
                )
                promoted.append(_current(self.index))
            except Exception as exc:
                writer_errors.append(_first_line(exc))
            time.sleep(1.5)  # readers look for a new build at most once a second
        seconds = time.monotonic() - t0
        time.sleep(1.5)
        stop.write_text("stop")
        outs = []
        for i, p in enumerate(procs):
            try:
                _, err = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                _kill(p)
                err = "timed out"
            path = work / f"out-{i}.json"
            if p.returncode == 0 and path.exists():
                outs.append(json.loads(path.read_text()))
            else:
                outs.append({"searches": 0, "errors": 1, "empty": 0, "builds": [], "died": True})
                outs[-1]["messages"] = [(err or "").strip().splitlines()[-1:]]
        seen = [len(set(o["builds"]) & set(promoted)) for o in outs]
        summary = {
            "readers": outs,
            "reader_processes": readers,
            "promotions": len(promoted),
            "writer_errors": len(writer_errors),
            "searches": sum(o["searches"] for o in outs),
            "search_errors": sum(o["errors"] for o in outs),
            "empty_results": sum(o["empty"] for o in outs),
            "reader_deaths": sum(bool(o.get("died")) for o in outs),
            "promotions_seen_min": min(seen) if seen else 0,
            "promotions_seen_max": max(seen) if seen else 0,
            "seconds": round(seconds, 1),
        }
        if writer_errors:
            summary["notes"] = writer_errors[:3]
        summary["passed"] = (
            summary["search_errors"] == 0
            and summary["empty_results"] == 0
            and summary["reader_deaths"] == 0
            and summary["promotions"] == promotions
            and summary["searches"] > 0
        )
        return summary

    # 3 -------------------------------------------------------------------------------------------

    def two_writers(self) -> dict[str, Any]:
        from retrieval.store import IndexLocation, open_backend

        self.ensure_index()
        attempts = []
        # a: a second process while a first process builds
        self.log("[two_writers] a second `shopsearch index` while another one builds")
        first = _popen(self._index_cmd(self.cat_a, self.index), self.scratch)
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
        while first.poll() is None and not _stagings(self.index) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = _run(self._index_cmd(self.cat_b, self.index, "upsert"), self.scratch)
        first_holding = first.poll() is None
        _, first_err = first.communicate(timeout=SUBPROCESS_TIMEOUT_S)
        attempts.append(("process vs process", second, first_holding, first.returncode))
        # b: a process while this one holds the lock
        self.log("[two_writers] `shopsearch index --mode upsert` while this process holds the lock")
        held = _current(self.index)
        with open_backend(IndexLocation(path=self.index)).writer_lock():
            third = _run(self._index_cmd(self.cat_a, self.index, "upsert"), self.scratch)
        attempts.append(("process vs lock holder", third, True, 0))
        unchanged = _current(self.index) == held
        rows = []
        for what, proc, holding, first_rc in attempts:
            lines = _error_lines(proc.stderr)
            rows.append(
                {
                    "case": what,
                    "first_writer_held_lock": holding,
                    "first_writer_exit": first_rc,
                    "exit": proc.returncode,
                    "error_lines": len(lines),
                    "message": lines[0] if lines else "",
                }
            )
        refused = sum(
            r["exit"] == 2
            and r["error_lines"] == 1
            and "another shopsearch process" in r["message"]
            for r in rows
        )
        self.results(self.index)  # still opens and answers
        return {
            "attempts": rows,
            "second_writers": len(rows),
            "refused_one_line_exit_2": refused,
            "index_unchanged_by_refused_writer": unchanged,
            "first_writer_completed": attempts[0][3] == 0,
            "passed": refused == len(rows) and unchanged and attempts[0][3] == 0,
        }

    # 4 -------------------------------------------------------------------------------------------

    def damage(self, segment_files: int) -> dict[str, Any]:
        from retrieval.store import edge

        self.ensure_index()

        live, expected = self.results(self.index)
        src = self.index / "builds" / live
        shard_files = [
            p for p in (src / "shard").rglob("*") if p.is_file() and not edge._volatile(p)
        ]
        shard_files.sort(key=lambda p: (-p.stat().st_size, str(p)))
        targets: list[tuple[str, str]] = []
        for p in shard_files[:segment_files]:
            rel = str(p.relative_to(src))
            targets += [(rel, "truncate"), (rel, "garble")]
        targets += [
            (name, how)
            for name in ("manifest.json", "integrity.json")
            for how in ("truncate", "garble")
        ]
        targets += [("CURRENT", "truncate"), ("CURRENT", "garble")]
        work = self.scratch / "damage"
        work.mkdir()
        cases = []
        for i, (name, how) in enumerate(targets):
            copy = work / f"case-{i:02d}"
            (copy / "builds").mkdir(parents=True)
            shutil.copytree(src, copy / "builds" / live, copy_function=edge.sparse_copy)
            shutil.copy2(self.index / "CURRENT", copy / "CURRENT")
            target = copy / name if name == "CURRENT" else copy / "builds" / live / name
            _damage_file(target, how, self.rng)
            cases.append({"id": i, "index": str(copy), "file": name, "damage": how})
        self.log(f"[damage] {len(cases)} damaged copies, opened and searched in a worker process")
        outcomes = self._run_damage_worker(work, cases)
        rows = []
        for case in cases:
            got = outcomes.get(case["id"], {"error": "crash", "message": "worker died"})
            label = re.sub(r"segments/[^/]+/", "segments/*/", case["file"])
            row = {"file": label, "damage": case["damage"]}
            if got.get("error") == "ShopsearchError":
                msg = got["message"]
                row["outcome"] = (
                    "detected" if "\n" not in msg.strip() else "detected, several lines"
                )
                row["names_file"] = Path(case["file"]).name in msg
                row["message"] = re.sub(
                    r"builds/[^/ )]+", "builds/BUILD", msg.replace(case["index"], "INDEX")
                )
            elif got.get("error"):
                row["outcome"] = "crash"
                first = (got.get("message") or "").strip().splitlines()[:1]
                row["message"] = f"{got['error']}: {first[0] if first else ''}"
            elif got["results"] == expected:
                row["outcome"] = "harmless"  # same answers as the intact index
            else:
                row["outcome"] = "silent"
            rows.append(row)
        cli = self._cli_on_damage(cases, rows)
        detected = sum(r["outcome"] == "detected" for r in rows)
        summary = {
            "cases": rows,
            "total": len(rows),
            "detected": detected,
            "detected_naming_file": sum(bool(r.get("names_file")) for r in rows),
            "harmless": sum(r["outcome"] == "harmless" for r in rows),
            "silent": sum(r["outcome"] == "silent" for r in rows),
            "crash": sum(r["outcome"] == "crash" for r in rows),
            **cli,
        }
        summary["passed"] = (
            summary["silent"] == 0 and summary["crash"] == 0 and cli.get("cli_exit") == 2
        )
        return summary

    def _run_damage_worker(self, work: Path, cases: list[dict]) -> dict[int, dict]:
        out = work / "outcomes.jsonl"
        results: dict[int, dict] = {}
        remaining = list(cases)
        for _ in range(len(cases) + 1):  # a worker that dies is restarted after its case
            if not remaining:
                break
            spec = work / "spec.json"
            spec.write_text(
                json.dumps(
                    {
                        "model": self.model,
                        "queries": self.queries,
                        "cases": remaining,
                        "out": str(out),
                    }
                )
            )
            proc = _python_worker("_damage_main", spec, self.scratch)
            try:
                proc.communicate(timeout=SUBPROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill(proc)
            started = None
            for line in out.read_text().splitlines() if out.exists() else []:
                rec = json.loads(line)
                if rec.get("started"):
                    started = rec["id"]
                else:
                    results[rec["id"]] = rec
                    started = None
            if started is not None and started not in results:
                results[started] = {"error": "crash", "message": f"worker exit {proc.returncode}"}
            remaining = [c for c in remaining if c["id"] not in results]
        return results

    def _cli_on_damage(self, cases: list[dict], rows: list[dict]) -> dict[str, Any]:
        """`shopsearch search` on the first damaged segment file: exit status and stderr lines."""
        for case, row in zip(cases, rows, strict=True):
            if case["file"].startswith("shard/") and row["outcome"] == "detected":
                proc = _run(_cli("search", self.queries[0], "--index", case["index"]), self.scratch)
                lines = _error_lines(proc.stderr)
                return {
                    "cli_case": f"{row['file']} {row['damage']}",
                    "cli_exit": proc.returncode,
                    "cli_error_lines": len(lines),
                }
        return {"cli_case": None, "cli_exit": None, "cli_error_lines": None}

    # 5 -------------------------------------------------------------------------------------------

    def kill_ingest(self, rounds: int) -> dict[str, Any]:
        from personalization.ingest import PROFILES_FILE

        self.ensure_index()
        self.ensure_log()
        valid = self.valid_events
        runs = []
        for r in range(rounds):
            profiles = self.scratch / f"profiles-{r}"
            db = profiles / PROFILES_FILE
            cmd = _cli(
                "events",
                "ingest",
                str(self.events),
                "--profiles",
                str(profiles),
                "--index",
                str(self.index),
                "--rejects",
                str(self.scratch / f"event-rejects-{r}.csv"),
            )
            proc = _popen(cmd, self.scratch)
            deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
            stored = None
            # each round kills in its own part of the ingest (from 5% to 80% of the events)
            share = 0.75 / rounds
            target = self.rng.uniform(0.05 + r * share, 0.05 + (r + 1) * share) * valid
            while proc.poll() is None and time.monotonic() < deadline:
                stored = _stored_events(db)
                if stored is not None and stored >= target:
                    break
                time.sleep(0.01)
            exited_before = proc.poll() is not None
            _kill(proc)
            at_kill = _stored_events(db) or 0
            again = _run(cmd, self.scratch)
            final = _stored_events(db)
            run = {
                "kill_when_stored": round(target),
                "seen_before_kill": stored,
                "stored_at_kill": at_kill,
                "exited_before_kill": exited_before,
                "rerun_exit": again.returncode,
                "rerun_output": again.stdout.strip(),
                "stored_after_rerun": final,
                "exact": final == valid,
            }
            runs.append(run)
            self.log(f"[kill_ingest] round {r + 1}/{rounds}: {run}")
        self.profiles = self.scratch / f"profiles-{rounds - 1}"
        mid = [r for r in runs if 0 < r["stored_at_kill"] < valid and not r["exited_before_kill"]]
        return {
            "runs": runs,
            "events_in_log": self.n_events,
            "valid_events": valid,
            "kills": rounds,
            "killed_mid_way": len(mid),
            "exact_after_rerun": sum(r["exact"] for r in runs),
            "passed": all(r["exact"] and r["rerun_exit"] == 0 for r in runs) and len(mid) > 0,
        }

    # 6 -------------------------------------------------------------------------------------------

    def forget(self, users: int) -> dict[str, Any]:
        from personalization.ingest import (
            PROFILES_FILE,
            forget_user,
            ingest_event_log,
            open_profiles,
        )
        from personalization.profiles import ForgetIncomplete
        from retrieval.store import IndexLocation

        self.ensure_index()
        self.ensure_log()
        if getattr(self, "profiles", None) is None:  # kill_ingest did not run
            self.profiles = self.scratch / "profiles"
            ingest_event_log(
                self.events,
                self.profiles,
                IndexLocation(path=self.index),
                rejects_path=self.scratch / "event-rejects.csv",
            )
        db = self.profiles / PROFILES_FILE
        chosen = sorted(self.per_user, key=lambda u: (-self.per_user[u], u))[:users]
        rows = []
        for user in chosen:
            store, pz = open_profiles(self.profiles)
            pseudonym = pz.pseudonym(user)
            before = store.count_events(pseudonym)
            store.close()
            reader = sqlite3.connect(db, timeout=10.0)
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM events").fetchone()  # holds a read snapshot
            message = None
            try:
                forget_user(self.profiles, user)
                first = "claimed success"
            except ForgetIncomplete as exc:
                first = "ForgetIncomplete"
                message = str(exc)
            except Exception as exc:
                first = _first_line(exc)
            finally:
                reader.rollback()
                reader.close()
            second = forget_user(self.profiles, user)
            store, pz = open_profiles(self.profiles)
            after = store.count_events(pseudonym)
            store.close()
            traces = 0
            for f in self.profiles.glob(PROFILES_FILE + "*"):
                traces += f.read_bytes().count(pseudonym.encode())
            rows.append(
                {
                    "events_before": before,
                    "first_forget_with_reader": first,
                    "message": message,
                    "second_forget_already_forgotten": second.already_forgotten,
                    "events_after": after,
                    "pseudonym_bytes_in_files": traces,
                }
            )
        self.log("[forget] re-ingesting the whole log")
        summary = ingest_event_log(
            self.events,
            self.profiles,
            IndexLocation(path=self.index),
            rejects_path=self.scratch / "event-rejects-again.csv",
        )
        store, pz = open_profiles(self.profiles)
        back = sum(store.count_events(pz.pseudonym(u)) for u in chosen)
        total = store.count_events()
        store.close()
        expected_skips = sum(self.per_user[u] for u in chosen)
        out = {
            "users": rows,
            "users_forgotten": len(rows),
            "refused_while_reader_held_snapshot": sum(
                r["first_forget_with_reader"] == "ForgetIncomplete" for r in rows
            ),
            "completed_after_reader_closed": sum(
                r["events_after"] == 0 and r["pseudonym_bytes_in_files"] == 0 for r in rows
            ),
            "events_removed": sum(r["events_before"] for r in rows),
            "reingest_skipped": summary.forgotten,
            "reingest_expected_skips": expected_skips,
            "events_back_after_reingest": back,
            "stored_after_reingest": total,
            "expected_after_reingest": self.valid_events - expected_skips,
        }
        out["passed"] = (
            out["refused_while_reader_held_snapshot"] == len(rows)
            and out["completed_after_reader_closed"] == len(rows)
            and summary.forgotten == expected_skips
            and back == 0
            and total == out["expected_after_reingest"]
        )
        return out

    # 7 -------------------------------------------------------------------------------------------

    def server_writers(self, attempts: int, products: int) -> dict[str, Any]:
        import polars as pl
        from qdrant_client import QdrantClient

        from core.errors import ShopsearchError
        from indexer.build import index_catalog
        from retrieval.store import IndexLocation, open_backend

        small = self.scratch / "catalog-small.parquet"
        pl.read_parquet(self.cat_a).head(products).write_parquet(small)
        client = QdrantClient(path=str(self.scratch / "qdrant-local"))
        loc = IndexLocation(client=client, collection="shop")

        def build(mode: str = "full") -> None:
            index_catalog(
                small,
                loc,
                mode=mode,  # type: ignore[arg-type]
                encoder=self.encoder,
                progress=False,
                rejects_path=self.scratch / "rejects.csv",
            )

        try:
            build()
            holder = open_backend(loc)
            before = holder.current_version()
            rows = []
            with holder.writer_lock():
                for i in range(attempts):
                    try:
                        if i % 3 == 2:  # the lock itself, as another writer takes it
                            with open_backend(loc).writer_lock():
                                pass
                        else:
                            build("full" if i % 3 == 0 else "upsert")
                        rows.append({"outcome": "not refused"})
                    except ShopsearchError as exc:
                        msg = str(exc)
                        ok = "another shopsearch process is writing" in msg and "\n" not in msg
                        rows.append({"outcome": "refused" if ok else "other error", "message": msg})
                    except Exception as exc:
                        rows.append({"outcome": "crash", "message": _first_line(exc)})
            unchanged = holder.current_version() == before
            build()  # the lock is free again
            lock_left = client.collection_exists("shop__lock")
            rebuilt = holder.current_version() != before
        finally:
            client.close()
        refused = sum(r["outcome"] == "refused" for r in rows)
        return {
            "attempts": rows,
            "second_writers": attempts,
            "refused": refused,
            "alias_unchanged_while_locked": unchanged,
            "built_after_release": rebuilt,
            "lock_left_behind": lock_left,
            "passed": refused == attempts and unchanged and rebuilt and not lock_left,
        }

    # 8 -------------------------------------------------------------------------------------------

    def memory(self, sizes: Sequence[int], segment: int) -> dict[str, Any]:
        """Peak memory of `shopsearch index` per catalog size, in segments and in one segment.

        Encodes with ``--model`` when given, else with :func:`_fast_encoder` (the packaged
        model's tokenizer and width, one layer): what grows with the catalog is the store's,
        and the packaged model would spend most of the time encoding.
        """
        from catalog.sample import write_sample_catalog

        model = self.model or str(_fast_encoder(self.scratch / "fast-encoder", self.seed))
        runs = []
        for n in sizes:
            catalog = write_sample_catalog(
                self.scratch / f"catalog-{n}.parquet", n=n, seed=self.seed
            )
            for label, points in (("segments", segment), ("one segment", max(n, 1000))):
                index = self.scratch / f"memory-{n}-{points}"
                self.log(f"[memory] {n} products, {label} ({points} per segment)")
                cmd = self._index_cmd(catalog, index) + ["--segment-points", str(points)]
                peak = _peak_memory(cmd + ["--model", model], self.scratch)
                live = index / "builds" / (_current(index) or "")
                runs.append({"products": n, "layout": label, **peak, "disk_mb": _mb(live)})
            # an upsert that changes nothing copies the live build: sparse, so about its size
            cmd = self._index_cmd(catalog, index, "upsert") + ["--segment-points", str(points)]
            _peak_memory(cmd + ["--model", model], self.scratch)
            runs[-1]["upsert_disk_mb"] = _mb(index / "builds" / (_current(index) or ""))

        def growth(layout: str, key: str) -> float:
            """MB more per 1,000 products between the two largest sizes (past the warm-up)."""
            rows = [r for r in runs if r["layout"] == layout and r["exit"] == 0][-2:]
            if len(rows) < 2:
                return float("nan")
            span = (rows[1]["products"] - rows[0]["products"]) / 1000
            return round((rows[1][key] - rows[0][key]) / span, 2)

        seg = growth("segments", "peak_rss_mb")
        one = growth("one segment", "peak_rss_mb")
        disk = [r["upsert_disk_mb"] / r["disk_mb"] for r in runs if r.get("upsert_disk_mb")]
        return {
            "runs": runs,
            "model": self.model or "one-layer encoder of all-MiniLM-L6-v2's width (random weights)",
            "segment_points": segment,
            "peak_rss_mb_per_1k_products_segments": seg,
            "peak_rss_mb_per_1k_products_one_segment": one,
            "peak_anon_mb_per_1k_products_segments": growth("segments", "peak_anon_mb"),
            "peak_anon_mb_per_1k_products_one_segment": growth("one segment", "peak_anon_mb"),
            "upsert_disk_ratio_max": round(max(disk), 2) if disk else float("nan"),
            "notes": [
                "peak RSS counts the mapped vector files (page cache the kernel can reclaim); "
                "peak anonymous memory is sampled every 20 ms"
            ],
            # against the one-segment build of the same run: at most half its growth per
            # product, and an upsert's copy no larger than 1.5x the build it copies
            "passed": all(r["exit"] == 0 for r in runs)
            and seg <= 0.5 * one
            and bool(disk)
            and max(disk) <= 1.5,
        }


def _fast_encoder(folder: Path, seed: int) -> Path:
    """A one-layer BERT with the packaged model's tokenizer and width (384), random weights.

    For measuring what indexing holds per product: vectors of the same size at a fraction of
    the encoding time. Its vectors mean nothing; nothing searches with them.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from inference.models import default_model_path

    try:  # sentence-transformers 6 moved the modules
        from sentence_transformers.sentence_transformer import modules as st_modules
    except ImportError:  # pragma: no cover - sentence-transformers < 6
        from sentence_transformers import models as st_modules

    out = folder / "st"
    if (out / "modules.json").is_file():
        return out
    packaged = default_model_path()
    config = BertConfig.from_pretrained(packaged)
    config.num_hidden_layers = 1
    torch.manual_seed(seed)
    hf = folder / "hf"
    BertModel(config).save_pretrained(hf)
    BertTokenizerFast.from_pretrained(packaged).save_pretrained(hf)
    transformer = st_modules.Transformer(str(hf), max_seq_length=128)
    pooling = st_modules.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling, st_modules.Normalize()], device="cpu").save(
        str(out)
    )
    return out


def _mb(path: Path) -> float:
    return round(_disk_bytes(path) / 2**20, 1) if path.exists() else float("nan")


def _peak_memory(cmd: list[str], cwd: Path) -> dict[str, Any]:
    """Runs ``cmd``; its exit status, peak RSS (kernel's high-water mark) and peak anonymous RSS.

    Anonymous memory is sampled from ``/proc`` every 20 ms (the kernel keeps no high-water mark
    of it), so a peak shorter than that can be missed.
    """
    out = open(cwd / "memory.log", "w")  # noqa: SIM115 - closed below, after the wait
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    peak_anon = 0
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        peak_anon = max(peak_anon, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.close()
    return {
        "exit": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_anon_mb": round(peak_anon / 1024, 1),
    }


def _damage_file(path: Path, how: str, rng: random.Random) -> None:
    """Truncates a file to half its size, or flips up to 64 of its non-zero bytes."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        os.truncate(path, len(data) // 2)
        return
    nonzero = [i for i, b in enumerate(data) if b] or list(range(len(data)))
    for i in rng.sample(nonzero, min(64, len(nonzero))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def run_fault_benchmark(
    workdir: str | os.PathLike[str],
    n_products: int = 300,
    seed: int = 0,
    *,
    model: str | None = None,
    kills: int = 8,
    promotions: int = 5,
    readers: int = 2,
    segment_files: int = 4,
    n_events: int = 30000,
    ingest_kills: int = 2,
    forget_users: int = 2,
    server_attempts: int = 3,
    memory_sizes: Sequence[int] = (5000, 20000, 50000),
    memory_segment: int = 10000,
    scenarios: Sequence[str] | None = None,
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> FaultReport:
    """Runs the eight fault scenarios and writes ``faults.json`` and ``faults.md`` in ``workdir``.

    Args:
        workdir: Where the reports go (the scratch data under ``workdir/scratch``).
        n_products: Products in the sample catalog.
        seed: Seeds the catalog, the event log, kill moments and damage.
        model: Bi-encoder folder (default: the packaged all-MiniLM-L6-v2).
        kills: SIGKILLs during builds.
        promotions: Builds promoted while the readers search.
        readers: Reader processes searching during the promotions.
        segment_files: Largest shard files damaged (each truncated, then garbled).
        n_events: Events in the log killed mid-ingest.
        ingest_kills: Ingests killed (each on a fresh profile store) and run again.
        forget_users: Shoppers forgotten while a reader holds a snapshot.
        server_attempts: Second writers tried against the server backend.
        memory_sizes: Catalog sizes whose indexing peak memory is measured.
        memory_segment: Products per segment in the segmented builds of ``memory``.
        scenarios: Run only these (names as in :data:`SCENARIOS`); None runs all eight.
        keep: Keep ``workdir/scratch`` (indexes, logs, damaged copies).
        log: Receives progress lines.

    Returns:
        The :class:`FaultReport` (also written as JSON and Markdown).
    """
    if not memory_sizes or min(memory_sizes) < 100:
        raise ShopsearchError(f"memory sizes {list(memory_sizes)}: give sizes of at least 100")
    unknown = set(scenarios or ()) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}: choose from {SCENARIOS}")
    workdir = Path(workdir).resolve()  # subprocesses run in the scratch folder
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    settings = {
        "n_products": n_products,
        "seed": seed,
        "model": model or "packaged all-MiniLM-L6-v2",
        "kills": kills,
        "promotions": promotions,
        "readers": readers,
        "segment_files": segment_files,
        "n_events": n_events,
        "ingest_kills": ingest_kills,
        "forget_users": forget_users,
        "server_attempts": server_attempts,
        "memory_sizes": list(memory_sizes),
        "memory_segment": memory_segment,
    }
    from research.bench_speed import machine_description

    report = FaultReport(machine_description(), time.strftime("%Y-%m-%d"), settings)
    bench = _Bench(workdir, n_products, seed, model, n_events, log)
    try:
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("kill_build", lambda: bench.kill_build(kills)),
            ("promotions", lambda: bench.promotions(promotions, readers)),
            ("two_writers", bench.two_writers),
            ("damage", lambda: bench.damage(segment_files)),
            ("kill_ingest", lambda: bench.kill_ingest(ingest_kills)),
            ("forget", lambda: bench.forget(forget_users)),
            ("server_writers", lambda: bench.server_writers(server_attempts, min(n_products, 50))),
            ("memory", lambda: bench.memory(memory_sizes, memory_segment)),
        ]
        for name, step in steps:
            if scenarios is not None and name not in scenarios:
                continue
            started = time.monotonic()
            log(f"== {name}")
            report.scenarios[name] = step()
            report.scenarios[name]["scenario_seconds"] = round(time.monotonic() - started, 1)
            log(f"== {name}: {'passed' if report.scenarios[name]['passed'] else 'FAILED'}")
    finally:
        if not keep:
            shutil.rmtree(bench.scratch, ignore_errors=True)
    report.seconds = time.monotonic() - t0
    (workdir / "faults.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (workdir / "faults.md").write_text(report.markdown())
    return report
