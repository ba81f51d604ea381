"""Search filters: what a shopper can narrow results by (pure data, no Qdrant types).

Values may arrive as strings (URL query parameters, form fields): each field is coerced by its
type or refused with a one-line ``ShopsearchError`` that names the field.

Besides the four shorthands (category, brands, price range, in stock), ``where`` takes a filter
expression over any filterable field of the index's schema (``catalog.fields``)::

    brand = DeWalt AND (voltage >= 18 OR category = "Tools > Drills") AND NOT in_stock = false
    brand IN [DeWalt, "Black & Decker"]      price 10 TO 50      created_at >= 2026-01-01

``NOT`` binds tighter than ``AND``, ``AND`` tighter than ``OR``; keywords are case-insensitive.
The expression is parsed with Lark (an LALR grammar, :data:`GRAMMAR`) when a ``Filters`` is
made, and its fields and values are checked against the index's schema when it is bound to one
(:meth:`Filters.conditions`): engine-neutral :data:`Condition` trees that both backends spell
in their own types (``retrieval.store.request.engine_filter``) and that :meth:`Filters.matches`
evaluates in Python with the same semantics.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from typing import Any

from catalog.fields import (
    Field,
    FieldSchema,
    category_keys,
    keyword_key,
    parse_bool,
    parse_date,
    parse_number,
)
from catalog.schema import normalize_category
from core.errors import ShopsearchError

FIELDS = ("category", "brands", "min_price", "max_price", "in_stock", "where")
#: The shorthands' field names in the schema (for :meth:`Filters.without`).
_SHORTHAND_FIELD = {
    "category": "category",
    "brands": "brand",
    "min_price": "price",
    "max_price": "price",
    "in_stock": "in_stock",
}
#: Longest filter expression accepted (characters).
MAX_EXPRESSION_CHARS = 4000
_DAY_S = 86400.0
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _to_bool(name: str, value: Any) -> bool | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ShopsearchError(f"filter {name}={value!r}: use true or false")


def _to_price(name: str, value: Any) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise ShopsearchError(f"filter {name}={value!r}: give a price, a number >= 0")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ShopsearchError(
            f"filter {name}={value!r} is not a number: give a price, a number >= 0"
        ) from None
    if not math.isfinite(number):
        raise ShopsearchError(f"filter {name}={value!r} is not finite: give a number >= 0")
    if number < 0:
        raise ShopsearchError(f"filter {name}={value!r} is negative: prices are >= 0")
    return number


def _to_brands(value: Any) -> tuple[str, ...] | None:
    if _blank(value):
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ShopsearchError(
            f"filter brands={value!r}: give a brand, a comma-separated list or a list of brands"
        )
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ShopsearchError(f"filter brands: {item!r} is not a brand name (a string)")
        out.extend(part.strip() for part in item.split(",") if part.strip())
    return tuple(dict.fromkeys(out)) or None


def _to_category(value: Any) -> str | None:
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise ShopsearchError(
            f"filter category={value!r}: give a category path such as 'Tools > Drills'"
        )
    return normalize_category(value) or None


# --------------------------------------------------------------------------------------------
# Engine-neutral conditions (both backends spell these; Filters.matches evaluates them)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Payload ``key`` equals ``value`` (a keyword string or an integer); a list payload
    matches when any of its items does."""

    key: str
    value: str | int


