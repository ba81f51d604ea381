"""Read and validate a catalog file lazily, in batches of :class:`~catalog.schema.Product`.

Supported formats (chosen from the file extension, see :func:`detect_format`):

* **CSV/TSV** - scanned lazily with polars, every column read as a string
  (``infer_schema=False``) so bad values reach validation instead of being coerced away.
  ``attributes`` is a JSON object in a string. Line numbers are physical lines
  (header = line 1), counting newlines inside quoted fields.
* **JSON Lines** - read line by line with :mod:`json`, not polars: ``scan_ndjson``
  fails the whole file on one malformed line, skips blank lines (so row numbers stop
  matching line numbers), and needs a full-file schema pass to keep a heterogeneous
  ``attributes`` value (objects here, a string or a list there) instead of erroring.
  Lines are split on ``\n`` bytes, so the encoding must be ASCII-compatible (UTF-8,
  latin-1, cp1252, ...; not UTF-16).
* **Parquet** - scanned lazily with polars; ``attributes`` may be a JSON string, a struct
  or a map column.

Every row goes through the same validation (:class:`_Validator`); a bad row becomes a
:class:`~core.tables.Reject`, never an exception. The JSON Lines and Parquet readers and the
rejects are :mod:`core.tables`', shared with the event log reader. Problems with the file as
a whole (missing, not parseable, wrong encoding, missing required column) raise
:class:`~core.errors.CatalogError` with a one-line message. Format, path and encoding are checked when :func:`read_catalog` is
called; problems inside the file surface while iterating (possibly after some batches).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import math
import os
import re
import tempfile
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl

from catalog.fields import FieldSchema
from catalog.schema import (
    KNOWN_COLUMNS,
    RENAMED_PREFIX,
    Product,
    clean_text,
    is_reserved_column,
    normalize_category,
)
from core import tables
from core.errors import CatalogError, check_batch_size, first_line
from core.tables import (
    LOSSY,
    MAX_DEPTH,
    Invalid,
    Raw,
    Reject,
    nonfinite,
    short,
    write_rejects,
)

__all__ = [
    "MAX_DEPTH",
    "REQUIRED_COLUMNS",
    "CatalogBatch",
    "CatalogError",
    "Limits",
    "Reject",
    "detect_format",
    "read_catalog",
    "write_rejects",
]

REQUIRED_COLUMNS = ("product_id", "title")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})
_TRANSCODE_CHUNK = 1 << 20
_INT_RANGE = (-(2**63), 2**63 - 1)  # what the store keeps as an integer


@dataclass(frozen=True)
class CatalogBatch:
    """Validated products, rejected rows and warnings from one slice of the file."""

    products: list[Product] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Length limits applied during validation.

    Attributes:
        max_title_chars: Longer titles are truncated (with a warning).
        max_description_chars: Longer descriptions are truncated (with a warning).
        max_id_chars: Longer ids are rejected, never truncated (truncation could collide).
        max_value_chars: Longer brand, category, attribute or extra-column text rejects
            the row.
    """

    max_title_chars: int = 300
    max_description_chars: int = 5000
    max_id_chars: int = 256
    max_value_chars: int = 10000


def detect_format(path: str | os.PathLike[str]) -> str:
    """Return ``"parquet"``, ``"csv"`` or ``"jsonl"`` from the file extension.

    ``.tsv`` counts as ``"csv"`` (read with a tab separator); ``.json`` and ``.ndjson``
    count as ``"jsonl"`` (one object per line).

    Raises:
        CatalogError: The extension is not a supported one.
    """
    return tables.detect_format(path, _EXTENSIONS, "catalog", CatalogError)


def read_catalog(
    path: str | os.PathLike[str],
    *,
    batch_size: int = 2048,
    limits: Limits | None = None,
    encoding: str = "utf8",
    schema: FieldSchema | None = None,
) -> Iterator[CatalogBatch]:
    """Stream a catalog file as validated batches.

    Args:
        path: A ``.csv``/``.tsv``, ``.jsonl``/``.ndjson``/``.json`` or ``.parquet``/``.pq`` file.
        batch_size: Rows read per batch (a batch may hold fewer products after rejects).
        limits: Length limits; defaults to :class:`Limits()`.
        encoding: Text encoding of CSV/JSONL files: ``"utf8"`` (default),
            ``"utf8-lossy"`` (bad bytes become U+FFFD), or any Python codec name such as
            ``"latin-1"`` or ``"cp1252"``. Non-UTF-8 CSV is transcoded to a temporary
            UTF-8 file first (as large as the input; deleted when iteration ends).
            Ignored for Parquet.
        schema: The index's fields: a row whose value of a declared field does not fit the
            field's type is rejected (``Field.normalize`` gives the reason). None: no check.

    Yields:
        One :class:`CatalogBatch` per slice of the file; slices with nothing in them are
        skipped. Duplicate ids are detected across the whole file (the first row wins).

    Raises:
        CatalogError: Unsupported extension, missing/unreadable file, unknown encoding
            (at call time); unparseable content, wrong encoding, missing required column
            (while iterating).
    """
    path = Path(path)
    fmt = detect_format(path)
    tables.check_file(path, CatalogError)
    check_batch_size(batch_size)
    codec = _resolve_encoding(encoding)
    validator = _Validator(limits or Limits(), parquet=fmt == "parquet", schema=schema)
    if fmt == "csv":
        rows = _csv_rows(path, batch_size, codec, separator="\t" if _is_tsv(path) else ",")
    elif fmt == "jsonl":
        rows = tables.jsonl_rows(
            path, batch_size, codec, error=CatalogError, check_columns=_check_columns
        )
    else:
        rows = tables.parquet_rows(
            path, batch_size, error=CatalogError, check_columns=_check_columns
        )
    return tables.validate_batches(rows, validator.batch)


