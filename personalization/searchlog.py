"""The service's own log: what each search served, and what the shopper did with it.

The search service appends one row per ``/search`` it answers (``event = "search"``) and one
row per event posted to ``/events`` (``click``, ``add_to_cart``, ``purchase``, ``view``) to a
**search log**: a folder of files with the columns of :data:`SCHEMA`. Training
(``train personal``), the spelling vocabulary, analytics, suggestions and interleaving reports
read it with :func:`scan`.

Rows carry the shopper's **pseudonym** (:class:`personalization.privacy.Pseudonymizer`),
never the raw id; ``None`` for an anonymous search. Sessions are pseudonymized too.

Files in a log folder:

* ``*.parquet``: closed segments (rotated by size or day), written whole and renamed into
  place, so a reader never sees half a file.
* ``*.jsonl``: the segment being written (one JSON object per line, the same columns); a
  torn last line (a crash mid-write) is skipped by the reader.

This module owns the format (columns, types, file names) and reading; the writer that runs
off the request's hot path lives beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from core.errors import EventLogError
from core.io import atomic_write

if TYPE_CHECKING:
    from personalization.events import Event
    from personalization.privacy import Pseudonymizer

__all__ = [
    "INTERACTIONS",
    "SCHEMA",
    "LogEvents",
    "forgotten_pseudonyms",
    "frame",
    "is_search_log",
    "log_events",
    "log_files",
    "scan",
    "write_segment",
]

#: Tombstones of erased shoppers in a log folder (keyed hashes of pseudonyms, one a line).
FORGOTTEN_FILE = "forgotten.txt"

#: Row kinds besides ``search``: what ``POST /events`` records.
INTERACTIONS = ("view", "click", "add_to_cart", "purchase")

#: The columns of a search log, in order. Search rows fill the search columns; interaction
#: rows fill ``product_id`` and ``position``; the rest are null where they do not apply.
SCHEMA: dict[str, pl.DataType] = {
    # every row
    "event": pl.String(),  # "search" or one of INTERACTIONS
    "timestamp": pl.Float64(),  # epoch seconds, UTC
    "search_id": pl.String(),  # the search this row is (search) or answers (interactions)
    "pseudonym": pl.String(),  # the shopper's pseudonym; null: anonymous
    "session": pl.String(),  # session pseudonym; "" when none
    "replica": pl.String(),  # which service process wrote the row (host:pid)
    # search rows
    "query": pl.String(),  # as typed
    "corrected": pl.String(),  # as searched after spelling correction; null: unchanged
    "filter": pl.String(),  # the filter expression (Filters' text form); null: none
    "sort": pl.String(),  # "field:asc|desc"; null: by relevance
    "offset": pl.Int32(),  # results skipped (the page starts at rank offset + 1)
    "k": pl.Int32(),  # results asked for
    "results": pl.List(pl.String()),  # product ids shown, in order (rank offset + i + 1)
    "scores": pl.List(pl.Float64()),  # final score per shown product
    "relevance": pl.List(pl.Float64()),  # relevance part per shown product
    "personal": pl.List(pl.Float64()),  # personal part per shown product
    "total_candidates": pl.Int32(),  # candidates that matched before paging
    "models": pl.String(),  # JSON object: stage -> model fingerprint
    "rules": pl.List(pl.String()),  # merchandising rule ids applied
    "experiment": pl.String(),  # interleaving experiment name; null: none
    "teams": pl.List(pl.String()),  # per shown product: "A", "B" (interleaved) or null list
    "took_ms": pl.Float64(),  # time to answer, milliseconds
    # interaction rows
    "product_id": pl.String(),
    "position": pl.Int32(),  # 1-based rank shown at, when the client says
}


def log_files(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The segment files named by ``paths`` (files, or folders read for ``*.parquet`` and
    ``*.jsonl``), sorted by name (names start with their UTC start time).

    Raises:
        EventLogError: A path that does not exist, or a file of another format.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
            out.extend(
                sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix == ".parquet"
                    # a .jsonl beside its own .parquet: a rotation caught between its two steps
                    or (p.suffix == ".jsonl" and p.with_suffix(".parquet").name not in names)
                )
            )
        elif path.is_file():
            if path.suffix not in (".parquet", ".jsonl"):
                raise EventLogError(
                    f"{path}: not a search log segment (.parquet or .jsonl); "
                    "give the service's --search-log folder or its files"
                )
            out.append(path)
        else:
            raise EventLogError(f"{path}: no such search log file or folder")
    return sorted(set(out), key=lambda p: (p.name, str(p)))


#: Columns every segment has: a file without them is something else (a catalog, an event log).
REQUIRED = ("event", "timestamp")


def _check_segment(path: Path, names: Iterable[str]) -> None:
    names = set(names)
    missing = [c for c in REQUIRED if c not in names]
    if missing or "user_id" in names:
        what = (
            "an event log (it has user_id)"
            if "user_id" in names
            else (f"not a search log segment (no {', '.join(missing)} column)")
        )
        raise EventLogError(
            f"{path}: {what}; give the service's --search-log folder (which holds only its "
            "segments) or its segment files"
        )


def _read_jsonl(path: Path) -> pl.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # a torn last line: the writer died mid-write
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if rows and isinstance(rows[0], dict):
        _check_segment(path, rows[0].keys())
    return frame(rows)


def frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts with any subset of :data:`SCHEMA`'s columns) as a frame of exactly it."""
    data = {name: [r.get(name) for r in rows] for name in SCHEMA}
    return pl.DataFrame(data, schema=SCHEMA)


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    since: float | None = None,
    until: float | None = None,
) -> pl.LazyFrame:
    """The rows of a search log as one lazy frame of :data:`SCHEMA`.

    Args:
        paths: Log folders or segment files.
        since: Keep rows with ``timestamp >= since`` (epoch seconds); None: from the start.
        until: Keep rows with ``timestamp < until``; None: to the end.

    Returns:
        A ``polars.LazyFrame`` (empty, with the schema, when there are no files).

    Raises:
        EventLogError: A missing path or a file that is not a segment.
    """
    parts: list[pl.LazyFrame] = []
    for path in log_files(paths):
        if path.suffix == ".parquet":
            _check_segment(path, pl.read_parquet_schema(path).keys())
            # a segment of an older or newer version: its missing columns are null, extra
            # ones are not read
            parts.append(
                pl.scan_parquet(
                    path, schema=SCHEMA, missing_columns="insert", extra_columns="ignore"
                )
            )
        else:
            parts.append(_read_jsonl(path).lazy())
    lf = pl.concat(parts, how="vertical") if parts else frame([]).lazy()
    if since is not None:
        lf = lf.filter(pl.col("timestamp") >= since)
    if until is not None:
        lf = lf.filter(pl.col("timestamp") < until)
    return lf