@dataclass(frozen=True)
class MatchAny:
    """Payload ``key`` equals any of ``values``."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    """Payload ``key`` within the bounds (None: unbounded): ``gte``/``lte`` inclusive,
    ``gt``/``lt`` exclusive."""

    key: str
    gte: float | None
    lte: float | None
    gt: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class All:
    """Every condition holds (AND)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one condition holds (OR)."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    """The condition does not hold (a product without the field meets ``NOT field = x``)."""

    item: Condition


Condition = Match | MatchAny | Range | All | AnyOf | Not


def holds(cond: Condition, payload: dict[str, Any]) -> bool:
    """Whether a stored payload meets a condition, as the engine decides it.

    A list value meets a match or a range when any item does; a missing key meets none.
    """
    if isinstance(cond, All):
        return all(holds(c, payload) for c in cond.items)
    if isinstance(cond, AnyOf):
        return any(holds(c, payload) for c in cond.items)
    if isinstance(cond, Not):
        return not holds(cond.item, payload)
    value = payload.get(cond.key)
    items = value if isinstance(value, list) else [] if value is None else [value]
    if isinstance(cond, Match):
        return any(_same(v, cond.value) for v in items)
    if isinstance(cond, MatchAny):
        return any(_same(v, w) for v in items for w in cond.values)
    return any(_in_range(v, cond) for v in items)


@functools.lru_cache(maxsize=4096)
def _keys(conds: tuple[Condition, ...]) -> frozenset[str]:
    """The payload keys a tuple of conditions reads."""
    out: set[str] = set()
    todo = list(conds)
    while todo:
        c = todo.pop()
        if isinstance(c, (All, AnyOf)):
            todo.extend(c.items)
        elif isinstance(c, Not):
            todo.append(c.item)
        else:
            out.add(c.key)
    return frozenset(out)


def _same(stored: Any, wanted: str | int) -> bool:
    if isinstance(wanted, str) or isinstance(stored, str):
        return stored == wanted
    return not isinstance(stored, float) and int(stored) == wanted


def _in_range(value: Any, r: Range) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (
        (r.gte is None or value >= r.gte)
        and (r.lte is None or value <= r.lte)
        and (r.gt is None or value > r.gt)
        and (r.lt is None or value < r.lt)
    )


# --------------------------------------------------------------------------------------------
# Filter expressions: the grammar, its tree, and binding a tree to a schema
# --------------------------------------------------------------------------------------------

#: The filter expression grammar (Lark, LALR). Keywords are case-insensitive; a value with
#: spaces or any of ``[](),=!<>`` is quoted (double or single quotes, backslash escapes).
GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> negation
    | "(" or_expr ")"
    | comparison
comparison: NAME OP value -> compare
    | NAME _IN "[" value ("," value)* ","? "]" -> any_of
    | NAME value _TO value -> between
?value: WORD | STRING
OP: "!=" | ">=" | "<=" | "=" | ">" | "<"
_OR.2: /OR\b/i
_AND.2: /AND\b/i
_NOT.2: /NOT\b/i
_IN.2: /IN\b/i
_TO.2: /TO\b/i
NAME: /[A-Za-z][A-Za-z0-9_]*/
WORD: /[^\s\[\](),"'=!<>]+/
STRING: /"(?:[^"\\]|\\.)*"/ | /'(?:[^'\\]|\\.)*'/
%ignore /\s+/
"""


@dataclass(frozen=True)
class Compare:
    """``field op values``: op is ``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``IN``
    (any of the values) or ``TO`` (between the two values, inclusive)."""

    field: str
    op: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class And:
    """Both sides (or all items) hold."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    """At least one item holds."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Negation:
    """The item does not hold."""

    item: Expr


Expr = Compare | And | Or | Negation


@functools.cache
def _parser():
    from lark import Lark, Transformer

    def unquote(token) -> str:
        text = str(token)
        if token.type != "STRING":
            return text
        body, out, i = text[1:-1], [], 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                i += 1
            out.append(body[i])
            i += 1
        return "".join(out)

    class ToTree(Transformer):
        def compare(self, items):
            name, op, value = items
            return Compare(str(name), str(op), (unquote(value),))

        def any_of(self, items):
            return Compare(str(items[0]), "IN", tuple(unquote(v) for v in items[1:]))

        def between(self, items):
            return Compare(str(items[0]), "TO", (unquote(items[1]), unquote(items[2])))

        def negation(self, items):
            return Negation(items[0])

        def and_expr(self, items):
            return And(tuple(items))

        def or_expr(self, items):
            return Or(tuple(items))

    return Lark(GRAMMAR, parser="lalr", transformer=ToTree())


@functools.lru_cache(maxsize=4096)
def parse_expression(text: str) -> Expr:
    """The tree of a filter expression (syntax only; fields are checked by :func:`bind`).

    Raises:
        ShopsearchError: a syntax error, as one line with its column and a hint.
    """
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

    if len(text) > MAX_EXPRESSION_CHARS:
        raise ShopsearchError(
            f"filter expression is {len(text)} characters long (limit {MAX_EXPRESSION_CHARS})"
        )
    try:
        return _parser().parse(text)
    except UnexpectedInput as exc:
        if isinstance(exc, UnexpectedEOF):
            what = "it ends too early"
        elif isinstance(exc, UnexpectedCharacters):
            what = f"unexpected {text[exc.pos_in_stream]!r} at column {exc.column}"
        else:
            token = getattr(exc, "token", None)
            if token is None or token.type == "$END":
                what = "it ends too early"
            else:
                what = f"unexpected {str(token)!r} at column {exc.column}"
        raise ShopsearchError(
            f"filter {text!r}: {what}; write e.g. brand = DeWalt AND price 10 TO 50 "
            '(quote values with spaces: brand = "Black & Decker")'
        ) from None