# --------------------------------------------------------------------------------------
# Raw rows: each source yields lists of (line, record) where record is a dict of column
# values as read, or a string explaining why the line could not be turned into a record.
# --------------------------------------------------------------------------------------


def _is_tsv(path: Path) -> bool:
    return path.suffix.lower() == ".tsv"


def _resolve_encoding(encoding: str) -> str:
    """Return ``"utf8"``, ``"utf8-lossy"`` or a canonical Python codec name."""
    if encoding.lower().replace("_", "-") in {"utf8-lossy", "utf-8-lossy"}:
        return LOSSY
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise CatalogError(
            f"unknown encoding '{encoding}'; use 'utf8', 'utf8-lossy' or a Python codec "
            "name such as 'latin-1' or 'cp1252'"
        ) from None
    return "utf8" if name in {"utf-8", "utf-8-sig"} else name


def _check_columns(path: Path, columns: Iterable[str], separator: str | None = None) -> None:
    tables.check_columns(path, columns, REQUIRED_COLUMNS, CatalogError, separator)


def _csv_rows(
    path: Path, batch_size: int, codec: str, separator: str
) -> Generator[Raw, None, None]:
    tmp: str | None = None
    try:
        source = path
        if codec not in ("utf8", LOSSY):
            tmp = _transcode_to_utf8(path, codec)
            source = Path(tmp)
        try:
            lf = pl.scan_csv(
                source,
                separator=separator,
                infer_schema=False,
                encoding=LOSSY if codec == LOSSY else "utf8",
                with_column_names=lambda cols: [c.strip() for c in cols],
                glob=False,
            )
            columns = lf.collect_schema().names()
        except pl.exceptions.NoDataError:
            raise CatalogError(f"{path}: the file is empty (expected a header line)") from None
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise _csv_error(path, exc, codec, separator) from None
        _check_columns(path, columns, separator)
        # Physical line of the next row: 1 + the header's lines (a quoted name may span lines).
        line = 2 + sum(c.count("\n") for c in columns)
        for frame in tables.frames(
            lf, batch_size, lambda exc: _csv_error(path, exc, codec, separator)
        ):
            out: Raw = []
            for values in frame.iter_rows():
                if any(v is not None for v in values):  # all-null row: a blank line
                    out.append((line, dict(zip(columns, values, strict=True))))
                line += 1 + sum(v.count("\n") for v in values if v)
            yield out
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _csv_error(path: Path, exc: BaseException, codec: str, separator: str) -> CatalogError:
    message = str(exc)
    if "invalid utf-8" in message.lower():
        return CatalogError(
            f"{path}: not valid UTF-8 text; pass the file's encoding (e.g. encoding='latin-1' "
            "or 'cp1252'), or encoding='utf8-lossy' to replace bad bytes"
        )
    if "more fields than defined" in message:
        where = _find_ragged_line(path, codec, separator)
        at = (
            f"line {where[0]} has {where[1]} fields but the header has {where[2]}"
            if where
            else ("a row has more fields than the header")
        )
        return CatalogError(f"{path}: {at}; quote values that contain the separator")
    kind = "TSV" if separator == "\t" else "CSV"
    bad = re.match(r"could not parse `(.*?)` as dtype", message, re.DOTALL)
    if bad:
        return CatalogError(
            f"{path}: not a readable {kind} file (badly quoted value {short(bad.group(1))!r}; "
            "close every quote and double quotes inside quoted values)"
        )
    return CatalogError(
        f"{path}: not a readable {kind} file ({first_line(exc, tables.DETAIL_CHARS)})"
    )


