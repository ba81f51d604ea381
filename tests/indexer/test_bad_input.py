"""A shop's bad catalog end to end: encoded text, a reserved column, a product without words
and a NaN value, indexed (rejects and warnings) and searched in several scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ShopsearchError

# ---------------------------------------------------------------- the catalog end to end


@pytest.fixture()
def shop_index(tmp_path: Path, tiny_encoder):
    from indexer.build import index_catalog
    from retrieval.store import IndexLocation

    path = tmp_path / "catalog.jsonl"
    rows = [
        {
            "product_id": "H1",
            "title": "Black &amp; Decker Drill",
            "brand": "Black &amp; Decker",
            "category": "Tools &amp; Hardware > Drills",
            "score": 4.7,
        },
        {"product_id": "R2", "title": "Рулетка измерительная 5 м", "brand": "Зубр", "score": 3.0},
        {"product_id": "R3", "title": "Смеситель для кухни", "brand": "Грое"},
        {"product_id": "E4", "title": "🔥🔥🔥"},
        {"product_id": "N5", "title": "Garden Hose", "rating": float("nan")},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    warnings: list[str] = []
    loc = IndexLocation(path=tmp_path / "idx")
    summary = index_catalog(
        path,
        loc,
        encoder=tiny_encoder,
        progress=False,
        rejects_path=tmp_path / "rejects.csv",
        warn=warnings.append,
    )
    return loc, summary, warnings, tmp_path / "rejects.csv"


def test_shop_catalog_end_to_end(shop_index, tiny_encoder) -> None:
    from retrieval.retriever import Retriever

    loc, summary, warnings, rejects = shop_index
    assert (summary.indexed, summary.rejected) == (4, 1)
    assert "5,N5,\"column 'rating' is NaN" in rejects.read_text()
    assert any("'score'" in w and "catalog_score" in w for w in warnings)
    assert any("1 of 4 product(s) have no word BM25 can index ('E4')" in w for w in warnings)
    with Retriever.open(loc.path, encoder=tiny_encoder) as r:
        (hit,) = r.search("рулетка", k=3, mode="bm25")
        assert hit.product_id == "R2" and hit.payload["catalog_score"] == 3.0
        assert "score" not in hit.payload
        hit = r.search("drill", k=1, mode="bm25")[0]
        assert hit.payload["title"] == "Black & Decker Drill"
        assert hit.payload["brand"] == "Black & Decker"
        assert hit.payload["category"] == "Tools & Hardware > Drills"
        for mode in ("dense", "bm25", "hybrid"):
            for query in ("???", "🔥🔥", "   "):
                with pytest.raises(ShopsearchError, match="query is empty"):
                    r.search(query, k=3, mode=mode)
