"""Facets, sort and diversity: pure functions over a ranked candidate list.

:class:`~rerank.pipeline.SearchPipeline` retrieves the candidates of a query (its filters
applied, ``max(offset + k, rerank_depth)`` of them), ranks them, and then calls these, in the
order of the storefront's contract: facets are counted over the whole candidate list,
:func:`diversify` reorders it, :func:`sort_relevant` sorts its relevant part, and the page is
cut last. Nothing here talks to the index: every value comes from the hits' payloads, read
through the index's field schema (``Field.value``), so a declared field needs no code here.

Facets (semantics). A hybrid query has no "matching products": every product has a dense
score. Facets count the *candidates*, the products the results are ranked from (the query's
top ``max(offset + k, rerank_depth)`` after its filters, 50 by default), one count per value
of each facet field (a product with several values counts once per value; one without a value
not at all). Disjunctive faceting: the facet of a field the filters select on (``brand =
Ridgeline``) counts the candidates of the same query with that field's own top-level
conditions removed (``Filters.without(field)``: one more retrieval per such field), so each
of its values shows how many candidates choosing it would give; every other facet counts the
candidates of the query as filtered. Keyword, category and bool fields count per value
(top ``limit``, most frequent first; a category per full path); number and date fields count
per band: the request's cut points, or the schema's, or else, where the candidates hold at
most ``limit`` distinct values, per value, and otherwise bands between rounded quintiles.

Sort. A sort orders the *relevant* candidates by a field, not the catalog: a candidate is
relevant enough when its first-stage score is at least :data:`SORT_FLOOR` times the best
candidate's (with hybrid fusion: roughly, BM25 ranks it among its first 30 to 40, where a
product only the dense list brings in scores at most a tenth of the best); the others are left
out of a sorted result. Relevance breaks ties, and products without a value go last.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from catalog.fields import Field, FieldSchema
from catalog.schema import normalize_category
from core.errors import ShopsearchError
from retrieval.hits import RankedHit

#: Values per keyword facet when the request does not say.
DEFAULT_FACET_LIMIT = 10
MAX_FACET_LIMIT = 100
#: Bands of a number facet without cut points (quintiles, rounded).
DEFAULT_BANDS = 5
#: A sorted result keeps the candidates whose first-stage score is at least this share of the
#: best candidate's (see the module's "Sort"; docs/benchmarks/storefront.md has the run).
SORT_FLOOR = 0.6
#: Products per group a diversified list may hold before the next group's (``brand:2``).
DEFAULT_DIVERSITY_CAP = 2

_NUMERIC = ("number", "date")


# --------------------------------------------------------------------------------------------
# Field values
# --------------------------------------------------------------------------------------------


def _items(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return [v for v in value if v is not None]
    return [] if value is None else [value]


def field_values(field: Field, hit: RankedHit) -> list[tuple[Any, str]]:
    """A hit's values of a field as ``(key, label)`` pairs (keys compare, labels display).

    Keys are the field's normalized filter values (:meth:`catalog.fields.Field.normalize`):
    a keyword's folded text (case, spaces and entities do not split a value), a category's
    full path, a bool, a number or a date as a float (seconds since epoch, UTC). A value
    that does not fit the field's type counts as none.
    """
    raw = field.value(hit.payload or {})
    kind = field.type
    out: list[tuple[Any, str]] = []
    for item in _items(raw) if kind in ("keyword", "category") else _items(raw)[:1]:
        try:
            norm = field.normalize(item)
        except ValueError:
            continue
        if norm is None or norm == []:
            continue
        if kind == "keyword":
            out.append((norm[0], _text(item)))
        elif kind == "category":
            out.append((norm[-1], normalize_category(str(item))))
        elif kind == "bool":
            out.append((bool(norm), "true" if norm else "false"))
        else:
            out.append((float(norm), _label(float(norm), kind)))
    return out


def _text(item: Any) -> str:
    if isinstance(item, float) and item.is_integer():
        return str(int(item))
    return " ".join(html.unescape(str(item)).split())


def capable(schema: FieldSchema, name: str, capability: str, what: str) -> Field:
    """The field ``name`` (any letter case), which must have ``capability``.

    Raises:
        ShopsearchError: One line naming the fields that have it.
    """
    try:
        field = schema.field(name)
    except ShopsearchError:
        field = None
    if field is None or not getattr(field, capability):
        allowed = ", ".join(schema.names(capability)) or "none"
        raise ShopsearchError(
            f"{what} {name!r}: not a {capability} field of this index; {capability} fields: "
            f"{allowed} (declare others in the index's schema file)"
        )
    return field


def _label(number: float, kind: str) -> str:
    if kind == "date":
        return datetime.fromtimestamp(number, tz=timezone.utc).date().isoformat()
    return f"{number:g}" if abs(number) < 1e15 else f"{number:.0f}"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Facets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FacetCount:
    """One value of a facet and how many candidates hold it.

    Attributes:
        value: What the value is compared as: a keyword's normalized key, a category's
            normalized path, a bool, a number; for a band, its label.
        label: How to show it (the most frequent spelling; ``"25 – 50"`` for a band).
        count: Candidates that hold it.
        filter: The filter expression that selects it (``brand = "DeWalt"``,
            ``price >= 25 AND price < 50``): what clicking the value adds to the query.
        low: A band's lowest value, inclusive (None: unbounded, or not a band).
        high: A band's highest value, exclusive (None: unbounded, or not a band).
    """

    value: str | float | bool
    label: str
    count: int
    filter: str
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``low``/``high`` only for a band)."""
        out: dict[str, Any] = {
            "value": self.value,
            "label": self.label,
            "count": self.count,
            "filter": self.filter,
        }
        if self.low is not None or self.high is not None:
            out.update(low=self.low, high=self.high)
        return out