def _find_ragged_line(path: Path, codec: str, separator: str) -> tuple[int, int, int] | None:
    """Find the first row with more fields than the header (only on the error path)."""
    encoding = "utf-8-sig" if codec in ("utf8", LOSSY) else codec
    try:
        with path.open(encoding=encoding, errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=separator)
            header = next(reader, None)
            if header is None:
                return None
            start = reader.line_num + 1
            for row in reader:
                if len(row) > len(header):
                    return start, len(row), len(header)
                start = reader.line_num + 1
    except (OSError, csv.Error):
        return None
    return None


def _transcode_to_utf8(path: Path, codec: str) -> str:
    """Copy ``path`` to a temporary UTF-8 file, streaming; returns the temp file's name."""
    fd, name = tempfile.mkstemp(prefix="shopsearch-", suffix=".csv")
    try:
        with (
            os.fdopen(fd, "w", encoding="utf-8", newline="") as out,
            path.open(encoding=codec, newline="") as src,
        ):
            while chunk := src.read(_TRANSCODE_CHUNK):
                out.write(chunk)
    except UnicodeDecodeError as exc:
        os.unlink(name)
        raise CatalogError(f"{path}: not valid {codec} text ({exc.reason})") from None
    except OSError as exc:
        os.unlink(name)
        raise CatalogError(
            f"{path}: cannot read the file ({first_line(exc, tables.DETAIL_CHARS)})"
        ) from None
    return name


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