def unparse(expr: Expr) -> str:
    """An expression's text (a canonical spelling: ``parse_expression(unparse(e)) == e``)."""
    if isinstance(expr, Compare):
        vals = [_quote(v) for v in expr.values]
        if expr.op == "IN":
            return f"{expr.field} IN [{', '.join(vals)}]"
        if expr.op == "TO":
            return f"{expr.field} {vals[0]} TO {vals[1]}"
        return f"{expr.field} {expr.op} {vals[0]}"
    if isinstance(expr, Negation):
        inner = unparse(expr.item)
        return f"NOT {inner}" if isinstance(expr.item, (Compare, Negation)) else f"NOT ({inner})"
    sep, inner_type = (" AND ", Or) if isinstance(expr, And) else (" OR ", ())
    return sep.join(
        f"({unparse(e)})" if isinstance(e, inner_type) else unparse(e) for e in expr.items
    )


def _quote(value: str) -> str:
    bare = (
        value
        and all(c not in value for c in " \t\n[](),\"'=!<>")
        and value.upper() not in ("AND", "OR", "NOT", "IN", "TO")
    )
    if bare:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def expression_fields(expr: Expr) -> set[str]:
    """The field names an expression uses (casefolded)."""
    if isinstance(expr, Compare):
        return {expr.field.casefold()}
    if isinstance(expr, Negation):
        return expression_fields(expr.item)
    return set().union(*(expression_fields(e) for e in expr.items))


def conjuncts(expr: Expr) -> tuple[Expr, ...]:
    """The top-level AND items of an expression (itself when it is no AND)."""
    return expr.items if isinstance(expr, And) else (expr,)


def bind(expr: Expr, schema: FieldSchema) -> Condition:
    """An expression as engine-neutral conditions on the schema's payload keys.

    Raises:
        ShopsearchError: an unknown or non-filterable field (names the filterable ones), an
            operator its type does not have, or a value that does not fit its type.
    """
    if isinstance(expr, And):
        return All(tuple(bind(e, schema) for e in expr.items))
    if isinstance(expr, Or):
        return AnyOf(tuple(bind(e, schema) for e in expr.items))
    if isinstance(expr, Negation):
        return Not(bind(expr.item, schema))
    try:
        f = schema.field(expr.field)
    except ShopsearchError:
        f = None
    if f is None or not f.filterable:
        what = "unknown field" if f is None else "field"
        why = "" if f is None else " (not filterable)"
        raise ShopsearchError(
            f"filter on {what} {expr.field!r}{why}: filterable fields are "
            f"{', '.join(schema.names('filterable'))}; declare others in a schema file "
            "(shopsearch index --schema FILE)"
        )
    return _compare(f, expr)


def _compare(f: Field, c: Compare) -> Condition:
    op = c.op
    if f.type in ("keyword", "category", "bool"):
        if op not in ("=", "!=", "IN"):
            raise ShopsearchError(
                f"filter {unparse(c)}: {f.name} is a {f.type} field; use =, != or IN"
            )
        keys = tuple(dict.fromkeys(_key(f, v) for v in c.values))
        cond: Condition = Match(f.key, keys[0]) if len(keys) == 1 else MatchAny(f.key, keys)  # type: ignore[arg-type]
        if f.type == "bool" and len(keys) > 1:
            cond = AnyOf(tuple(Match(f.key, k) for k in keys))
        return Not(cond) if op == "!=" else cond
    bounds = [_bounds(f, v) for v in c.values]
    if op == "TO":
        (low, _), (high, high_end) = bounds
        return Range(f.key, gte=low, lte=None if high_end is not None else high, lt=high_end)
    if op in ("=", "!=", "IN"):
        ranges = [
            Range(f.key, gte=x, lte=None, lt=end) if end is not None else Range(f.key, x, x)
            for x, end in bounds
        ]
        cond = ranges[0] if len(ranges) == 1 else AnyOf(tuple(ranges))
        return Not(cond) if op == "!=" else cond
    x, end = bounds[0]
    if op == ">":
        return Range(f.key, None, None, gt=x) if end is None else Range(f.key, end, None)
    if op == ">=":
        return Range(f.key, x, None)
    if op == "<":
        return Range(f.key, None, None, lt=x)
    return Range(f.key, None, x) if end is None else Range(f.key, None, None, lt=end)