@dataclass(frozen=True)
class FacetSpec:
    """One facet a search asks for: ``"brand"``, ``"brand:5"`` (top 5 values) or
    ``"price:25,50,100"`` (bands cut at 25, 50 and 100: below 25, 25 to 50, ..., 100 and up).

    Attributes:
        field: The field's name.
        limit: Values returned, most frequent first (keyword, category and bool fields).
        cuts: Cut points of a number or date field's bands, ascending; None: the schema's,
            else a default (see the module).
    """

    field: str
    limit: int = DEFAULT_FACET_LIMIT
    cuts: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, text: str | FacetSpec) -> FacetSpec:
        """A spec from its text form (see the class).

        Raises:
            ShopsearchError: An empty name, or a limit or cut point that is not a number.
        """
        if isinstance(text, FacetSpec):
            return text
        if not isinstance(text, str):
            raise ShopsearchError(f"facet {text!r}: give a field name such as 'brand'")
        name, _, rest = text.strip().partition(":")
        name = name.strip()
        if not name:
            raise ShopsearchError(f"facet {text!r}: give a field name such as 'brand' or 'price'")
        rest = rest.strip()
        if not rest:
            return cls(name)
        parts = [p.strip() for p in rest.split(",") if p.strip()]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ShopsearchError(
                f"facet {text!r}: after ':' give a number of values ('brand:5') or band cut "
                "points ('price:25,50,100')"
            ) from None
        if any(not math.isfinite(n) for n in numbers) or not numbers:
            raise ShopsearchError(f"facet {text!r}: the numbers after ':' must be finite")
        if len(numbers) == 1 and numbers[0].is_integer() and numbers[0] >= 1:
            # one whole number: a limit for a keyword field, a single cut for a number field
            return cls(name, min(int(numbers[0]), MAX_FACET_LIMIT), (numbers[0],))
        return cls(name, DEFAULT_FACET_LIMIT, tuple(sorted(set(numbers))))


