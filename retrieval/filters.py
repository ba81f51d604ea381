"""Search filters: what a shopper can narrow results by (pure data, no Qdrant types).

Values may arrive as strings (URL query parameters, form fields): each field is coerced by its
type or refused with a one-line ``ShopsearchError`` that names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from catalog.schema import normalize_category
from core.errors import ShopsearchError

FIELDS = ("category", "brands", "min_price", "max_price", "in_stock")
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

    Raises:
        ShopsearchError: a value that is not of its field's type (the field is named), a
            negative, NaN or infinite price, or min_price above max_price.
    """

    category: str | None = None
    brands: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", _to_category(self.category))
        object.__setattr__(self, "brands", _to_brands(self.brands))
        object.__setattr__(self, "min_price", _to_price("min_price", self.min_price))
        object.__setattr__(self, "max_price", _to_price("max_price", self.max_price))
        object.__setattr__(self, "in_stock", _to_bool("in_stock", self.in_stock))
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

    def parts(self) -> list[tuple[str, Filters]]:
        """Each condition alone, with a phrase for messages (``"brand 'dewalt'"``)."""
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
                    "min_price, max_price, in_stock"
                )
            fields = dict(value)
            brand = fields.pop("brand", None)
            if brand is not None:
                if fields.get("brands") is not None:
                    raise ShopsearchError("filter: give brand or brands, not both")
                fields["brands"] = brand
            return cls(**fields)
        raise TypeError(f"filters must be Filters, dict or None, not {type(value).__name__}")
