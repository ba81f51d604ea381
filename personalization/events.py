"""The event log format: read it validated, in batches, from a file or from records.

An event log is a **JSON Lines** (``.jsonl``/``.ndjson``/``.json``: one object per line) or
**Parquet** (``.parquet``/``.pq``) file with these columns:

============  ========  ===================================================================
column        required  meaning
============  ========  ===================================================================
user_id       yes       Raw user id (text; integers accepted). Pseudonymised on ingest and
                        never stored (see :mod:`personalization.privacy`).
timestamp     yes       ISO-8601 text *with* a timezone (``2024-05-01T10:00:00Z``,
                        ``...+02:00``), epoch seconds or epoch milliseconds (number or
                        numeric text; values >= 1e11 are milliseconds), or a Parquet
                        datetime column (a datetime without timezone is taken as UTC).
                        Normalised to float epoch seconds, UTC.
event         yes       One of ``search``, ``view``, ``click``, ``add_to_cart``,
                        ``purchase``.
session_id    no        Session id (text); ``""`` when absent.
query         no        Search text; required on ``search`` events.
product_id    no        Product id; required on every event but ``search``.
position      no        Rank (1-based integer) at which the product was shown, or null.
search_id     no        Id of a search. On ``search`` events it names the search; on
                        ``click``/``add_to_cart``/``purchase`` events it says which search
                        the interaction answers (without it, the shopper's latest search in
                        the session that showed the product is taken).
results       no        On ``search`` events: the product ids shown, in order (the page the
                        shopper saw: an *impression* list; a JSON array, or a Parquet list
                        column). Only searches with results can teach the ranker; without
                        them a log still feeds profiles.
============  ========  ===================================================================

Reference points for the shape: GA4's ``view_item_list`` / ``select_item`` and Metarank's
``ranking`` / ``interaction`` events. A product-page ``view`` is a behaviour signal for
profiles, never an examination label.

A timestamp more than :data:`MAX_CLOCK_SKEW_S` (5 minutes) after the time the log is read,
or before :data:`EARLIEST_TIMESTAMP` (2000-01-01), is rejected: one event from a device
with a wrong clock must not pass for the shopper's latest interest.

Other columns are ignored. Every row is validated; a bad row becomes a
:class:`~core.tables.Reject` (``line`` = JSONL line number or 1-based Parquet row), never
an exception and never a silently used event. Reject reasons never contain the user id.
Problems with the file as a whole (missing, unreadable, not JSON Lines, missing required
column) raise :class:`~core.errors.EventLogError` with a one-line message naming the file.
The file reading itself is :mod:`core.tables`', shared with the catalog reader.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from core import tables
from core.errors import EventLogError, check_batch_size
from core.tables import Invalid, Raw, Reject, short

__all__ = [
    "COLUMNS",
    "EVENT_TYPES",
    "PRODUCT_EVENTS",
    "REQUIRED_COLUMNS",
    "Event",
    "EventBatch",
    "EventLogError",
    "Reject",
    "detect_format",
    "parse_timestamp",
    "read_events",
    "validate_records",
]

EVENT_TYPES = ("search", "view", "click", "add_to_cart", "purchase")
#: Events about a product (every type but ``search``).
PRODUCT_EVENTS = ("view", "click", "add_to_cart", "purchase")
COLUMNS = (
    "user_id",
    "timestamp",
    "session_id",
    "event",
    "query",
    "product_id",
    "position",
    "search_id",
    "results",
)
#: Most product ids one impression list may hold.
MAX_RESULTS = 1000
REQUIRED_COLUMNS = ("user_id", "timestamp", "event")
#: Epoch numbers at or above this are milliseconds (1e11 s is year 5138; 1e11 ms is 1973).
MS_THRESHOLD = 1e11
#: Epoch numbers at or above this are rejected (not seconds nor milliseconds).
MAX_EPOCH_MS = 1e14
#: How far past the reading machine's clock an event may be stamped (device clocks drift).
MAX_CLOCK_SKEW_S = 300.0
#: Events stamped before this (2000-01-01T00:00:00Z) are rejected: a clock that was unset.
EARLIEST_TIMESTAMP = 946684800.0
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_EVENT_SET = frozenset(EVENT_TYPES)

KnownProducts = Callable[[str], bool] | Container[str]


@dataclass(frozen=True)
class Event:
    """One validated behaviour event.

    Attributes:
        user_id: Raw user id (kept out of ``repr``; never stored by this package).
        timestamp: Epoch seconds, UTC.
        session_id: Session id, ``""`` when unknown.
        event: One of :data:`EVENT_TYPES`.
        query: Search text (always set on ``search`` events) or None.
        product_id: Product id (always set on product events) or None.
        position: 1-based rank the product was shown at, or None.
        search_id: The search this event is (``search``) or answers (interactions), or None.
        results: On ``search`` events, the product ids shown in order, or None.
        offset: On ``search`` events, the ranks before the shown page: ``results[i]`` was shown
            at rank ``offset + i + 1`` (a second page of 10 has offset 10). The service's
            search log records it; an event log's searches are first pages (0).
    """

    user_id: str = field(repr=False)
    timestamp: float
    session_id: str
    event: str
    query: str | None = None
    product_id: str | None = None
    position: int | None = None
    search_id: str | None = None
    results: tuple[str, ...] | None = None
    offset: int = 0


@dataclass(frozen=True)
class EventBatch:
    """Validated events and rejected rows from one slice of the log."""

    events: list[Event] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return ``"parquet"`` or ``"jsonl"`` from the file extension.

    Raises:
        EventLogError: The extension is not a supported one.
    """
    return tables.detect_format(path, _EXTENSIONS, "event log", EventLogError)