def parse_facets(facets: Sequence[str | FacetSpec] | None, schema: FieldSchema) -> list[FacetSpec]:
    """The facets a search asks for, each checked against the index's schema.

    Raises:
        ShopsearchError: A field that is not facetable (the facetable ones are named), or the
            same field asked twice.
    """
    if facets is None:
        return []
    if isinstance(facets, (str, FacetSpec)):
        facets = [facets]
    specs: list[FacetSpec] = []
    for item in facets:
        spec = FacetSpec.parse(item)
        field = capable(schema, spec.field, "facetable", "facet")
        spec = replace(spec, field=field.name)
        if any(s.field == spec.field for s in specs):
            raise ShopsearchError(f"facet {spec.field!r} asked twice: ask each field once")
        kind = field.type
        if kind not in _NUMERIC and spec.cuts is not None:
            if len(spec.cuts) > 1 or not spec.cuts[0].is_integer() or spec.cuts[0] < 1:
                raise ShopsearchError(
                    f"facet {spec.field!r}: a {kind} field takes a number of values >= 1 "
                    f"('{spec.field}:5'), not band cut points"
                )
            spec = FacetSpec(spec.field, spec.limit)
        specs.append(spec)
    return specs


def _nice(value: float) -> float:
    """``value`` rounded to 1, 2, 2.5 or 5 times a power of ten (for band edges)."""
    if value <= 0:
        return 0.0 if value == 0 else -_nice(-value)
    power = 10 ** math.floor(math.log10(value))
    steps = (1, 2, 2.5, 5, 10)
    return min((s * power for s in steps), key=lambda c: abs(c - value))


