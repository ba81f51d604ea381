"""Reading a table file row by row, with a reject per bad row: what every file reader shares.

The catalog reader (:mod:`catalog.reader`) and the event log reader
(:mod:`personalization.events`) read the same way, through this module:

1. :func:`detect_format` from the extension, :func:`check_file` (exists, a file, readable);
2. raw rows from :func:`jsonl_rows` or :func:`parquet_rows`: batches of ``(line, record)``
   where ``record`` is a dict of the values as read, or a string saying why the line could not
   be turned into one; the first batch's columns are checked (:func:`check_columns`);
3. :func:`validate_rows` turns each record into the reader's item, or a :class:`Reject` when a
   field raises :class:`Invalid` (never an exception out of the reader);
   :func:`validate_batches` does it batch by batch and closes the source when the caller stops.

:func:`frames` streams any polars scan's batches (the catalog's CSV reader uses it too).

Problems with the file as a whole raise the reader's own :class:`~core.errors.ShopsearchError`
subclass (``error``), with one line naming the file. :func:`write_rejects` writes the rejects
as CSV for the user to fix.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from core.errors import ShopsearchError, first_line

#: ``encoding`` value that decodes UTF-8 and replaces bad bytes with U+FFFD.
LOSSY = "utf8-lossy"
#: Deepest nesting of objects/lists a row's values may have (deeper JSON lines are rejected).
MAX_DEPTH = 8
#: Longest file-error detail kept in a message.
DETAIL_CHARS = 160

#: One batch of raw rows: ``(line, record or the reason it is not one)``.
Raw = list[tuple[int, "dict[str, Any] | str"]]
#: Checks a file's columns (or the first batch's keys): ``(path, names) -> None`` or raises.
ColumnCheck = Callable[[Path, Iterable[str]], None]

T = TypeVar("T")
B = TypeVar("B")


@dataclass(frozen=True)
class Reject:
    """A row that failed validation.

    Attributes:
        line: CSV: physical line (header is line 1); JSONL: line number; Parquet: row number.
            All 1-based (records validated from memory: their 0-based index).
        product_id: The row's product id when it had a usable one, else None.
        reason: Short human explanation, e.g. ``"missing title"``.
    """

    line: int
    product_id: str | None
    reason: str


class Invalid(Exception):
    """A field failed validation; the message is the reject reason."""


def short(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters (with ``...``), to quote a value in a reason."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nonfinite(value: float) -> str:
    """``"NaN"`` or ``"infinite"``: how a reason names a non-finite number."""
    return "NaN" if math.isnan(value) else "infinite"


def text_value(
    value: Any,
    name: str,
    *,
    clean: Callable[[str], str] = str.strip,
    whole_floats_only: bool = False,
) -> str | None:
    """A text field: ``clean(str(value))``, None when absent or blank. Numbers count as text.

    Args:
        value: The value as read.
        name: The field, for the reason.
        clean: Turns the text into what is kept (default: surrounding spaces stripped).
        whole_floats_only: Accept a float only when it is a whole number (read as an integer:
            ``12.0`` -> ``"12"``), as ids read from JSON may be; otherwise any finite float.

    Raises:
        Invalid: An object, list or boolean, or a float that is not accepted.
    """
    if value is None:
        return None
    if isinstance(value, float):
        if whole_floats_only:
            if not value.is_integer():
                raise Invalid(f"{name} is not text")
            value = int(value)
        elif not math.isfinite(value):
            raise Invalid(f"{name} is {nonfinite(value)}, not text")
    if isinstance(value, dict | list | bool):
        raise Invalid(f"{name} is not text")
    text = clean(str(value))
    return text or None


def detect_format(
    path: str | os.PathLike[str],
    extensions: Mapping[str, str],
    what: str,
    error: type[ShopsearchError],
) -> str:
    """The format ``extensions`` maps the file's extension to.

    Args:
        path: The file.
        extensions: Lower-case extension (with the dot) -> format name.
        what: What the file is, for the message (``"catalog"``, ``"event log"``).
        error: The reader's file-level error.

    Raises:
        ShopsearchError: ``error``, for an extension that is not in ``extensions``.
    """
    suffix = Path(path).suffix.lower()
    fmt = extensions.get(suffix)
    if fmt is None:
        shown = f"extension '{suffix}'" if suffix else "no extension"
        raise error(
            f"{path}: cannot tell the {what} format from {shown}; "
            f"use one of {', '.join(extensions)}"
        )
    return fmt


def check_file(path: Path, error: type[ShopsearchError]) -> None:
    """Refuses a path that is missing, not a regular file, or not readable (``error``)."""
    if not path.exists():
        raise error(f"{path}: no such file")
    if not path.is_file():
        raise error(f"{path}: not a regular file (is it a directory?)")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: permission denied")


def check_columns(
    path: Path,
    columns: Iterable[str],
    required: Sequence[str],
    error: type[ShopsearchError],
    separator: str | None = None,
) -> None:
    """Refuses a file without one of the ``required`` columns (``error``, naming what it has).

    With a CSV ``separator``, a single column holding another separator says so (the file was
    probably written with that one).
    """
    columns = list(columns)
    for name in required:
        if name not in columns:
            found = ", ".join(columns) if columns else "none"
            hint = ""
            if separator and len(columns) == 1:
                other = next((c for c in ";\t|," if c != separator and c in columns[0]), None)
                if other:
                    hint = f"; the file seems separated by {other!r}, expected {separator!r}"
            raise error(f"{path}: missing required column '{name}' (columns found: {found}){hint}")


def jsonl_rows(
    path: Path,
    batch_size: int,
    codec: str,
    *,
    error: type[ShopsearchError],
    check_columns: ColumnCheck,
    encoding_hint: bool = True,
) -> Generator[Raw, None, None]:
    """A JSON Lines file as batches of ``(line number, object or reason it is bad)``.

    Python's :mod:`json`, not ``polars.scan_ndjson``, which fails the whole file on one
    malformed line, skips blank lines (so row numbers stop matching line numbers) and needs a
    full-file schema pass for a heterogeneous column. A BOM and blank lines are skipped, a JSON
    array or pretty-printed JSON is refused as a whole, a bad line becomes a reason (never an
    exception), and the first batch's keys are checked. Lines are split on ``\\n`` bytes, so
    the encoding must be ASCII-compatible (UTF-8, latin-1, cp1252 ...; not UTF-16).

    Args:
        path: The file.
        batch_size: Lines per batch.
        codec: ``utf8``, :data:`LOSSY` or a Python codec name.
        error: The file-level error raised.
        check_columns: Checks the keys seen.
        encoding_hint: Say how to pass another encoding when a line cannot be decoded.

    Raises:
        ShopsearchError: ``error``, for a file that cannot be read as JSON Lines.
    """
    python_codec = "utf-8" if codec in ("utf8", LOSSY) else codec
    errors = "replace" if codec == LOSSY else "strict"
    shown = python_codec if encoding_hint else python_codec.upper()
    checked = False
    first = True
    out: Raw = []

    def check(rows: Raw) -> bool:
        keys: dict[str, None] = {}
        for _, record in rows:
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
        if not keys:
            return False
        check_columns(path, keys)
        return True

    try:
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode(python_codec, errors)
                except UnicodeDecodeError:
                    hint = (
                        "; pass the file's encoding (e.g. encoding='latin-1'), or "
                        "encoding='utf8-lossy'"
                        if encoding_hint
                        else ""
                    )
                    raise error(f"{path}: line {number} is not valid {shown} text{hint}") from None
                if number == 1:
                    text = text.removeprefix("\ufeff")
                text = text.strip()
                if not text:
                    continue
                if first and (text.startswith("[") or text == "{"):
                    shape = "a JSON array" if text.startswith("[") else "pretty-printed JSON"
                    raise error(
                        f"{path}: looks like {shape}; write one JSON object per line (JSON Lines)"
                    )
                first = False
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    out.append((number, f"line is not valid JSON ({first_line(exc, 80)})"))
                except RecursionError:
                    out.append((number, f"line is nested deeper than {MAX_DEPTH} levels"))
                else:
                    if isinstance(record, dict):
                        out.append((number, record))
                    else:
                        out.append((number, "line is not a JSON object"))
                if len(out) >= batch_size:
                    checked = checked or check(out)
                    yield out
                    out = []
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({first_line(exc, DETAIL_CHARS)})") from None
    if out:
        if not checked:
            check(out)
        yield out


def parquet_rows(
    path: Path,
    batch_size: int,
    *,
    error: type[ShopsearchError],
    check_columns: ColumnCheck,
    columns: Sequence[str] | None = None,
) -> Generator[Raw, None, None]:
    """A Parquet file as batches of ``(1-based row number, record)``, streamed.

    Args:
        path: The file.
        batch_size: Rows per batch.
        error: The file-level error raised.
        check_columns: Checks the file's columns.
        columns: Read only these of the file's columns (default: all).

    Raises:
        ShopsearchError: ``error``, for a file that is not readable Parquet.
    """
    try:
        lf = pl.scan_parquet(path, glob=False)
        names = lf.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = first_line(exc, DETAIL_CHARS)
        raise error(f"{path}: not a readable Parquet file ({detail})") from None
    check_columns(path, names)
    if columns is not None:
        lf = lf.select([c for c in columns if c in names])
    row = 1

    def unreadable(exc: BaseException) -> ShopsearchError:
        return error(f"{path}: not a readable Parquet file ({first_line(exc, DETAIL_CHARS)})")

    for frame in frames(lf, batch_size, unreadable):
        out: Raw = []
        for record in frame.iter_rows(named=True):
            out.append((row, record))
            row += 1
        yield out


def frames(
    lf: pl.LazyFrame, batch_size: int, error: Callable[[BaseException], Exception]
) -> Iterator[pl.DataFrame]:
    """A polars scan's batches, streamed; a polars or OS error while reading is ``error(exc)``."""
    batches = iter(lf.collect_batches(chunk_size=batch_size))
    while True:
        try:
            frame = next(batches)
        except StopIteration:
            return
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise error(exc) from None
        yield frame


