"""Search filters: what a shopper can narrow results by (pure data, no Qdrant types)."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.errors import ShopsearchError
from catalog.schema import normalize_category


@dataclass(frozen=True)
class Filters:
    """Conditions every hit must meet; ``None`` means "don't filter on this".

    Attributes:
        category: A category path or any prefix of it ("Tools" matches "Tools > Drills").
        brands: Any of these brands (exact match).
        min_price: Lowest price, inclusive.
        max_price: Highest price, inclusive.
        in_stock: True for in-stock products only (False for out-of-stock only).
    """

    category: str | None = None
    brands: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None

    def __post_init__(self) -> None:
        if self.category is not None:
            object.__setattr__(self, "category", normalize_category(self.category) or None)
        if self.brands is not None:
            object.__setattr__(self, "brands", tuple(self.brands) or None)
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ShopsearchError(f"filter {name}={value} is negative: prices are >= 0")
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
        return (
            self.category is None
            and self.brands is None
            and self.min_price is None
            and self.max_price is None
            and self.in_stock is None
        )

    @classmethod
    def coerce(cls, value: Filters | dict | None) -> Filters:
        """Accepts ``Filters``, a dict of its fields, or None."""
        if value is None:
            return cls()
        if isinstance(value, Filters):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {
                "category",
                "brands",
                "brand",
                "min_price",
                "max_price",
                "in_stock",
            }
            if unknown:
                raise ShopsearchError(
                    f"unknown filter field(s) {sorted(unknown)}: use category, brands, "
                    "min_price, max_price, in_stock"
                )
            fields = dict(value)
            brand = fields.pop("brand", None)
            if brand is not None:
                fields["brands"] = (brand,) if isinstance(brand, str) else tuple(brand)
            elif isinstance(fields.get("brands"), str):
                fields["brands"] = (fields["brands"],)
            return cls(**fields)
        raise TypeError(f"filters must be Filters, dict or None, not {type(value).__name__}")
