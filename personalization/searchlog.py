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
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import EventLogError
from core.io import atomic_write

__all__ = [
    "INTERACTIONS",
    "SCHEMA",
    "frame",
    "log_files",
    "scan",
    "write_segment",
]

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
            out.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".jsonl"))
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
            parts.append(pl.scan_parquet(path, schema=SCHEMA))
        else:
            parts.append(_read_jsonl(path).lazy())
    lf = pl.concat(parts, how="vertical") if parts else frame([]).lazy()
    if since is not None:
        lf = lf.filter(pl.col("timestamp") >= since)
    if until is not None:
        lf = lf.filter(pl.col("timestamp") < until)
    return lf


def write_segment(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows as one closed (Parquet) segment, atomically; what tests and simulators use
    to make a log, and what the writer does when it rotates.

    Returns:
        The path written.
    """
    path = Path(path)
    df = frame(rows)
    atomic_write(path, lambda tmp: df.write_parquet(tmp, compression="zstd"), durable=True)
    return path