def _key(f: Field, value: str) -> str | int:
    if f.type == "bool":
        try:
            return int(parse_bool(value))
        except ValueError:
            raise ShopsearchError(
                f"filter {f.name} = {value!r}: {f.name} is a bool field; use true or false"
            ) from None
    if f.type == "category":
        keys = category_keys(value)
        if not keys:
            raise ShopsearchError(
                f"filter {f.name} = {value!r}: give a category path such as 'Tools > Drills'"
            )
        return keys[-1]
    return keyword_key(value)


def _bounds(f: Field, value: str) -> tuple[float, float | None]:
    """(value, end of its day for a whole-day date else None) of a number or date field."""
    try:
        if f.type == "date":
            seconds, whole_day = parse_date(value)
            return seconds, seconds + _DAY_S if whole_day else None
        return parse_number(value, f.unit), None
    except ValueError as exc:
        raise ShopsearchError(f"filter on {f.name}: {exc}; {f.name} is a {f.type} field") from None


def _to_expression(value: Any) -> str | None:
    if _blank(value):
        return None
    if not isinstance(value, str):
        raise ShopsearchError(
            f"filter expression {value!r}: give text such as 'brand = DeWalt AND price < 100'"
        )
    text = value.strip()
    parse_expression(text)  # raises on a syntax error
    return text


