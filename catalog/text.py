"""The product-text recipe: the one function that decides what the product tower reads."""

from __future__ import annotations

from catalog.schema import Product

#: Bump when :func:`product_text` changes: an index records it and refuses a mismatch.
RECIPE_VERSION = "title-brand-category-attrs/v1"
#: Attributes worth the encoder's attention, in this order, when a product has them.
KEY_ATTRIBUTES = ("color", "material", "size", "finish", "voltage", "capacity", "power_source")
MAX_ATTRIBUTES = 4


def product_text(product: Product) -> str:
    """Text for the product tower and the cross-encoder: title, brand, category, key attributes.

    The title comes first so truncation at the model's max length drops the least useful parts.
    """
    parts = [product.title.strip()]
    if product.brand and product.brand.lower() not in product.title.lower():
        parts.append(f"brand: {product.brand}")
    if product.category:
        parts.append(f"category: {product.category}")
    attrs = [
        f"{k.replace('_', ' ')}: {product.attributes[k]}"
        for k in KEY_ATTRIBUTES
        if product.attributes.get(k) not in (None, "")
    ][:MAX_ATTRIBUTES]
    if attrs:
        parts.append("; ".join(attrs))
    return " | ".join(parts)