def validate_rows(
    raw: Raw,
    row_id: Callable[[dict[str, Any]], str | None],
    build: Callable[[int, dict[str, Any], str | None], T],
) -> tuple[list[T], list[Reject]]:
    """Each record of a batch as an item, or a :class:`Reject` with the reason.

    Args:
        raw: A batch of raw rows.
        row_id: The record's product id (None when it has none); may raise :class:`Invalid`.
        build: ``(line, record, product id) -> item``; raises :class:`Invalid` for a bad field.

    Returns:
        (the items, the rejects), each in row order.
    """
    items: list[T] = []
    rejects: list[Reject] = []
    for line, record in raw:
        if isinstance(record, str):
            rejects.append(Reject(line, None, record))
            continue
        product_id: str | None = None
        try:
            product_id = row_id(record)
            items.append(build(line, record, product_id))
        except Invalid as exc:
            rejects.append(Reject(line, product_id, str(exc)))
    return items, rejects


def validate_batches(
    rows: Generator[Raw, None, None], to_batch: Callable[[Raw], B | None]
) -> Iterator[B]:
    """The batches ``to_batch`` makes of the raw batches (None: nothing in it, skipped).

    The source is closed when iteration ends, also early: polars scans and temporary files are
    released when the caller stops.
    """
    try:
        for raw in rows:
            batch = to_batch(raw)
            if batch is not None:
                yield batch
    finally:
        rows.close()


def write_rejects(rejects: Iterable[Reject], path: str | os.PathLike[str]) -> int:
    """Write rejects as CSV with columns ``line,product_id,reason``.

    Args:
        rejects: Any iterable of :class:`Reject` (consumed once).
        path: Output file; parent directories are created.

    Returns:
        The number of rejects written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "product_id", "reason"])
        for reject in rejects:
            writer.writerow([reject.line, reject.product_id or "", reject.reason])
            count += 1
    return count