def default_cuts(values: Sequence[float], bands: int = DEFAULT_BANDS) -> tuple[float, ...]:
    """Cut points between rounded quantiles of ``values`` (``bands`` bands at most)."""
    ordered = sorted(values)
    if not ordered:
        return ()
    cuts = {
        _nice(ordered[min(len(ordered) - 1, (len(ordered) * i) // bands)]) for i in range(1, bands)
    }
    return tuple(c for c in sorted(cuts) if ordered[0] < c <= ordered[-1])


def _band_counts(
    name: str, kind: str, numbers: Sequence[float], cuts: Sequence[float]
) -> list[FacetCount]:
    edges = [None, *cuts, None]
    counts = [0] * (len(edges) - 1)
    for number in numbers:
        at = 0
        while at < len(cuts) and number >= cuts[at]:
            at += 1
        counts[at] += 1
    out = []
    for i, count in enumerate(counts):
        if not count:
            continue
        low, high = edges[i], edges[i + 1]
        if low is None:
            label, expr = f"< {_label(high, kind)}", f"{name} < {_value_text(high, kind)}"
        elif high is None:
            label, expr = f">= {_label(low, kind)}", f"{name} >= {_value_text(low, kind)}"
        else:
            label = f"{_label(low, kind)} - {_label(high, kind)}"
            expr = f"{name} >= {_value_text(low, kind)} AND {name} < {_value_text(high, kind)}"
        out.append(FacetCount(label, label, count, expr, low, high))
    return out


def _value_text(number: float, kind: str) -> str:
    return _label(number, kind) if kind == "date" else f"{number:g}"


def facet_counts(hits: Sequence[RankedHit], field: Field, spec: FacetSpec) -> list[FacetCount]:
    """One facet over a candidate list (see the module for the semantics).

    Args:
        hits: The candidates.
        field: The field.
        spec: What was asked (limit, cut points).
    """
    kind, name = field.type, field.name
    values = [field_values(field, h) for h in hits]
    if kind in _NUMERIC:
        numbers = [key for vals in values for key, _ in vals]
        cuts = spec.cuts if spec.cuts is not None else getattr(field, "ranges", None)
        if cuts is None:
            distinct = sorted(set(numbers))
            if len(distinct) <= spec.limit:
                counts = Counter(numbers)
                return [
                    FacetCount(
                        v, _label(v, kind), counts[v], f"{name} = {_value_text(v, kind)}", None
                    )
                    for v in distinct
                ]
            cuts = default_cuts(numbers)
        return _band_counts(name, kind, numbers, tuple(sorted(cuts)))
    counts: Counter = Counter()
    spellings: dict[Any, Counter] = {}
    for vals in values:
        for key in dict(vals):  # a product counts once per value
            counts[key] += 1
        for key, label in vals:
            spellings.setdefault(key, Counter())[label] += 1
    top = sorted(counts, key=lambda k: (-counts[k], str(k)))[: spec.limit]
    out = []
    for key in top:
        label = spellings[key].most_common(1)[0][0]
        expr = f"{name} = {label}" if kind == "bool" else f"{name} = {_quote(label)}"
        out.append(FacetCount(key, label, counts[key], expr))
    return out


def facets(
    hits: Sequence[RankedHit],
    specs: Sequence[FacetSpec],
    schema: FieldSchema,
    disjunctive: Mapping[str, Sequence[RankedHit]] | None = None,
) -> dict[str, list[FacetCount]]:
    """Every facet asked: field name -> its counts, in the order asked.

    Args:
        hits: The candidates of the query as filtered.
        specs: The facets (:func:`parse_facets`).
        schema: The index's field schema.
        disjunctive: For a field the filters select on, the candidates of the query with that
            field's own conditions removed; its facet is counted over those.
    """
    disjunctive = disjunctive or {}
    return {
        spec.field: facet_counts(disjunctive.get(spec.field, hits), schema.field(spec.field), spec)
        for spec in specs
    }


# --------------------------------------------------------------------------------------------
# Sort
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SortSpec:
    """A sort: ``"price:asc"``, ``"price:desc"`` (``"price"`` is ascending).

    Attributes:
        field: A sortable field's name.
        descending: Largest first.
    """

    field: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str | SortSpec | None, schema: FieldSchema) -> SortSpec | None:
        """The sort asked for; None for none (``None``, ``""`` or ``"relevance"``).

        Raises:
            ShopsearchError: A field that is not sortable (the sortable ones are named), or a
                direction other than asc/desc.
        """
        if text is None or isinstance(text, SortSpec):
            spec = text
        else:
            if not isinstance(text, str):
                raise ShopsearchError(f"sort {text!r}: give 'FIELD:asc' or 'FIELD:desc'")
            name, _, direction = text.strip().partition(":")
            name, direction = name.strip(), direction.strip().lower() or "asc"
            if not text.strip() or name.lower() == "relevance":
                return None
            if not name:
                raise ShopsearchError(f"sort {text!r}: give a field name, e.g. 'price:asc'")
            if direction not in ("asc", "desc"):
                raise ShopsearchError(
                    f"sort {text!r}: the direction is asc or desc (e.g. '{name}:asc')"
                )
            spec = cls(name, direction == "desc")
        if spec is None:
            return None
        return replace(spec, field=capable(schema, spec.field, "sortable", "sort").name)

    def __str__(self) -> str:
        return f"{self.field}:{'desc' if self.descending else 'asc'}"


def relevant(
    hits: Sequence[RankedHit], floor: float = SORT_FLOOR, depth: int | None = None
) -> list[RankedHit]:
    """The candidates relevant enough to be sorted (the module's "Sort"), in relevance order.

    Args:
        hits: Candidates, in relevance order.
        floor: Keep a first-stage score of at least ``floor`` times the best candidate's
            (0 keeps all; scores below 0 count as 0).
        depth: Keep at most the first this many (None: no limit).
    """
    pool = list(hits if depth is None else hits[:depth])
    if not pool or floor <= 0:
        return pool
    best = max(h.retrieval for h in hits)
    if best <= 0:
        return pool
    return [h for h in pool if h.retrieval >= floor * best]


def sort_hits(hits: Sequence[RankedHit], field: Field, descending: bool = False) -> list[RankedHit]:
    """Hits by a field's value (first value where several), ties in the given (relevance)
    order, hits without a value last, in that order too."""
    keyed: list[tuple[Any, RankedHit]] = []
    missing: list[RankedHit] = []
    for hit in hits:
        values = field_values(field, hit)
        if values:
            keyed.append((values[0][0], hit))
        else:
            missing.append(hit)
    keyed.sort(key=lambda pair: pair[0], reverse=descending)  # stable, reversed too
    return [h for _, h in keyed] + missing


def sort_relevant(
    hits: Sequence[RankedHit],
    field: Field,
    descending: bool = False,
    floor: float = SORT_FLOOR,
    depth: int | None = None,
) -> list[RankedHit]:
    """:func:`relevant`, then :func:`sort_hits`: what a sorted search returns."""
    return sort_hits(relevant(hits, floor, depth), field, descending)


# --------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiversifySpec:
    """``"brand:2"``: at most 2 products of one brand before every other brand had its turn.

    Attributes:
        field: A facetable field whose value makes the group (its first value).
        cap: Products per group per round.
    """

    field: str
    cap: int = DEFAULT_DIVERSITY_CAP

    @classmethod
    def parse(cls, text: str | DiversifySpec | None, schema: FieldSchema) -> DiversifySpec | None:
        """The diversity asked for; None for none (``None``, ``""``, ``"off"``).

        Raises:
            ShopsearchError: Not ``FIELD[:N]`` with a facetable field and N >= 1.
        """
        if text is None or isinstance(text, DiversifySpec):
            spec = text
        else:
            if not isinstance(text, str):
                raise ShopsearchError(f"diversify {text!r}: give 'FIELD:N', e.g. 'brand:2'")
            name, _, cap = text.strip().partition(":")
            name = name.strip()
            if not text.strip() or name.lower() in ("off", "none"):
                return None
            if not name:
                raise ShopsearchError(f"diversify {text!r}: give a field name, e.g. 'brand:2'")
            try:
                number = int(cap) if cap.strip() else DEFAULT_DIVERSITY_CAP
            except ValueError:
                number = 0
            if number < 1:
                raise ShopsearchError(
                    f"diversify {text!r}: give 'FIELD:N' with N >= 1 products per group, "
                    "e.g. 'brand:2'"
                )
            spec = cls(name, number)
        if spec is None:
            return None
        return replace(spec, field=capable(schema, spec.field, "facetable", "diversify").name)

    def __str__(self) -> str:
        return f"{self.field}:{self.cap}"


def diversify(
    hits: Sequence[RankedHit], group: Callable[[RankedHit], Hashable | None], cap: int
) -> list[RankedHit]:
    """Reorders hits so no group holds more than ``cap`` places per round.

    Round 1 takes each group's first ``cap`` hits, round 2 the next ``cap``, and so on; each
    round keeps the relevance order, and follows the previous one. A page thus holds at most
    ``cap`` per group while other groups have hits left; the order depends on neither k nor
    offset (paging stays consistent). A hit whose group is None is a group of its own.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    seen: Counter = Counter()
    rounds: list[list[RankedHit]] = []
    for i, hit in enumerate(hits):
        key = group(hit)
        if key is None:
            key = ("__alone__", i)
        turn = seen[key] // cap
        seen[key] += 1
        while len(rounds) <= turn:
            rounds.append([])
        rounds[turn].append(hit)
    return [h for r in rounds for h in r]


def group_by_field(field: Field) -> Callable[[RankedHit], Hashable | None]:
    """A hit's group for :func:`diversify`: its first value of ``field`` (None without)."""

    def group(hit: RankedHit) -> Hashable | None:
        values = field_values(field, hit)
        return values[0][0] if values else None

    return group


def check(
    schema: FieldSchema,
    facets: Sequence[str | FacetSpec] | None = None,
    sort: str | SortSpec | None = None,
    diversify: str | DiversifySpec | None = None,
) -> tuple[list[FacetSpec], SortSpec | None, DiversifySpec | None]:
    """A search's facets, sort and diversity, parsed and checked against an index's fields
    (what ``SearchPipeline.search`` does first; a service calls it to tell the request's
    mistakes from the index's).

    Raises:
        ShopsearchError: The first of them that names a field that cannot take it.
    """
    return (
        parse_facets(facets, schema),
        SortSpec.parse(sort, schema),
        DiversifySpec.parse(diversify, schema),
    )
