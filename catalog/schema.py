"""What a product is: the catalog schema shared by indexing, retrieval and reranking."""

from __future__ import annotations

import html
import re
import unicodedata
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
#: Fields a search result adds next to a product's own (``--json`` hits, rerank hits). A
#: catalog column with one of these names, a name that differs from one of them or from a
#: known column only in case or spaces, or a name starting with ``_`` (the store's own keys)
#: is kept under :data:`RENAMED_PREFIX` + its name instead.
RESERVED_COLUMNS = frozenset(
    {
        "score",
        "rank",
        "relevance",
        "personalization",
        "retrieval_score",
        "retrieval_rank",
        "cross_score",
        "because",
        "payload",
        "product",
    }
)
RENAMED_PREFIX = "catalog_"
# "&amp;" followed by another entity: text that was HTML-encoded twice.
_DOUBLE_ENCODED = re.compile(r"&amp;(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# Invisible characters that only get in the way of matching (zero-width space, BOM, soft hyphen).
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\ufeff\u00ad"), None)


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


def clean_text(value: str) -> str:
    """Decode text as shop exports encode it: what shoppers see and filters match.

    HTML entities are decoded (``&amp;`` -> ``&``, ``&#39;`` -> ``'``, ``&quot;``; text
    encoded twice, ``&amp;amp;``, is decoded twice), non-breaking and other Unicode spaces
    become plain spaces, zero-width spaces, BOMs and soft hyphens are removed, and the
    result is Unicode NFC. Leading and trailing spaces are stripped.
    """
    if "&" in value:
        twice = _DOUBLE_ENCODED.search(value) is not None
        value = html.unescape(value)
        if twice:
            value = html.unescape(value)
    if not value.isascii():
        value = value.translate(_INVISIBLE)
        value = "".join(" " if unicodedata.category(c) == "Zs" else c for c in value)
        value = unicodedata.normalize("NFC", value)
    return value.strip()


def is_reserved_column(name: str) -> bool:
    """True when an extra catalog column's name would collide with a result's own fields."""
    key = name.strip().casefold()
    return (
        not key
        or name.startswith("_")
        or key.startswith("_")
        or key in RESERVED_COLUMNS
        or key in KNOWN_COLUMNS
    )


def normalize_category(value: str) -> str:
    """Normalise a category path: trims parts and joins them with ``" > "``."""
    parts = [p.strip() for p in value.replace(">", "\x00").split("\x00")]
    return CATEGORY_SEPARATOR.join(p for p in parts if p)
