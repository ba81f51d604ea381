"""Catalog layer: product schema, reading and validating catalogs, the product-text recipe."""

from __future__ import annotations

from catalog.errors import ShopsearchError
from catalog.schema import Product
from catalog.text import RECIPE_VERSION, product_text

__all__ = ["RECIPE_VERSION", "Product", "ShopsearchError", "product_text"]