def read_events(
    path: str | os.PathLike[str],
    known_products: KnownProducts | None = None,
    batch_size: int = 10000,
    now: float | None = None,
) -> Iterator[EventBatch]:
    """Stream an event log as validated batches.

    Args:
        path: A ``.jsonl``/``.ndjson``/``.json`` or ``.parquet``/``.pq`` file.
        known_products: When given (a predicate or a set of ids), events naming another
            product are rejected with ``"unknown product_id"``.
        batch_size: Rows read per batch (empty batches are skipped).
        now: The present, epoch seconds (default: the clock when called); events more
            than :data:`MAX_CLOCK_SKEW_S` after it are rejected.

    Yields:
        One :class:`EventBatch` per slice of the file.

    Raises:
        EventLogError: Unsupported extension, missing or unreadable file (at call time);
            unparseable content or a missing required column (while iterating).
    """
    path = Path(path)
    fmt = detect_format(path)
    tables.check_file(path, EventLogError)
    check_batch_size(batch_size)
    rows = (
        tables.jsonl_rows(
            path,
            batch_size,
            "utf8",
            error=EventLogError,
            check_columns=_check_columns,
            encoding_hint=False,
        )
        if fmt == "jsonl"
        else tables.parquet_rows(
            path, batch_size, error=EventLogError, check_columns=_check_columns, columns=COLUMNS
        )
    )
    validate = _validator(known_products, time.time() if now is None else float(now))

    def to_batch(raw: Raw) -> EventBatch | None:
        events, rejects = validate(raw)
        return EventBatch(events, rejects) if events or rejects else None

    return tables.validate_batches(rows, to_batch)


def validate_records(
    records: Iterable[Any], known_products: KnownProducts | None = None
) -> EventBatch:
    """Validate events given as objects (an HTTP request's batch) with the file reader's rules.

    Each record is checked exactly as a row of an event log (:func:`read_events`); a record
    that is not an object is rejected too. Nothing valid is dropped because a neighbour was
    bad.

    Args:
        records: One mapping per event, with :data:`COLUMNS` keys.
        known_products: As in :func:`read_events`.

    Returns:
        The valid events, and a :class:`~core.tables.Reject` per bad record whose
        ``line`` is the record's 0-based index in ``records``.
    """
    raw: Raw = [
        (i, dict(r) if isinstance(r, Mapping) else "event is not a JSON object")
        for i, r in enumerate(records)
    ]
    events, rejects = _validator(known_products, time.time())(raw)
    return EventBatch(events, rejects)


