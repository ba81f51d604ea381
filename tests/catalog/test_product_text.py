"""The product-text recipe (catalog.text) and category paths (catalog.schema)."""

from __future__ import annotations

from catalog.schema import Product, normalize_category
from catalog.text import product_text


def test_product_text_recipe():
    p = Product(
        product_id="1",
        title="Voltmax 20V Cordless Drill",
        brand="Voltmax",
        category="Tools > Power Tools > Drills",
        attributes={"voltage": "20V", "color": "Yellow", "weight": "3 lb"},
    )
    text = product_text(p)
    assert text.startswith("Voltmax 20V Cordless Drill")
    assert "brand:" not in text  # brand already in the title
    assert "category: Tools > Power Tools > Drills" in text
    assert "color: Yellow" in text and "voltage: 20V" in text and "weight" not in text
    q = Product(product_id="2", title="Shovel", brand="Diggers")
    assert product_text(q) == "Shovel | brand: Diggers"


def test_category_levels_and_normalisation():
    assert normalize_category(" Tools>Hand Tools >  Pliers ") == "Tools > Hand Tools > Pliers"
    p = Product(product_id="1", title="t", category="Tools > Hand Tools > Pliers")
    assert p.category_levels() == ["Tools", "Tools > Hand Tools", "Tools > Hand Tools > Pliers"]