class _Validator:
    """Validates rows one by one and remembers ids across the whole file."""

    def __init__(self, limits: Limits, parquet: bool, schema: FieldSchema | None = None) -> None:
        self.limits = limits
        self.parquet = parquet
        self.schema = schema if schema is not None and schema.declared() else None
        self.unit = "row" if parquet else "line"
        self.seen: dict[str, int] = {}
        self.renamed: dict[str, str] = {}  # reserved extra column -> the name it is kept as

    def batch(self, raw: Raw) -> CatalogBatch | None:
        """The products, rejects and warnings of one batch of raw rows (None: nothing)."""
        items, rejects = tables.validate_rows(
            raw, lambda record: self._product_id(record.get("product_id")), self._product
        )
        if not (items or rejects):  # warnings come with products
            return None
        return CatalogBatch(
            products=[product for product, _ in items],
            rejects=rejects,
            warnings=[w for _, warnings in items for w in warnings],
        )

    def _product_id(self, value: Any) -> str:
        if isinstance(value, (bool, dict, list)):
            raise Invalid("product_id is not a string or integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise Invalid(f"product_id {value!r} is not a string or integer")
            value = int(value)
        text = _text(value, "product_id")
        if text is None:
            raise Invalid("missing product_id")
        if len(text) > self.limits.max_id_chars:
            raise Invalid(
                f"product_id is {len(text)} characters long (limit {self.limits.max_id_chars})"
            )
        return text

    def _product(
        self, line: int, record: dict[str, Any], product_id: str | None
    ) -> tuple[Product, list[str]]:
        assert product_id is not None  # _product_id returns one or raises
        first = self.seen.get(product_id)
        if first is not None:  # the first row with an id wins
            raise Invalid(f"duplicate product_id (first seen on {self.unit} {first})")
        self.seen[product_id] = line
        warnings: list[str] = []
        where = f"{self.unit} {line} (product_id {product_id!r})"

        title = _text(record.get("title"), "title", clean=True)
        if title is None:
            raise Invalid("missing title")
        if len(title) > self.limits.max_title_chars:
            title = title[: self.limits.max_title_chars].rstrip()
            warnings.append(f"{where}: title truncated to {self.limits.max_title_chars} characters")
        description = _text(record.get("description"), "description", clean=True)
        if description is not None and len(description) > self.limits.max_description_chars:
            description = description[: self.limits.max_description_chars].rstrip()
            warnings.append(
                f"{where}: description truncated to {self.limits.max_description_chars} characters"
            )
        max_chars = self.limits.max_value_chars
        extra = {}
        for key, value in record.items():
            if key in KNOWN_COLUMNS or value is None:
                continue
            name = str(key)
            value = _payload_value(value, f"column {short(name)!r}", max_chars, 1)
            if value is None:
                continue
            if is_reserved_column(name):
                name = self._rename(name, record, warnings)
            extra[name] = value
        brand = _text(record.get("brand"), "brand", clean=True)
        category = _category(record.get("category"))
        for label, text in (("brand", brand), ("category", category)):
            if text is not None and len(text) > max_chars:
                raise Invalid(f"{label} is {len(text)} characters long (limit {max_chars})")
        product = Product(
            product_id=product_id,
            title=title,
            description=description,
            brand=brand,
            category=category,
            price=_price(record.get("price")),
            in_stock=_in_stock(record.get("in_stock")),
            attributes=_attributes(record.get("attributes"), self.parquet, max_chars),
            extra=extra,
        )
        if self.schema is not None:
            try:
                self.schema.payload(product)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        return product, warnings

    def _rename(self, name: str, record: dict[str, Any], warnings: list[str]) -> str:
        """The name a reserved extra column is kept under (warns once per column)."""
        target = self.renamed.get(name)
        if target is None:
            target = RENAMED_PREFIX + (name.strip() or "column")
            while target in record:
                target += "_"
            self.renamed[name] = target
            warnings.append(
                f"column {name!r} has a name search results use for their own fields; "
                f"its values are kept as {target!r}"
            )
        return target


def _text(value: Any, name: str, clean: bool = False) -> str | None:
    """A text field; None when absent or blank. Numbers are accepted as text.

    With ``clean`` the text is decoded as :func:`catalog.schema.clean_text` does.
    """
    return tables.text_value(value, name, clean=clean_text if clean else str.strip)


def _payload_value(value: Any, where: str, max_chars: int, depth: int) -> Any:
    """A value as the store can keep it (None when blank); ``Invalid`` when it cannot be.

    Text is decoded (:func:`~catalog.schema.clean_text`); dates and times become ISO-8601
    text and decimals floats. NaN, infinities, integers outside 64 bits, text over
    ``max_chars``, nesting deeper than :data:`MAX_DEPTH` and other types are refused.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = clean_text(value)
        if len(text) > max_chars:
            raise Invalid(f"{where} is {len(text)} characters long (limit {max_chars})")
        return text or None
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise Invalid(f"{where}: integer {short(str(value))} is out of the 64-bit range")
        return value
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(f"{where} is {nonfinite(value)} (give a number, or leave it empty)")
        return value
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        if depth > MAX_DEPTH:
            raise Invalid(f"{where} is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            return {
                str(k): _payload_value(v, where, max_chars, depth + 1) for k, v in value.items()
            }
        return [_payload_value(v, where, max_chars, depth + 1) for v in value]
    raise Invalid(
        f"{where} holds a {type(value).__name__}, which cannot be stored; "
        "convert it to text or a number"
    )


def _category(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " > ".join(v.replace(">", " ") for v in value)
    text = _text(value, "category", clean=True)
    if text is None:
        return None
    return normalize_category(text) or None


def _price(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise Invalid(f"price {value!r} is not a number")
    if isinstance(value, (int, float)):
        price = float(value)
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            price = float(text)
        except ValueError:
            raise Invalid(f"price {short(text)!r} is not a number") from None
    if not math.isfinite(price):
        raise Invalid(f"price {short(str(value))!r} is not a number")
    if price < 0:
        raise Invalid(f"negative price {price}")
    return price


def _in_stock(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid(f"in_stock {short(str(value).strip())!r} is not true/false/yes/no/1/0")


def _attributes(value: Any, map_lists: bool = False, max_chars: int = 10000) -> dict[str, Any]:
    """Return a flat attribute dict.

    Accepts a JSON object string (CSV, Parquet string column), a dict (JSONL object,
    Parquet struct) or, with ``map_lists``, a list of ``{"key", "value"}`` entries (how
    polars reads a Parquet map column).
    Nested objects are flattened to ``"parent.child"`` keys, lists of scalars are joined
    with ``", "``, and null values are dropped. Names and text are decoded
    (:func:`~catalog.schema.clean_text`); values are checked as extra columns are.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError:
            raise Invalid("attributes is not a JSON object") from None
        except RecursionError:
            raise Invalid(f"attributes is nested deeper than {MAX_DEPTH} levels") from None
    elif (
        map_lists
        and isinstance(value, list)
        and all(isinstance(e, dict) and set(e) == {"key", "value"} for e in value)
    ):
        value = {e["key"]: e["value"] for e in value}
    if not isinstance(value, dict):
        raise Invalid("attributes is not a JSON object")
    out: dict[str, Any] = {}
    _flatten(value, "", out, max_chars, 1)
    return out


def _flatten(
    obj: dict[Any, Any], prefix: str, out: dict[str, Any], max_chars: int, depth: int
) -> None:
    if depth > MAX_DEPTH:
        raise Invalid(f"attributes is nested deeper than {MAX_DEPTH} levels")
    for key, value in obj.items():
        name = clean_text(str(key))
        if not name:
            continue
        name = f"{prefix}{name}"
        where = f"attributes.{short(name)}"
        if isinstance(value, dict):
            _flatten(value, f"{name}.", out, max_chars, depth + 1)
            continue
        if isinstance(value, (list, tuple)):
            items = [
                _payload_value(v, where, max_chars, depth + 1)
                for v in value
                if v is not None and not isinstance(v, dict)
            ]
            value = ", ".join(str(i) for i in items if i not in (None, ""))
        value = _payload_value(value, where, max_chars, depth)
        if value is not None and value != "":
            out[name] = value
