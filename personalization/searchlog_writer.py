"""The search log's writer: rows in from the request threads, segments out, off the hot path.

    writer = SearchLogWriter("logs/search")        # starts its thread
    writer.append({"event": "search", ...})        # never blocks: a full queue drops the row
    writer.close()                                 # flush, rotate to Parquet (shutdown)

``append`` puts the row on a bounded queue and returns; a background thread writes the rows
to the **live segment**, ``<UTC start>-<replica>.jsonl`` (one JSON object per line), flushes
and fsyncs it at least every ``flush_s`` seconds (so a crash loses at most that much), and
**rotates** it when it passes ``max_bytes`` or the UTC day changes: the JSON Lines are
written as one Parquet segment of the same name (:func:`personalization.searchlog.write_segment`,
atomic and durable) and the ``.jsonl`` removed. ``close`` does the same at shutdown.

Several replicas (processes, machines) may share one folder: a segment's name carries its
replica (``host-pid``), and each writer holds an exclusive ``flock`` on its live segment for
as long as it writes it. A ``.jsonl`` whose lock can be taken has no writer (it crashed):
the next writer to start in the folder compacts it into Parquet (the reader skips a torn last
line). A ``.jsonl`` with a ``.parquet`` of the same name is a rotation that died between the two
steps: the Parquet is whole, the ``.jsonl`` is removed.

Erasure (:func:`forget`): every closed segment and every segment without a live writer is
rewritten without the shopper's rows, this process's own writer first rotating its live
segment; a live segment of another replica cannot be rewritten under it, so the shopper's
**tombstone** (a keyed hash of the pseudonym, :meth:`Pseudonymizer.tombstone`) goes to
``forgotten.txt`` in the folder: every writer drops a tombstoned shopper's rows, those
still queued and those in its live segment when it rotates, and never writes theirs again.

Disk full, a folder that cannot be written: the rows are counted as ``failed`` (they are
lost), logged once until writing works again, and a search never sees the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import polars as pl

from personalization.privacy import Pseudonymizer
from personalization.searchlog import FORGOTTEN_FILE, _read_jsonl, read_tombstones, write_segment

__all__ = [
    "FORGOTTEN_FILE",
    "ForgetLogSummary",
    "SearchLogWriter",
    "default_replica",
    "forget",
    "log_pseudonymizer",
]

log = logging.getLogger("shopsearch.searchlog")

#: Rotate the live segment past this many bytes (JSON Lines; the Parquet is ~10x smaller).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Rows waiting for the writer thread; past this a row is dropped (and counted).
DEFAULT_QUEUE_ROWS = 100_000
#: Outcomes counted per row.
OUTCOMES = ("written", "dropped", "failed", "forgotten")

Counter = Callable[[str, int], None]


def default_replica() -> str:
    """This process's name in segment names and the ``replica`` column: ``host-pid``."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())
    return f"{host or 'host'}-{os.getpid()}"


