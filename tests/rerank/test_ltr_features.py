"""The learned stage's feature vector is frozen: the same inputs give the same values.

A saved model reads columns by position and value (``shopsearch-learned-ranker/v1``), so a
faster :func:`rerank.ltr.ranker_features` must give what the first one gave. The expected
arrays in ``ltr_features_v1.json`` were written by the first implementation (commit fd4d9f0,
``python tests/rerank/test_ltr_features.py --freeze``; the last case by its verbatim copy,
``research.bench_ltr_latency.features_v1``) on the lists below, which cover numbers,
measurements, model numbers, brands (field, first title word, non-text, empty, no tokens),
word pairs (and, inside texts, the separator the fast path looks pairs up with), a spelling
correction, the cross-encoder's logit on some candidates only, missing and odd product
fields, sources missing or foreign, and zero or negative scores (NaN cases).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rerank.ltr import FEATURE_NAMES, ranker_features
from retrieval.hits import RankedHit

FROZEN = Path(__file__).with_name("ltr_features_v1.json")


def _hit(pid, title, rank, fused, sources=(), cross=None, **payload):
    fields = dict(payload)
    if title is not ...:
        fields["title"] = title
    return RankedHit(pid, fused, fused, rank, cross=cross, payload=fields, sources=tuple(sources))


def cases() -> list[tuple[str, str, str | None, list[RankedHit]]]:
    """(name, query, corrected, hits) of each fixture list."""
    drills = [
        _hit(
            "a",
            "DEWALT 18-Volt 1/2 in. Hammer Drill DCD771",
            1,
            0.033,
            [("dense", 0.81, 2), ("bm25", 21.5, 1)],
            price=99.0,
            in_stock=True,
            brand="DEWALT",
            category="Power Tools",
        ),
        _hit(
            "b",
            "Makita 12-Volt 3/8 in. Drill",
            2,
            0.016,
            [("bm25", 10.25, 2)],
            price=59,
            in_stock=False,
        ),
        _hit(
            "c",
            "Drill Bit Set 1/2 in. (29-Piece)",
            3,
            0.015,
            [("dense", 0.62, 1)],
            brand="",
            category="Drill Bits",
            price="12.5",
        ),
        _hit(
            "d",
            "dcd771c2 Drill Kit dewalt",
            4,
            0.012,
            [("bm25", 3.0, 7), ("user", 0.9, 1)],
            brand=3,
            category=["tools"],
            price=float("nan"),
            in_stock=1,
        ),
        _hit("e", "& Co. Hammer", 5, 0.011, [("dense", 0.2, 9)], brand="&", price=float("inf")),
        _hit(
            "f",
            "DEWALT 18-Volt 1/2 in. Hammer Drill DCD771",
            6,
            0.01,
            [],
            price=True,
            in_stock=None,
        ),
    ]
    paint = [
        _hit(
            "p1",
            "Brilliant White Interior Paint 5 gal.",
            1,
            0.05,
            [("bm25", 8.0, 1)],
            cross=2.5,
            brand="Behr",
            category="Interior Paint",
        ),
        _hit("p2", "Interior White Paint and Primer", 2, 0.04, [("bm25", 7.5, 2)], cross=None),
        _hit(
            "p3",
            "Red Exterior Paint 1 gal.",
            3,
            0.03,
            [("dense", 0.5, 1)],
            cross=-1.25,
            brand="Glidden",
        ),
        _hit("p4", ..., 4, 0.02, [("dense", 0.45, 2)], cross=0.0),
        _hit("p5", None, 0, 0.01, [], cross=-3.0, category="Paint"),
    ]
    lumber = [
        _hit("l1", "2 in. x 4 in. x 8 ft. Stud", 1, 0.0, [("bm25", 0.0, 1)]),
        _hit("l2", "1000-Watt Work Light 2x4", 2, 0.0, [("bm25", -1.0, 2), ("dense", -0.1, 1)]),
        _hit("l3", "", 3, 0.0, [("dense", -0.3, 2)], brand="Lumber", category=""),
    ]
    insulation = [
        _hit(
            "i1",
            "R-13 Insulation 15 in. x 93 in. Roll",
            1,
            0.02,
            [("bm25", 12.0, 1)],
            brand="Owens Corning",
        ),
        _hit(
            "i2",
            "R-30 Insulation Batt 16 in.",
            2,
            0.019,
            [("bm25", 9.0, 2)],
            brand="Johns Manville",
            category="Insulation",
        ),
        _hit("i3", "Corning R-13 Kraft Faced", 3, 0.018, [("bm25", 8.0, 3)]),
    ]
    odd = [
        _hit("o1", "Interior White\x1fPaint", 1, 0.02, [("bm25", 5.0, 1)], brand="Behr\x1f"),
        _hit("o2", "White Paint\x1f\x1fInterior", 2, 0.01, [("bm25", 4.0, 2)]),
    ]
    return [
        ("numbers measures models brands", "dewalt 18v drill 1/2 in. dcd771", None, drills),
        ("a one-word query", "drill", None, drills),
        ("repeated words", "drill drill bits", None, drills),
        ("stopwords only", "the and of", None, drills),
        ("empty query", "", None, drills),
        ("typo read as corrected", "wihte intrior paint", "white interior paint", paint),
        ("typo not corrected", "wihte intrior paint", None, paint),
        ("pairs and the cross-encoder", "interior white paint 5 gal", None, paint),
        ("zero and negative scores", "2x4 stud 8 ft 1000 watt", None, lumber),
        ("pairs of numbers and units", "r-13 insulation 15 in owens corning", None, insulation),
        ("one candidate", "owens corning insulation", None, insulation[:1]),
        ("control characters in texts", "white\x1fpaint interior", None, odd),
    ]


def _encode(x: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in x.tolist()]


def freeze() -> None:
    """Writes the expected arrays (run once, by the implementation to freeze)."""
    out = {
        "features": list(FEATURE_NAMES),
        "cases": {
            name: _encode(ranker_features(query, hits, corrected))
            for name, query, corrected, hits in cases()
        },
    }
    FROZEN.write_text(json.dumps(out, indent=1) + "\n")


@pytest.mark.parametrize("name,query,corrected,hits", cases(), ids=[c[0] for c in cases()])
def test_features_are_the_frozen_values(name, query, corrected, hits):
    frozen = json.loads(FROZEN.read_text())
    assert frozen["features"] == list(FEATURE_NAMES)
    expected = np.array(
        [[np.nan if v is None else v for v in row] for row in frozen["cases"][name]],
        dtype=np.float32,
    ).reshape(len(hits), len(FEATURE_NAMES))
    got = ranker_features(query, hits, corrected)
    assert got.dtype == np.float32 and got.shape == expected.shape
    for j, feature in enumerate(FEATURE_NAMES):
        assert np.array_equal(got[:, j], expected[:, j], equal_nan=True), feature


if __name__ == "__main__" and sys.argv[1:] == ["--freeze"]:
    freeze()
