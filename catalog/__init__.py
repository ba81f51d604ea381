"""Catalog layer: product schema, reading and validating catalogs, the product-text recipe."""

from __future__ import annotations

from catalog.schema import Product
from catalog.text import RECIPE_VERSION, product_text
from core.errors import ShopsearchError

__all__ = ["RECIPE_VERSION", "Product", "ShopsearchError", "product_text"]