def segment_name(start: float, replica: str) -> str:
    """``20260105T100000.123456Z-<replica>``: sorts by UTC start time (the reader's order)."""
    stamp = datetime.fromtimestamp(start, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{replica}"


def _utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%d")


def log_pseudonymizer(
    directory: str | os.PathLike[str],
    profiles: str | os.PathLike[str] | None = None,
    key: str | None = None,
    create: bool = True,
) -> Pseudonymizer | None:
    """The pseudonymizer a service writes a search log with, found the way the service does.

    The key given (``SHOPSEARCH_PSEUDONYM_KEY``); else the profile directory's ``pseudonym.key``
    when the service has one (``--profiles``); else the log folder's own ``pseudonym.key``
    (created on first use, mode 0600, unless ``create`` is False: then None when there is none).

    Raises:
        ShopsearchError: A key that is not hex, or an unreadable or short key file.
    """
    from personalization.privacy import KEY_FILE

    if key is not None and key.strip():
        return Pseudonymizer.from_dir(directory, key)
    folder = Path(profiles if profiles is not None else directory)
    if not create and not (folder / KEY_FILE).exists():
        return None
    return Pseudonymizer.from_dir(folder)


class SearchLogWriter:
    """Appends rows to a search log folder from a background thread.

    Args:
        directory: The log folder (created when missing).
        replica: This process's name in the ``replica`` column and in segment names; None:
            :func:`default_replica` (``host-pid``).
        max_bytes: Rotate the live segment to Parquet past this size.
        flush_s: Flush and fsync the live segment at least this often (seconds): what a crash
            may lose.
        queue_rows: Rows that may wait for the thread; a row past it is dropped and counted.
        count: Called as ``count(outcome, rows)`` with ``outcome`` in ``written``, ``dropped``,
            ``failed``, ``forgotten`` (the service's ``/metrics`` counters); from any thread.
        pseudonymizer: The key the rows' pseudonyms were made with; with it, shoppers
            tombstoned in the folder's ``forgotten.txt`` are never written.
        clock: Epoch seconds now (tests move the day).

    Rows are dicts with any of :data:`personalization.searchlog.SCHEMA`'s columns; ``replica``
    is filled in, ``timestamp`` too when missing.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        replica: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        flush_s: float = 1.0,
        queue_rows: int = DEFAULT_QUEUE_ROWS,
        count: Counter | None = None,
        pseudonymizer: Pseudonymizer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.replica = replica or default_replica()
        self.max_bytes = int(max_bytes)
        self.flush_s = float(flush_s)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._count = count
        self._pz = pseudonymizer
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_rows)
        self._file: IO[str] | None = None
        self._path: Path | None = None
        self._day = ""
        self._size = 0
        self._pending = 0  # rows written since the last flush
        self._failing = False
        self._retry_at = 0.0
        self._tombstones: frozenset[str] = frozenset()
        self._tombstones_stamp: tuple[int, int] | None = None
        self._closed = False
        self._lock = threading.Lock()  # counts
        self._io = threading.Lock()  # the live segment: the thread, rotate() and close()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.compact()
        except OSError as exc:
            self._fail(0, exc)
        self._thread = threading.Thread(target=self._run, name="shopsearch-searchlog", daemon=True)
        self._thread.start()

    # -- the request's side ----------------------------------------------------------------

    def append(self, row: Mapping[str, Any]) -> bool:
        """Queues one row for writing; never blocks, never raises.

        Returns:
            False when the row was dropped (the queue is full, or the writer is closed).
        """
        if self._closed:
            self._add("dropped", 1)
            return False
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._add("dropped", 1)
            return False
        return True

    # -- control ---------------------------------------------------------------------------

    def live_name(self) -> str | None:
        """The file name of the live segment, or None between segments."""
        path = self._path
        return path.name if path is not None else None

    def flush(self, timeout: float = 10.0) -> None:
        """Waits until every row queued before the call is written and fsynced."""
        self._call("flush", timeout)

    def rotate(self, timeout: float = 30.0) -> Path | None:
        """Writes what is queued, then closes the live segment into Parquet now.

        Returns:
            The Parquet segment written, or None when there was no live segment.
        """
        return self._call("rotate", timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Writes what is queued, rotates the live segment to Parquet, stops the thread."""
        if self._closed:
            return
        self._closed = True  # rows appended from now on are dropped (and counted)
        self._call("close", timeout)
        self._thread.join(timeout)

    def _call(self, what: str, timeout: float) -> Any:
        if not self._thread.is_alive():
            return None
        done: dict[str, Any] = {"event": threading.Event()}
        self._queue.put((_CONTROL, what, done))  # control may wait: it is not on a request
        done["event"].wait(timeout)
        return done.get("result")

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_s
        while True:
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            batch: list[Mapping[str, Any]] = []
            control = None
            while item is not None:
                if isinstance(item, tuple) and item and item[0] is _CONTROL:
                    control = item
                    break
                batch.append(item)
                if len(batch) >= 4096:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if batch:
                self._write(batch)
            now = time.monotonic()
            if control is not None or now >= next_flush:
                self._flush()
                next_flush = now + self.flush_s
            if control is not None:
                _, what, done = control
                try:
                    if what in ("rotate", "close"):
                        done["result"] = self._rotate()
                finally:
                    done["event"].set()
                if what == "close":
                    return

    def _write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        now = self._clock()
        self._reload_tombstones()
        lines = []
        forgotten = 0
        for row in rows:
            if self._is_forgotten(row.get("pseudonym")):
                forgotten += 1
                continue
            out = dict(row)
            out["replica"] = self.replica
            if out.get("timestamp") is None:
                out["timestamp"] = now
            try:
                lines.append(json.dumps(out, separators=(",", ":"), default=_jsonable) + "\n")
            except (TypeError, ValueError) as exc:  # a row the caller built wrong: a bug
                log.error(json.dumps({"event": "search_log_bad_row", "error": str(exc)[:200]}))
                self._add("failed", 1)
        if forgotten:
            self._add("forgotten", forgotten)
        if not lines:
            return
        with self._io:
            if self._failing and time.monotonic() < self._retry_at:
                self._add("failed", len(lines))
                return
            try:
                if self._file is not None and (
                    self._size >= self.max_bytes or _utc_day(now) != self._day
                ):
                    self._rotate_locked()
                if self._file is None:
                    self._open(now)
                text = "".join(lines)
                self._file.write(text)  # type: ignore[union-attr]
                self._size += len(text.encode("utf-8"))
                self._pending += len(lines)
            except OSError as exc:
                self._fail(len(lines) + self._pending, exc)

    def _flush(self) -> None:
        with self._io:
            if self._file is None or not self._pending:
                return
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                self._fail(self._pending, exc)
                return
            self._add("written", self._pending)
            self._pending = 0
            if self._failing:
                self._failing = False
                log.warning(
                    json.dumps({"event": "search_log_recovered", "dir": str(self.directory)})
                )

    def _rotate(self) -> Path | None:
        with self._io:
            try:
                return self._rotate_locked()
            except OSError as exc:
                self._fail(self._pending, exc)
                return None

    def _open(self, now: float) -> None:
        start = now
        path = self.directory / f"{segment_name(start, self.replica)}.jsonl"
        while path.exists() or path.with_suffix(".parquet").exists():  # never reuse a name
            start += 1e-6
            path = self.directory / f"{segment_name(start, self.replica)}.jsonl"
        fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (held open until rotation)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise
        self._file, self._path, self._size, self._day = fh, path, 0, _utc_day(now)

    def _rotate_locked(self) -> Path | None:
        """Flushes the live segment, writes it as Parquet (without tombstoned shoppers), removes it.
        The caller holds ``_io``."""
        if self._file is None or self._path is None:
            return None
        fh, path = self._file, self._path
        try:
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            self._file = self._path = None
            with contextlib.suppress(OSError):
                fh.close()
            raise
        if self._pending:
            self._add("written", self._pending)
            self._pending = 0
        self._file = self._path = None
        try:
            return self._compact_file(path)
        except OSError as exc:
            # the JSON Lines are whole and fsynced: the next writer to start compacts them
            log.error(
                json.dumps(
                    {
                        "event": "search_log_rotate_failed",
                        "segment": path.name,
                        "error": f"{type(exc).__name__}: {exc.strerror or exc}",
                    }
                )
            )
            return None
        finally:
            fh.close()  # the lock goes with it, after the Parquet is in place

    def _compact_file(self, path: Path) -> Path | None:
        """The rows of a JSON Lines segment (less tombstoned shoppers) as its Parquet twin."""
        self._reload_tombstones()
        df = _read_jsonl(path)
        if self._tombstones and self._pz is not None and df.height:
            df = df.filter(pl.Series([not self._is_forgotten(p) for p in df["pseudonym"]]))
        out = path.with_suffix(".parquet")
        if df.height:
            write_segment(out, df)
        path.unlink(missing_ok=True)
        return out if df.height else None

    def compact(self) -> list[Path]:
        """Turns every ``.jsonl`` segment in the folder without a live writer into Parquet
        (what a crash left); run when the writer starts.

        Returns:
            The Parquet segments written.
        """
        out = []
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self._path:
                continue
            twin = path.with_suffix(".parquet")
            with _unlocked(path) as free:
                if not free:
                    continue  # another replica writes it
                if twin.exists():  # a rotation that stopped between its two steps
                    path.unlink(missing_ok=True)
                    continue
                written = self._compact_file(path)
                if written is not None:
                    out.append(written)
        return out

    # -- tombstones -------------------------------------------------------------------------

    def _reload_tombstones(self) -> None:
        if self._pz is None:
            return
        try:
            st = (self.directory / FORGOTTEN_FILE).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._tombstones_stamp:
            self._tombstones_stamp = stamp
            with contextlib.suppress(OSError):
                self._tombstones = read_tombstones(self.directory)

    def _is_forgotten(self, pseudonym: Any) -> bool:
        if not self._tombstones or self._pz is None or not pseudonym:
            return False
        return self._pz.tombstone(str(pseudonym)) in self._tombstones

    # -- counting and failing ---------------------------------------------------------------

    def _add(self, outcome: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self.counts[outcome] += n
        if self._count is not None:
            with contextlib.suppress(Exception):  # metrics never fail the writer
                self._count(outcome, n)

    def _fail(self, rows: int, exc: OSError) -> None:
        """Counts lost rows; logs once per run of failures; drops the live file (retried in 1 s)."""
        self._add("failed", rows)
        self._pending = 0
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        self._file = self._path = None
        self._retry_at = time.monotonic() + 1.0
        if not self._failing:
            self._failing = True
            log.error(
                json.dumps(
                    {
                        "event": "search_log_failed",
                        "dir": str(self.directory),
                        "error": f"{type(exc).__name__}: {exc.strerror or exc}",
                        "note": "searches go on; rows are counted as failed until writing works",
                    }
                )
            )


_CONTROL = object()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@contextlib.contextmanager
def _unlocked(path: Path):
    """Yields True holding ``path``'s lock when no writer holds it (False when one does, or
    the file is gone)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield path.exists()
    finally:
        fh.close()


# -- erasure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetLogSummary:
    """What :func:`forget` did to a log folder.

    Attributes:
        rows: The shopper's rows removed.
        rewritten: Segments rewritten without them (file names).
        pending: Live segments of other replicas, which hold the shopper's rows until their
            writer rotates them (it drops the rows then: the tombstone is in ``forgotten.txt``).
    """

    rows: int
    rewritten: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def forget(
    directory: str | os.PathLike[str],
    pseudonyms: Iterable[str],
    pseudonymizer: Pseudonymizer,
    writer: SearchLogWriter | None = None,
) -> ForgetLogSummary:
    """Removes a shopper's rows from every segment of a search log folder.

    Their tombstone is recorded first (``forgotten.txt``: every writer then drops their rows
    and never writes them again), this process's ``writer`` rotates its live segment, and each
    segment with one of their rows is rewritten without them, atomically (a Parquet segment
    replaced; a ``.jsonl`` without a live writer compacted into Parquet). Removal, not
    unattributability: the rows are gone from the files, their queries and clicks with them.

    Args:
        directory: The log folder.
        pseudonyms: The shopper's pseudonyms (normalised and raw spellings of the id).
        pseudonymizer: The key the log was written with (for the tombstone).
        writer: This process's writer into the folder, if any.

    Raises:
        OSError: The folder cannot be read or written (nothing is claimed done).
    """
    directory = Path(directory)
    wanted = sorted(set(pseudonyms))
    if not directory.is_dir():
        return ForgetLogSummary(0)
    with _folder_lock(directory):  # one erasure at a time: each rewrites what it read
        if writer is not None:
            writer.rotate()  # its rows so far into Parquet, where they are removed and counted
        _add_tombstones(directory, [pseudonymizer.tombstone(p) for p in wanted])
        done = _remove_rows(directory, wanted)
        live = writer.live_name() if writer is not None else None
        if writer is not None and live in done.pending:
            writer.rotate()  # rows of theirs it wrote meanwhile: dropped as it rotates
            done = replace(done, pending=[n for n in done.pending if n != live])
        return done


def _remove_rows(directory: Path, wanted: list[str]) -> ForgetLogSummary:
    rows = 0
    rewritten: list[str] = []
    pending: list[str] = []
    for path in sorted(directory.glob("*.parquet")):
        df = pl.read_parquet(path)
        drop = df["pseudonym"].is_in(wanted).fill_null(False)  # anonymous rows stay
        n = int(drop.sum())
        if n:
            kept = df.filter(~drop)
            write_segment(path, kept) if kept.height else path.unlink()
            rows += n
            rewritten.append(path.name)
    for path in sorted(directory.glob("*.jsonl")):
        with _unlocked(path) as free:
            if not free:
                with contextlib.suppress(FileNotFoundError):  # rotated meanwhile
                    if int(_read_jsonl(path)["pseudonym"].is_in(wanted).sum()):
                        pending.append(path.name)
                continue
            df = _read_jsonl(path)
            drop = df["pseudonym"].is_in(wanted).fill_null(False)
            n = int(drop.sum())
            twin = path.with_suffix(".parquet")
            if n or not twin.exists():
                kept = df.filter(~drop)
                if kept.height:
                    write_segment(twin, kept)
                if n:
                    rows += n
                    rewritten.append(path.name)
            path.unlink(missing_ok=True)
    _sync_dir(directory)
    return ForgetLogSummary(rows, rewritten, pending)


@contextlib.contextmanager
def _folder_lock(directory: Path):
    fd = os.open(directory / ".forget.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _add_tombstones(directory: Path, tombstones: Sequence[str]) -> None:
    from core.io import atomic_write

    have = read_tombstones(directory)
    new = [t for t in tombstones if t not in have]
    if not new:
        return
    text = "".join(f"{t}\n" for t in sorted(have | set(new)))
    atomic_write(directory / FORGOTTEN_FILE, text, encoding="ascii", durable=True)


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
