"""The field schema: what each catalog field of an index can do (filter, facet, sort, search).

Every index has the default fields (today's columns); a catalog's own columns and attribute
keys (``voltage``, ``color``, ``rating``, ``created_at``) are declared in a small schema file,
TOML or JSON, given to ``shopsearch index --schema FILE`` and recorded in the manifest::

    [fields.voltage]
    type = "number"                  # keyword | number | bool | category | date
    source = "attributes.voltage"    # default: the column of that name, else attributes.<name>
    unit = "V"                       # number only: "18V" and "18 V" read as 18
    facetable = true                 # filterable defaults to true; facetable, sortable,
    sortable = true                  # searchable to false

A row whose value does not fit its field's type is rejected (:meth:`Field.normalize` gives
the one-line reason). Each filterable field's normalized value is stored under
:attr:`Field.key` in the point's payload, which filters (``retrieval.filters``) compare:

* keyword: a list of :func:`keyword_key` strings (case, spaces and HTML entities folded);
* number: a float; bool: 0 or 1; date: float seconds since the epoch (UTC);
* category: the keys of every prefix of the path (:func:`category_keys`), so a category
  filter matches a path and everything below it.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from catalog.schema import CATEGORY_SEPARATOR, KNOWN_COLUMNS, Product, normalize_category
from core.errors import ShopsearchError

FieldType = Literal["keyword", "number", "bool", "category", "date"]
Capability = Literal["filterable", "facetable", "sortable", "searchable"]
TYPES: tuple[str, ...] = get_args(FieldType)
CAPABILITIES: tuple[str, ...] = get_args(Capability)
#: Payload index kind of each type (``retrieval.store`` creates one per filterable field).
INDEX_KINDS = {
    "keyword": "keyword",
    "category": "keyword",
    "number": "float",
    "date": "float",
    "bool": "integer",
}
#: Where the default fields keep their normalized filter values (unchanged since format 2).
DEFAULT_KEYS = {
    "brand": "_brand_key",
    "category": "_category_keys",
    "price": "price",
    "in_stock": "_in_stock",
}
#: Prefix of the payload key of a declared field's normalized value.
DECLARED_PREFIX = "_f_"
ATTRIBUTES_PREFIX = "attributes."
#: The sample catalog's schema file (``shopsearch sample``'s attributes as fields).
SAMPLE_SCHEMA = Path(__file__).with_name("sample_schema.toml")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_OPTIONS = frozenset({"type", "source", "unit", *CAPABILITIES})
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DAY_S = 86400.0


def keyword_key(text: Any) -> str:
    """The form keyword filters compare: HTML entities decoded, casefolded, spaces collapsed.

    ``"Black &amp;  DECKER"`` and ``"black & decker"`` give the same key.
    """
    return " ".join(html.unescape(str(text)).casefold().split())


def category_keys(category: str | None) -> list[str]:
    """Keys of every prefix of a category path (what a category filter matches)."""
    if not category:
        return []
    path = normalize_category(html.unescape(str(category)))
    parts = [keyword_key(p) for p in path.split(CATEGORY_SEPARATOR) if keyword_key(p)]
    return [CATEGORY_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def _number_text(value: Any) -> str:
    """A number as keyword text: ``18.0`` -> ``"18"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_number(text: Any, unit: str | None = None) -> float:
    """A finite float from a number or text (``"1,500"``; ``"18V"`` with ``unit="V"``).

    Raises:
        ValueError: not a finite number (the message is the reason, for one line).
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a number")
    if isinstance(text, (int, float)):
        number = float(text)
    else:
        raw = str(text).strip()
        body = raw
        if unit and body.casefold().endswith(unit.casefold()):
            body = body[: -len(unit)].strip()
        if _THOUSANDS.match(body):
            body = body.replace(",", "")
        try:
            number = float(body)
        except ValueError:
            expect = f"a number (optionally followed by {unit!r})" if unit else "a number"
            raise ValueError(f"{raw[:40]!r} is not {expect}") from None
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def parse_date(value: Any) -> tuple[float, bool]:
    """Seconds since the epoch (UTC) of an ISO date or date-time, or of a number of seconds.

    Returns:
        ``(seconds, whole_day)``; ``whole_day`` is True for a date without a time.

    Raises:
        ValueError: not a date (the message is the reason).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a date")
    if isinstance(value, (int, float)):
        return parse_number(value), False
    if isinstance(value, datetime):
        moment, whole = value, False
    elif isinstance(value, date):
        moment, whole = datetime(value.year, value.month, value.day), True
    else:
        text = str(value).strip()
        try:
            if len(text) == 10:
                moment, whole = (
                    datetime.combine(date.fromisoformat(text), datetime.min.time()),
                    True,
                )
            else:
                moment, whole = datetime.fromisoformat(text), False
        except ValueError:
            raise ValueError(
                f"{text[:40]!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp(), whole


def parse_bool(value: Any) -> bool:
    """True/False from a bool, 0/1, or true/false/yes/no text.

    Raises:
        ValueError: none of these (the message is the reason).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{str(value)[:40]!r} is not true/false/yes/no/1/0")


@dataclass(frozen=True)
class Field:
    """One catalog field and what an index can do with it.

    Attributes:
        name: What filters, facets and sorts call it (letters, digits, ``_``; matched
            case-insensitively).
        type: ``keyword``, ``number``, ``bool``, ``category`` or ``date``.
        source: Where a product's value comes from: ``brand``, ``category``, ``price``,
            ``in_stock``, ``title``, ``description``, ``attributes.<key>``, or an extra
            column; a bare name that is no column of a product falls back to
            ``attributes.<name>``. Default: the name.
        filterable: Filters may use it (its normalized value is stored under :attr:`key`).
        facetable: Facets may count it.
        sortable: Results may be sorted by it.
        searchable: BM25 and the product tower read it.
        unit: Number fields only: a unit its text values may end with (``"V"``: ``"18V"``).

    Raises:
        ShopsearchError: a bad name, type, source or unit (one line naming the field).
    """

    name: str
    type: FieldType
    source: str = ""
    filterable: bool = True
    facetable: bool = False
    sortable: bool = False
    searchable: bool = False
    unit: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ShopsearchError(
                f"field name {self.name!r}: use letters, digits and _ (starting with a letter)"
            )
        if self.type not in TYPES:
            raise ShopsearchError(
                f"field {self.name}: unknown type {self.type!r}; use {', '.join(TYPES)}"
            )
        source = self.source or self.name
        if not isinstance(source, str) or not source.strip() or source.startswith("_"):
            raise ShopsearchError(
                f"field {self.name}: source {source!r} is not a column or attributes.<key>"
            )
        object.__setattr__(self, "source", source.strip())
        if self.unit is not None and (self.type != "number" or not str(self.unit).strip()):
            raise ShopsearchError(f"field {self.name}: unit is for number fields only")
        builtin = DEFAULT_KEYS.get(self.name)
        key = (
            builtin
            if builtin and self.source == self.name
            else DECLARED_PREFIX + self.name.casefold()
        )
        object.__setattr__(self, "_key", key)  # read on every filter test: computed once
        for cap in CAPABILITIES:
            if not isinstance(getattr(self, cap), bool):
                raise ShopsearchError(
                    f"field {self.name}: {cap} must be true or false, not {getattr(self, cap)!r}"
                )

    @property
    def key(self) -> str:
        """The payload key holding the normalized filter value."""
        return self._key  # type: ignore[attr-defined]

    @property
    def declared(self) -> bool:
        """True for a field whose normalized value the schema stores (not a default's key)."""
        return self.key.startswith(DECLARED_PREFIX)

    @property
    def index_kind(self) -> str:
        """The payload index kind: ``keyword``, ``float`` or ``integer``."""
        return INDEX_KINDS[self.type]

    def value(self, item: Product | Mapping[str, Any]) -> Any:
        """The display value of a product, or of a stored payload (None when it has none)."""
        if isinstance(item, Product):
            attributes, get = (
                item.attributes,
                (lambda k: getattr(item, k) if k in KNOWN_COLUMNS else item.extra.get(k)),
            )
        else:
            attributes, get = item.get("attributes") or {}, item.get
        if self.source.startswith(ATTRIBUTES_PREFIX):
            return attributes.get(self.source[len(ATTRIBUTES_PREFIX) :])
        found = get(self.source)
        if found is None and self.source not in KNOWN_COLUMNS:
            found = attributes.get(self.source)
        return found

    def normalize(self, value: Any) -> Any:
        """The normalized filter value of a display value; None when blank.

        Raises:
            ValueError: the value does not fit the type (the message names the field, the
                value and the type, on one line).
        """
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        try:
            return self._normalize(value)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc} (declared {self.type})") from None

    def _normalize(self, value: Any) -> Any:
        items = value if isinstance(value, (list, tuple)) else None
        if self.type == "keyword":
            if isinstance(value, dict):
                raise ValueError("an object is not a keyword")
            keys = [keyword_key(_number_text(v)) for v in (items or [value]) if v is not None]
            return [k for k in dict.fromkeys(keys) if k] or None
        if self.type == "category":
            if not isinstance(value, str):
                raise ValueError(f"{value!r} is not a category path")
            return category_keys(value) or None
        if items is not None:
            raise ValueError(f"a list is not a single {self.type}")
        if self.type == "number":
            return parse_number(value, self.unit)
        if self.type == "bool":
            return int(parse_bool(value))
        return parse_date(value)[0]

    def describe(self) -> str:
        """``voltage (number: filter, facet, sort)`` for ``shopsearch info``."""
        caps = [c.removesuffix("able") for c in CAPABILITIES if getattr(self, c)]
        source = "" if self.source == self.name else f" from {self.source}"
        unit = f" in {self.unit}" if self.unit else ""
        return f"{self.name} ({self.type}{unit}{source}: {', '.join(caps) or 'stored only'})"


_DEFAULT_FIELDS = (
    # searchable: what catalog.text.product_text reads (the description is stored only)
    Field("brand", "keyword", facetable=True, searchable=True),
    Field("category", "category", facetable=True, searchable=True),
    Field("price", "number", facetable=True, sortable=True),
    Field("in_stock", "bool", facetable=True),
    Field("title", "keyword", filterable=False, searchable=True),
    Field("description", "keyword", filterable=False),
)


@dataclass(frozen=True)
class FieldSchema:
    """The fields of an index, defaults first.

    Raises:
        ShopsearchError: two fields of one name (case-insensitively), or a default field
            redeclared with another type or source.
    """

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.fields:
            folded = f.name.casefold()
            if folded in seen:
                raise ShopsearchError(f"field {f.name} is declared twice: keep one")
            seen.add(folded)

    @classmethod
    def default(cls) -> FieldSchema:
        """Today's columns: brand, category, price, in_stock (filters); title, description."""
        return cls(_DEFAULT_FIELDS)

    @classmethod
    def with_declared(cls, declared: Iterable[Field]) -> FieldSchema:
        """The defaults plus ``declared`` fields; a declared default name changes its
        capabilities (same type and source only)."""
        fields = {f.name: f for f in _DEFAULT_FIELDS}
        for f in declared:
            base = fields.get(f.name)
            if base is None and f.name.casefold() in {n.casefold() for n in fields}:
                raise ShopsearchError(f"field {f.name} is declared twice: keep one")
            if base is not None and (base.type, base.source) != (f.type, f.source):
                raise ShopsearchError(
                    f"field {f.name} is a default field ({base.type} from {base.source}): "
                    "redeclare it only to change what it can do, or use another name"
                )
            fields[f.name] = f
        return cls(tuple(fields.values()))

    @classmethod
    def load(cls, path: str | Path) -> FieldSchema:
        """Reads a schema file (``.toml`` or ``.json``), a ``fields`` table of field tables.

        Raises:
            ShopsearchError: unreadable file, bad syntax, an unknown option, type or
                capability, a duplicate name (one line naming it).
        """
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ShopsearchError(f"schema file {where}: cannot read it ({exc})") from None
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text, object_pairs_hook=_no_duplicates)
            else:
                if sys.version_info >= (3, 11):
                    import tomllib  # TOMLDecodeError is a ValueError
                else:  # the same parser, as a package (a dependency on 3.10 only)
                    import tomli as tomllib

                data = tomllib.loads(text)
        except ValueError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ShopsearchError(f"schema file {where}: {reason}") from None
        try:
            return cls.from_dict(data)
        except ShopsearchError as exc:
            raise ShopsearchError(f"schema file {where}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> FieldSchema:
        """The schema of ``{"fields": {name: {"type": ..., ...}}}`` (a parsed schema file)."""
        if not isinstance(data, dict) or set(data) - {"fields"}:
            extra = sorted(set(data) - {"fields"}) if isinstance(data, dict) else []
            raise ShopsearchError(
                f"unknown top-level key(s) {extra}: put fields under [fields.NAME]"
                if extra
                else "expected a table of fields under [fields.NAME]"
            )
        table = data.get("fields") or {}
        if not isinstance(table, dict):
            raise ShopsearchError("fields must be a table: [fields.NAME] with type = ...")
        declared = []
        for name, options in table.items():
            if not isinstance(options, dict):
                raise ShopsearchError(f"field {name}: expected a table with type = ...")
            unknown = sorted(set(options) - _OPTIONS)
            if unknown:
                raise ShopsearchError(
                    f"field {name}: unknown option(s) {', '.join(unknown)}; "
                    f"use {', '.join(sorted(_OPTIONS))}"
                )
            if "type" not in options:
                raise ShopsearchError(f"field {name}: give its type ({', '.join(TYPES)})")
            declared.append(Field(name=name, **options))
        return cls.with_declared(declared)

    def field(self, name: str) -> Field:
        """The field of this name (case-insensitive).

        Raises:
            ShopsearchError: no such field (names the fields that exist).
        """
        folded = str(name).casefold()
        for f in self.fields:
            if f.name.casefold() == folded:
                return f
        raise ShopsearchError(
            f"unknown field {name!r}: this index has {', '.join(f.name for f in self.fields)}; "
            "declare others in a schema file (shopsearch index --schema FILE)"
        )

    def names(self, capability: Capability) -> tuple[str, ...]:
        """Names of the fields with a capability (filterable, facetable, sortable, searchable)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}")
        return tuple(f.name for f in self.fields if getattr(f, capability))

    def require(self, name: str, capability: Capability) -> Field:
        """The field ``name``, which must have ``capability``.

        Raises:
            ShopsearchError: unknown field, or one without it (names those that have it).
        """
        f = self.field(name)
        if not getattr(f, capability):
            able = ", ".join(self.names(capability)) or "none"
            raise ShopsearchError(
                f"field {f.name} is not {capability}: {capability} fields are {able}"
            )
        return f

    def declared(self) -> tuple[Field, ...]:
        """Fields whose normalized values the schema stores under ``_f_<name>`` (not the
        defaults' own keys): those a filter, a facet or a sort reads."""
        return tuple(
            f for f in self.fields if f.declared and (f.filterable or f.facetable or f.sortable)
        )

    def payload(self, product: Product) -> dict[str, Any]:
        """The normalized values of the declared fields of a product, by key (:meth:`declared`).

        Raises:
            ValueError: a value does not fit its field's type (one line).
        """
        out = {}
        for f in self.declared():
            normalized = f.normalize(f.value(product))
            if normalized is not None:
                out[f.key] = normalized
        return out

    def __hash__(self) -> int:  # computed once: filters are bound per (filters, schema)
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(self.fields)
            object.__setattr__(self, "_hash", cached)
        return cached

    def with_filter_keys(
        self, payload: Mapping[str, Any], keys: Iterable[str] | None = None
    ) -> Mapping[str, Any]:
        """A payload with the normalized value of every filterable field it lacks (of those
        stored under ``keys``, when given), computed from its display values: what filters
        compare, for a hit's public payload (whose ``_`` keys the retriever drops). A value
        that does not fit its type is left out. The payload itself when it lacks none."""
        wanted = None if keys is None else set(keys)
        todo = [
            f
            for f in self.fields
            if f.filterable and f.key not in payload and (wanted is None or f.key in wanted)
        ]
        if not todo:
            return payload
        out = dict(payload)
        for f in todo:
            try:
                normalized = f.normalize(f.value(payload))
            except ValueError:
                continue
            if normalized is not None:
                out[f.key] = normalized
        return out

    def payload_indexes(self) -> tuple[tuple[str, str], ...]:
        """(key, kind) of the payload index each declared filterable/facetable/sortable
        field needs (the defaults' are ``retrieval.store.PAYLOAD_INDEXES``)."""
        return tuple((f.key, f.index_kind) for f in self.declared())

    def to_manifest(self) -> list[dict[str, Any]]:
        """The manifest's ``fields`` entry: one dict per field."""
        return [{k: v for k, v in asdict(f).items() if v is not None} for f in self.fields]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> FieldSchema:
        """The schema an index records; the defaults for an index without one (older builds)."""
        recorded = manifest.get("fields")
        if not recorded:
            return cls.default()
        return cls(tuple(Field(**f) for f in recorded))

    def is_default(self) -> bool:
        """True when nothing is declared beyond the defaults."""
        return self == FieldSchema.default()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{key!r} is declared twice: keep one")
        out[key] = value
    return out
