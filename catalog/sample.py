"""A realistic synthetic home-improvement catalog for the demo, tests and benchmarks.

Products come from a 3-level category tree (department > subcategory > leaf) with
department-specific brands, log-normal prices per leaf (ending in .97 or .99),
category-relevant attributes, Home-Depot-style titles and short descriptions. Output
is deterministic for ``(n, seed)``, and ``generate_products(n, seed)`` is a prefix of
``generate_products(m, seed)`` for ``m > n``.

The brands and the category tree (what each leaf's titles, descriptions, attributes and
prices look like) are data, ``sample.json`` beside this module (package data).
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from catalog.reader import detect_format
from catalog.schema import Product


@dataclass(frozen=True)
class _Leaf:
    """One leaf category: how to draw its products.

    Attributes:
        path: Full 3-level category path.
        price: (median, sigma, low, high) of the log-normal price.
        titles: Title templates; fields are ``brand`` and attribute names.
        sentences: Description sentence templates; the first is always used.
        attrs: Attribute name -> choices, drawn independently.
        variants: Correlated attribute bundles. Bundles with the same first key form a
            group; one bundle per group is drawn and merged before ``attrs``.
        scale: Attribute value -> price multiplier (e.g. pack sizes, gallons).

    Fields ending in ``_lower`` or ``_label`` only fill templates and are not stored.
    """

    path: str
    price: tuple[float, float, float, float]
    titles: tuple[str, ...]
    sentences: tuple[str, ...]
    attrs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()
    scale: dict[str, float] = field(default_factory=dict)

    @property
    def department(self) -> str:
        return self.path.split(" > ")[0]


def _variant_groups(leaf: _Leaf) -> tuple[tuple[dict[str, Any], ...], ...]:
    """Split a leaf's variants into groups: bundles whose first key is the same."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for variant in leaf.variants:
        groups.setdefault(next(iter(variant)), []).append(variant)
    return tuple(tuple(g) for g in groups.values())


def _load(name: str = "sample.json") -> tuple[dict[str, tuple[str, ...]], tuple[_Leaf, ...]]:
    """The brands per department and the leaves, from the JSON file shipped with this package."""
    data = json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))
    brands = {department: tuple(names) for department, names in data["brands"].items()}
    leaves = tuple(
        _Leaf(
            path=leaf["path"],
            price=tuple(leaf["price"]),
            titles=tuple(leaf["titles"]),
            sentences=tuple(leaf["sentences"]),
            attrs={name: tuple(choices) for name, choices in leaf.get("attrs", {}).items()},
            variants=tuple(leaf.get("variants", ())),
            scale=leaf.get("scale", {}),
        )
        for leaf in data["leaves"]
    )
    return brands, leaves


_BRANDS, _LEAVES = _load()

#: Template fields that are wording, not product attributes: lower-case forms and labels.
_TEMPLATE_ONLY_SUFFIXES = ("_lower", "_label")

_VARIANT_GROUPS = {leaf.path: _variant_groups(leaf) for leaf in _LEAVES}

#: Every leaf category of the sample catalog, in tree order.
LEAF_CATEGORIES: tuple[str, ...] = tuple(leaf.path for leaf in _LEAVES)

#: Shopper queries that match products of the generated catalog (for the demo).
SAMPLE_QUERIES: tuple[str, ...] = (
    "20v cordless drill kit",
    "brushless impact driver",
    "matte black kitchen faucet pull down",
    "60 watt equivalent led bulbs daylight",
    "farmhouse pendant light for kitchen island",
    "eggshell interior paint agreeable gray",
    "waterproof luxury vinyl plank flooring",
    "gfci outlet 20 amp",
    "self propelled gas lawn mower",
    "french door refrigerator stainless steel with ice maker",
    "100 ft outdoor extension cord",
    "4 burner propane grill",
)


def generate_products(n: int, seed: int = 0) -> list[Product]:
    """Generate ``n`` synthetic products, deterministic for ``(n, seed)``.

    Args:
        n: Number of products (ids ``SKU-000001`` ...).
        seed: Random seed.

    Returns:
        The products, in id order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    return [_product(rng, i + 1) for i in range(n)]


def write_sample_catalog(path: str | os.PathLike[str], n: int = 2000, seed: int = 0) -> Path:
    """Write a synthetic catalog; the format follows the extension (see ``detect_format``).

    CSV/TSV write ``attributes`` as a JSON string, JSONL as a JSON object and Parquet as a
    JSON string column.

    Args:
        path: Output file (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``, ``.json``,
            ``.parquet``, ``.pq``); parent directories are created.
        n: Number of products.
        seed: Random seed.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = detect_format(path)
    products = generate_products(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as fh:
            for p in products:
                record = {
                    "product_id": p.product_id,
                    "title": p.title,
                    "description": p.description,
                    "brand": p.brand,
                    "category": p.category,
                    "price": p.price,
                    "in_stock": p.in_stock,
                    "attributes": p.attributes,
                }
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
    frame = pl.DataFrame(
        {
            "product_id": [p.product_id for p in products],
            "title": [p.title for p in products],
            "description": [p.description for p in products],
            "brand": [p.brand for p in products],
            "category": [p.category for p in products],
            "price": [p.price for p in products],
            "in_stock": [p.in_stock for p in products],
            "attributes": [json.dumps(p.attributes, ensure_ascii=False) for p in products],
        },
        schema={
            "product_id": pl.String,
            "title": pl.String,
            "description": pl.String,
            "brand": pl.String,
            "category": pl.String,
            "price": pl.Float64,
            "in_stock": pl.Boolean,
            "attributes": pl.String,
        },
    )
    if fmt == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",")
    return path


def _product(rng: random.Random, number: int) -> Product:
    leaf = _LEAVES[rng.randrange(len(_LEAVES))]
    brand = rng.choice(_BRANDS[leaf.department])
    values: dict[str, Any] = {}
    for group in _VARIANT_GROUPS[leaf.path]:
        values.update(rng.choice(group))
    for name, choices in leaf.attrs.items():
        values.setdefault(name, rng.choice(choices))
    fields = _Defaults(values, brand=brand)
    title = rng.choice(leaf.titles).format_map(fields)
    count = 1 + min(2, int(rng.random() * 3))
    chosen = [leaf.sentences[0], *rng.sample(leaf.sentences[1:], count - 1)]
    description = " ".join(s.format_map(fields) for s in chosen)
    attributes = {k: v for k, v in values.items() if not k.endswith(_TEMPLATE_ONLY_SUFFIXES)}
    factor = math.prod(leaf.scale.get(v, 1.0) for v in set(values.values()))
    return Product(
        product_id=f"SKU-{number:06d}",
        title=" ".join(title.split()),
        description=" ".join(description.split()),
        brand=brand,
        category=leaf.path,
        price=_price(rng, leaf.price, factor),
        in_stock=rng.random() < 0.85,
        attributes=attributes,
    )


class _Defaults(dict):
    """Template fields; a field the leaf never sets renders as an empty string."""

    def __init__(self, values: dict[str, Any], brand: str) -> None:
        super().__init__(values, brand=brand)

    def __missing__(self, key: str) -> str:
        return ""


def _price(rng: random.Random, params: tuple[float, float, float, float], factor: float) -> float:
    """Log-normal price around ``median * factor``, clipped to [low, high], ending .97/.99."""
    median, sigma, low, high = params
    raw = median * factor * math.exp(rng.gauss(0.0, sigma))
    dollars = int(min(max(raw, low), high))
    return round(dollars + rng.choice((0.97, 0.99)), 2)