def parse_timestamp(value: Any) -> float:
    """Normalise a timestamp to float epoch seconds, UTC.

    Accepts epoch seconds or milliseconds (numbers or numeric text; values >=
    :data:`MS_THRESHOLD` are milliseconds), ISO-8601 text with a timezone, and ``datetime``
    objects (naive ones are taken as UTC, as Parquet stores them).

    Raises:
        ValueError: With a reject reason when the value is missing or not a timestamp.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("missing timestamp")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        seconds = value.timestamp()
    elif isinstance(value, date):
        raise ValueError(f"timestamp {value.isoformat()} is a date without a time")
    elif isinstance(value, bool):
        raise ValueError(f"bad timestamp {value!r}")
    elif isinstance(value, (int, float)):
        seconds = _epoch(float(value), value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            seconds = _iso(text)
        else:
            seconds = _epoch(number, text)
    else:
        raise ValueError(f"bad timestamp of type {type(value).__name__}")
    if seconds < 0:
        raise ValueError(f"timestamp {short(str(value))!r} is before 1970")
    return seconds


def _epoch(number: float, shown: Any) -> float:
    if not math.isfinite(number):
        raise ValueError(f"bad timestamp {short(str(shown))!r}")
    if abs(number) >= MAX_EPOCH_MS:
        raise ValueError(
            f"timestamp {short(str(shown))!r} is out of range "
            "(expected epoch seconds or milliseconds)"
        )
    return number / 1000.0 if abs(number) >= MS_THRESHOLD else number


def _iso(text: str) -> float:
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"bad timestamp {short(text)!r} (expected ISO-8601 with a timezone, "
            "or epoch seconds/milliseconds)"
        ) from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {short(text)!r} has no timezone (add Z or +HH:MM)")
    return parsed.timestamp()


def _check_columns(path: Path, columns: Iterable[str]) -> None:
    tables.check_columns(path, columns, REQUIRED_COLUMNS, EventLogError)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _validator(
    known_products: KnownProducts | None, now: float
) -> Callable[[Raw], tuple[list[Event], list[Reject]]]:
    """Validates batches of raw rows into events and rejects, as of ``now`` (epoch seconds)."""
    known: Callable[[str], bool] | None
    if known_products is None or callable(known_products):
        known = known_products
    else:
        known = known_products.__contains__
    latest = now + MAX_CLOCK_SKEW_S

    def product_id(record: dict[str, Any]) -> str | None:
        return _text(record.get("product_id"), "product_id")

    def event(line: int, record: dict[str, Any], pid: str | None) -> Event:
        return _event(record, pid, known, latest)

    return lambda raw: tables.validate_rows(raw, product_id, event)


def _event(
    record: dict[str, Any],
    product_id: str | None,
    known: Callable[[str], bool] | None,
    latest: float,
) -> Event:
    kind = record.get("event")
    kind = kind.strip().lower() if isinstance(kind, str) else kind
    if kind is None or kind == "":
        raise Invalid("missing event")
    if kind not in _EVENT_SET:
        raise Invalid(
            f"unknown event type {short(str(kind))!r} (expected one of {', '.join(EVENT_TYPES)})"
        )
    user_id = _text(record.get("user_id"), "user_id")
    if user_id is None:
        raise Invalid("missing user_id")
    try:
        timestamp = parse_timestamp(record.get("timestamp"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if timestamp > latest:
        raise Invalid(
            f"timestamp {_iso_utc(timestamp)} is in the future (more than "
            f"{MAX_CLOCK_SKEW_S / 60:g} minutes after now): check the clock that logged it"
        )
    if timestamp < EARLIEST_TIMESTAMP:
        raise Invalid(
            f"timestamp {_iso_utc(timestamp)} is before 2000-01-01: check the clock that logged it"
        )
    query = _text(record.get("query"), "query")
    if kind == "search":
        if query is None:
            raise Invalid("missing query (required on search events)")
    elif product_id is None:
        raise Invalid(f"missing product_id (required on {kind} events)")
    if product_id is not None and known is not None and not known(product_id):
        raise Invalid("unknown product_id")
    return Event(
        user_id=user_id,
        timestamp=timestamp,
        session_id=_text(record.get("session_id"), "session_id") or "",
        event=kind,
        query=query,
        product_id=product_id,
        position=_position(record.get("position")),
        search_id=_text(record.get("search_id"), "search_id"),
        results=_results(record.get("results"), kind),
    )


def _text(value: Any, name: str) -> str | None:
    """Strip a text field; None when absent or blank. Integers are accepted as text."""
    return tables.text_value(value, name, whole_floats_only=True)


def _results(value: Any, kind: str) -> tuple[str, ...] | None:
    """An impression list: product ids shown, in order (a list, or a JSON array as text)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind != "search":
        raise Invalid(f"results on a {kind} event (only search events carry the shown list)")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise Invalid("results is not a JSON array of product ids") from None
    if hasattr(value, "to_list"):  # a Parquet list cell may arrive as a Series
        value = value.to_list()
    if not isinstance(value, (list, tuple)):
        raise Invalid("results is not a list of product ids")
    if len(value) > MAX_RESULTS:
        raise Invalid(f"results holds {len(value)} products (at most {MAX_RESULTS})")
    out = []
    for i, pid in enumerate(value, start=1):
        if isinstance(pid, float) and pid.is_integer():
            pid = int(pid)
        if pid is None or isinstance(pid, (dict, list, bool, float)) or not str(pid).strip():
            raise Invalid(f"results[{i}] is not a product id")
        out.append(str(pid).strip())
    return tuple(out)


def _position(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    position: int | None = None
    if isinstance(value, bool):
        position = None
    elif isinstance(value, int):
        position = value
    elif isinstance(value, float) and value.is_integer():
        position = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        position = int(value.strip())
    if position is None or position < 1:
        raise Invalid(f"bad position {short(str(value))!r} (expected an integer >= 1 or null)")
    return position


def _iso_utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