@dataclass(frozen=True)
class Filters:
    """Conditions every hit must meet; ``None`` means "don't filter on this".

    Brand and category match however the text is spelled (letter case, extra spaces, HTML
    entities such as ``&amp;``). Strings are accepted for every field (``"false"``, ``"100"``,
    ``"DeWalt,Makita"``); an empty string means "don't filter".

    Attributes:
        category: A category path or any prefix of it ("Tools" matches "Tools > Drills").
        brands: Any of these brands.
        min_price: Lowest price, inclusive.
        max_price: Highest price, inclusive.
        in_stock: True for in-stock products only (False for out-of-stock only).
        where: A filter expression over any filterable field (module docstring), ANDed with
            the shorthands above; its syntax is checked here, its fields against the index's
            schema when the filter is bound to one (:meth:`conditions`).

    Raises:
        ShopsearchError: a value that is not of its field's type (the field is named), a
            negative, NaN or infinite price, min_price above max_price, or an expression
            that does not parse (one line with the column).
    """

    category: str | None = None
    brands: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    where: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _to_category(self.category))
        object.__setattr__(self, "brands", _to_brands(self.brands))
        object.__setattr__(self, "min_price", _to_price("min_price", self.min_price))
        object.__setattr__(self, "max_price", _to_price("max_price", self.max_price))
        object.__setattr__(self, "in_stock", _to_bool("in_stock", self.in_stock))
        object.__setattr__(self, "where", _to_expression(self.where))
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise ShopsearchError(
                f"filter min_price={self.min_price} is above max_price={self.max_price}"
            )

    def is_empty(self) -> bool:
        """True when no condition is set."""
        return all(getattr(self, name) is None for name in FIELDS)

    def text(self) -> str | None:
        """These filters as one filter expression (the grammar of ``where``); None when empty.
        What the service's search log records."""
        if self.is_empty():
            return None
        parts = []
        if self.category is not None:
            parts.append(f"category = {json.dumps(self.category, ensure_ascii=False)}")
        if self.brands:
            brands = ", ".join(json.dumps(b, ensure_ascii=False) for b in self.brands)
            parts.append(f"brand IN [{brands}]")
        if self.min_price is not None:
            parts.append(f"price >= {self.min_price:g}")
        if self.max_price is not None:
            parts.append(f"price <= {self.max_price:g}")
        if self.in_stock is not None:
            parts.append(f"in_stock = {'true' if self.in_stock else 'false'}")
        if self.where:
            parts.append(f"({self.where})" if parts else self.where)
        return " AND ".join(parts)

    def and_where(self, expression: str | None) -> Filters:
        """These filters and one more expression (ANDed with ``where``, if any)."""
        extra = _to_expression(expression)
        if extra is None:
            return self
        where = extra if self.where is None else f"({self.where}) AND ({extra})"
        return replace(self, where=where)

    @property
    def expression(self) -> Expr | None:
        """The parsed ``where`` expression (None without one)."""
        return None if self.where is None else parse_expression(self.where)

    def conditions(self, schema: FieldSchema | None = None) -> tuple[Condition, ...]:
        """Engine-neutral conditions, all of which must hold (shorthands, then ``where``).

        Args:
            schema: The index's fields; None is :meth:`FieldSchema.default`.

        Raises:
            ShopsearchError: ``where`` names a field the schema does not have as filterable,
                or a value its type cannot take (see :func:`bind`).
        """
        return _conditions(self, schema or FieldSchema.default())

    def check(self, schema: FieldSchema) -> Filters:
        """Itself, once its expression's fields and values fit ``schema`` (else the error)."""
        self.conditions(schema)
        return self

    def matches(self, payload: dict[str, Any], schema: FieldSchema | None = None) -> bool:
        """Whether a payload meets every condition (the engine's semantics, in Python).

        Args:
            payload: A point's payload as stored, or a hit's public payload (the normalized
                ``_`` keys it lacks are computed from its fields' values).
            schema: The index's fields; None is :meth:`FieldSchema.default`.
        """
        schema = schema or FieldSchema.default()
        conds = self.conditions(schema)
        if not conds:
            return True
        view = schema.with_filter_keys(payload, _keys(conds))
        return all(holds(c, view) for c in conds)

    def without(self, field_name: str) -> Filters:
        """These filters less every top-level AND condition on one field (the shorthand on it
        and each ``where`` item that uses no other field): what a disjunctive facet counts."""
        folded = field_name.casefold()
        changes: dict[str, Any] = {
            name: None for name, target in _SHORTHAND_FIELD.items() if target == folded
        }
        expr = self.expression
        if expr is not None:
            kept = [e for e in conjuncts(expr) if expression_fields(e) != {folded}]
            changes["where"] = (
                None if not kept else unparse(kept[0] if len(kept) == 1 else And(tuple(kept)))
            )
        return replace(self, **changes)

    def parts(self) -> list[tuple[str, Filters]]:
        """Each condition alone, with a phrase for messages (``"brand 'dewalt'"``); each
        top-level AND item of ``where`` is one (its text)."""
        out: list[tuple[str, Filters]] = []
        if self.category is not None:
            out.append((f"category '{self.category}'", Filters(category=self.category)))
        if self.brands is not None:
            names = " or ".join(f"'{b}'" for b in self.brands)
            out.append((f"brand {names}", Filters(brands=self.brands)))
        if self.min_price is not None or self.max_price is not None:
            low = "" if self.min_price is None else f"{self.min_price:g}"
            high = "" if self.max_price is None else f"{self.max_price:g}"
            out.append(
                (
                    f"price in [{low or '0'}, {high or 'any'}]",
                    Filters(min_price=self.min_price, max_price=self.max_price),
                )
            )
        if self.in_stock is not None:
            out.append(
                (
                    "in stock" if self.in_stock else "out of stock",
                    Filters(in_stock=self.in_stock),
                )
            )
        expr = self.expression
        if expr is not None:
            for item in conjuncts(expr):
                text = unparse(item)
                out.append((text, Filters(where=text)))
        return out

    @classmethod
    def coerce(cls, value: Filters | dict | None) -> Filters:
        """``Filters`` from itself, a dict of its fields (``brand`` also accepted), or None.

        Raises:
            ShopsearchError: an unknown field, or a value its field cannot take.
            TypeError: ``value`` is none of these types.
        """
        if value is None:
            return cls()
        if isinstance(value, Filters):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {*FIELDS, "brand"}
            if unknown:
                raise ShopsearchError(
                    f"unknown filter field(s) {sorted(map(str, unknown))}: use category, brands, "
                    "min_price, max_price, in_stock, or where (a filter expression)"
                )
            fields = dict(value)
            brand = fields.pop("brand", None)
            if brand is not None:
                if fields.get("brands") is not None:
                    raise ShopsearchError("filter: give brand or brands, not both")
                fields["brands"] = brand
            return cls(**fields)
        raise TypeError(f"filters must be Filters, dict or None, not {type(value).__name__}")


@functools.lru_cache(maxsize=4096)
def _conditions(filters: Filters, schema: FieldSchema) -> tuple[Condition, ...]:
    out: list[Condition] = []
    if filters.category:
        keys = category_keys(filters.category)
        if keys:
            out.append(Match(schema.field("category").key, keys[-1]))
    if filters.brands:
        brands = tuple(dict.fromkeys(keyword_key(b) for b in filters.brands))
        out.append(MatchAny(schema.field("brand").key, brands))
    if filters.min_price is not None or filters.max_price is not None:
        out.append(Range(schema.field("price").key, filters.min_price, filters.max_price))
    if filters.in_stock is not None:
        out.append(Match(schema.field("in_stock").key, int(filters.in_stock)))
    expr = filters.expression
    if expr is not None:
        bound = bind(expr, schema)
        out.extend(bound.items if isinstance(bound, All) else (bound,))
    return tuple(out)