def write_segment(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]] | pl.DataFrame
) -> Path:
    """Write rows (dicts, or a frame of :data:`SCHEMA`) as one closed (Parquet) segment,
    atomically and durably; what tests and simulators use to make a log, and what the writer
    does when it rotates.

    Returns:
        The path written.
    """
    path = Path(path)
    df = rows.select(list(SCHEMA)).cast(SCHEMA) if isinstance(rows, pl.DataFrame) else frame(rows)
    atomic_write(path, lambda tmp: df.write_parquet(tmp, compression="zstd"), durable=True)
    return path


def is_search_log(path: str | os.PathLike[str]) -> bool:
    """True for a search log (a folder, or a segment file with a ``pseudonym`` column and no
    ``user_id``); False for an event log file (``personalization.events``)."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.suffix == ".parquet":
        try:
            names = pl.read_parquet_schema(path).keys()
        except Exception:  # not Parquet at all: the event log reader says why
            return False
        return "pseudonym" in names and "user_id" not in names
    if path.suffix == ".jsonl":
        try:
            with open(path, encoding="utf-8") as fh:
                first = json.loads(fh.readline() or "{}")
        except (OSError, ValueError):
            return False
        return isinstance(first, dict) and "pseudonym" in first and "user_id" not in first
    return False


@dataclass(frozen=True)
class LogEvents:
    """A search log read as behaviour events (what training and the vocabulary take).

    Attributes:
        events: One :class:`personalization.events.Event` per search row of a known shopper
            and per interaction row, in time order. ``user_id`` holds the **pseudonym** (the
            log has no raw id), ``results`` the page shown and ``offset`` the ranks before it
            (``results[i]`` was at rank ``offset + i + 1``).
        searches: Search rows read.
        anonymous_searches: Search rows without a shopper (left out: nothing links them to a
            profile, and their clicks cannot be posted without a ``user_id``).
        interactions: Interaction rows read (duplicates of a retried post counted once).
        forgotten: Rows of shoppers tombstoned in the folder's ``forgotten.txt`` (left out).
    """

    events: list[Event] = field(default_factory=list)
    searches: int = 0
    anonymous_searches: int = 0
    interactions: int = 0
    forgotten: int = 0


def log_events(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    since: float | None = None,
    until: float | None = None,
    pseudonymizer: Pseudonymizer | None = None,
    kinds: Sequence[str] | None = None,
) -> LogEvents:
    """The rows of a search log as :class:`~personalization.events.Event` objects.

    Search rows become ``search`` events with their shown page (``results``, ``offset``);
    interaction rows become ``click``/``add_to_cart``/``purchase``/``view`` events. An
    interaction that names a logged search of the same shopper by ``search_id`` takes that
    search's session (the page need not send the session with the click), so
    :func:`personalization.impressions.impressions_from_events` attributes it by the id.

    Args:
        paths: Log folders or segment files.
        since: Rows at or after this epoch second; None: from the start.
        until: Rows before it; None: to the end.
        pseudonymizer: The key the log was written with: with it, the rows of shoppers
            tombstoned in a folder's ``forgotten.txt`` (``forget-user``) are left out even
            from a segment not rewritten yet (another replica's live one).
        kinds: Event types to keep (default: all).

    Raises:
        EventLogError: A missing path or a file that is not a segment.
    """
    from personalization.events import Event

    df = scan(paths, since, until).collect()
    if kinds is not None:
        df = df.filter(pl.col("event").is_in(list(kinds)))
    forgotten = 0
    gone = forgotten_pseudonyms(paths, pseudonymizer, df.lazy())
    if gone:
        drop = df["pseudonym"].is_in(gone).fill_null(False)
        forgotten = int(drop.sum())
        df = df.filter(~drop)
    is_search = pl.col("event") == "search"
    searches = df.filter(is_search)
    anonymous = int(searches["pseudonym"].is_null().sum())
    searches = searches.filter(pl.col("pseudonym").is_not_null())
    acts = (
        df.filter(~is_search & pl.col("pseudonym").is_not_null())
        .unique(
            ["event", "pseudonym", "session", "timestamp", "product_id", "search_id"],
            keep="first",
            maintain_order=True,
        )
        .join(
            searches.select(
                pl.col("search_id"),
                pl.col("pseudonym"),
                pl.col("session").alias("search_session"),
                pl.col("timestamp").alias("search_time"),
            ).unique(["search_id", "pseudonym"], keep="first"),
            on=["search_id", "pseudonym"],
            how="left",
        )
        .with_columns(
            pl.coalesce("search_session", "session").alias("session"),
            # the server stamped the search, the page the click: a click on a search cannot
            # come before it, so a device clock running behind counts from the search's time
            pl.max_horizontal("timestamp", "search_time").alias("timestamp"),
        )
    )
    events = [
        Event(
            user_id=r["pseudonym"],
            timestamp=float(r["timestamp"]),
            session_id=r["session"] or "",
            event="search",
            query=r["query"] or "",
            search_id=r["search_id"],
            results=tuple(r["results"]) if r["results"] is not None else None,
            offset=int(r["offset"] or 0),
        )
        for r in searches.iter_rows(named=True)
    ]
    events += [
        Event(
            user_id=r["pseudonym"],
            timestamp=float(r["timestamp"]),
            session_id=r["session"] or "",
            event=r["event"],
            product_id=r["product_id"],
            position=r["position"],
            search_id=r["search_id"],
        )
        for r in acts.iter_rows(named=True)
        if r["event"] in INTERACTIONS and r["product_id"] is not None
    ]
    events.sort(key=lambda e: (e.timestamp, e.event != "search"))
    return LogEvents(events, searches.height + anonymous, anonymous, acts.height, forgotten)


def forgotten_pseudonyms(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    pseudonymizer: Pseudonymizer | None,
    log: pl.LazyFrame | None = None,
) -> list[str]:
    """The pseudonyms of a log whose tombstone its folders' ``forgotten.txt`` holds: the rows
    of shoppers ``forget-user`` erased that a segment not rewritten yet (another replica's live
    one) still has. What every reader of the log leaves out.

    Args:
        paths: Log folders or segment files (a segment's folder is read for tombstones).
        pseudonymizer: The key the log was written with; None: none can be matched (``[]``).
        log: The rows to look in; None: :func:`scan` of ``paths``.

    Returns:
        The pseudonyms, sorted (empty without tombstones).
    """
    if pseudonymizer is None:
        return []
    tombstones = _tombstones(paths)
    if not tombstones:
        return []
    rows = scan(paths) if log is None else log
    seen = rows.select(pl.col("pseudonym").drop_nulls().unique()).collect().to_series()
    return sorted(p for p in seen.to_list() if pseudonymizer.tombstone(p) in tombstones)


def _tombstones(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> set[str]:
    """The tombstones of the folders among ``paths`` (and of the folders of segment files)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    folders = {Path(p) if Path(p).is_dir() else Path(p).parent for p in paths}
    return {t for folder in folders for t in read_tombstones(folder)}


def read_tombstones(directory: str | os.PathLike[str]) -> frozenset[str]:
    """The tombstones in ``directory/forgotten.txt`` (empty when there is none)."""
    try:
        text = (Path(directory) / FORGOTTEN_FILE).read_text(encoding="ascii")
    except FileNotFoundError:
        return frozenset()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())
