"""What a product is: the catalog schema shared by indexing, retrieval and reranking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Columns with a meaning of their own; any other column is kept as payload (``extra``).
KNOWN_COLUMNS = (
    "product_id",
    "title",
    "description",
    "brand",
    "category",
    "price",
    "in_stock",
    "attributes",
)
CATEGORY_SEPARATOR = " > "


@dataclass(frozen=True)
class Product:
    """One validated catalog row.

    Attributes:
        product_id: Unique, non-empty string.
        title: Non-empty title.
        description: Free text or None.
        brand: Brand name or None.
        category: Normalised path such as ``"Tools > Hand Tools > Pliers"`` or None.
        price: Non-negative price or None.
        in_stock: Stock flag or None when unknown.
        attributes: Flat mapping of attribute name to value (``{}`` when absent).
        extra: Other columns of the source row, kept as payload.
    """

    product_id: str
    title: str
    description: str | None = None
    brand: str | None = None
    category: str | None = None
    price: float | None = None
    in_stock: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Product:
        """Rebuilds a product from its stored payload (extra keys go to ``extra``)."""
        extra = {
            k: v for k, v in payload.items() if k not in KNOWN_COLUMNS and not k.startswith("_")
        }
        attributes = payload.get("attributes")
        return cls(
            product_id=str(payload["product_id"]),
            title=str(payload.get("title") or ""),
            description=payload.get("description"),
            brand=payload.get("brand"),
            category=payload.get("category"),
            price=payload.get("price"),
            in_stock=payload.get("in_stock"),
            attributes=dict(attributes) if isinstance(attributes, dict) else {},
            extra=extra,
        )

    def category_levels(self) -> list[str]:
        """Every prefix of the category path, shortest first (what category filters match)."""
        if not self.category:
            return []
        parts = self.category.split(CATEGORY_SEPARATOR)
        return [CATEGORY_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def normalize_category(value: str) -> str:
    """Normalise a category path: trims parts and joins them with ``" > "``."""
    parts = [p.strip() for p in value.replace(">", "\x00").split("\x00")]
    return CATEGORY_SEPARATOR.join(p for p in parts if p)
