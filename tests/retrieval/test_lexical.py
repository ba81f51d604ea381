"""Tests for retrieval.lexical: tokeniser, hashing, BM25 values, and Qdrant end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.errors import ShopsearchError
from retrieval.lexical import Bm25Params, LexicalEncoder, idf, token_id

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def enc() -> LexicalEncoder:
    return LexicalEncoder()


# --- tokeniser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1/2 in. Copper Pipe", "1/2 inch copper pipe"),
        ('1/2" copper pipe', "1/2 inches copper pipe"),
        ("½ in. copper pipe", "1/2 in copper pipe"),
        ("1-1/2 in. PVC", "1 1/2 inch pvc"),
        ("1-1/2 in. PVC", "1.5 in pvc"),
        ("2.5 gal. Bucket", "2.50 gallon bucket"),
        ("10 ft. Cord", "10 feet cord"),
        ("10 ft. Cord", "10-foot cord"),
        ("50 lb. Bag", "50 lbs bag"),
        ("50 lb. Bag", "50 pound bag"),
        ("DEWALT 20-Volt Max Drill", "dewalt 20v max drill"),
        ("15-Amp Circular Saw", "15 amps circular saw"),
        ("60-Watt Bulb", "60w bulb"),
        ("2.2 cu. ft. Microwave", "2.2 cubic feet microwave"),
        ("100 sq. ft. Roll", "100 sqft roll"),
        ("11 oz. Spray Paint", "11 ounce spray paint"),
        ("2 in. x 4 in. x 8 ft. Lumber", "2 in x 4 in x 8 ft lumber"),
        ("Shower Head (2-Pack)", "shower head 2 pack"),
        ("1,000 sq. ft. Coverage", "1000 sq ft coverage"),
    ],
)
def test_sizes_normalise_to_the_same_tokens(enc: LexicalEncoder, a: str, b: str) -> None:
    assert enc.tokenize(a) == enc.tokenize(b)


def test_size_tokens_are_kept_whole(enc: LexicalEncoder) -> None:
    assert enc.tokenize("1/2 in. Copper Pipe") == ["0.5", "in", "copper", "pipe"]
    assert enc.tokenize("1-1/2 in.") == ["1.5", "in"]
    assert enc.tokenize("3/4 x 8") == ["0.75", "8"]
    assert enc.tokenize("2.25 HP Router") == ["2.25", "hp", "router"]
    assert enc.tokenize("20v") == ["20", "v"]


def test_dimensions_split_into_numbers(enc: LexicalEncoder) -> None:
    assert enc.tokenize("2x4") == ["2", "4"]
    assert enc.tokenize("18x30x.75 in.") == ["18", "30", "0.75", "in"]
    assert set(enc.tokenize("2x4x8")) <= set(enc.tokenize("2 in. x 4 in. x 8 ft. Lumber"))


def test_in_is_a_unit_only_after_a_number(enc: LexicalEncoder) -> None:
    assert enc.tokenize("Vanity in White") == ["vaniti", "white"]
    assert enc.tokenize("36 in Vanity") == ["36", "in", "vaniti"]


def test_stemming_and_stopwords(enc: LexicalEncoder) -> None:
    assert enc.tokenize("Drills") == ["drill"]
    assert enc.tokenize("the drill for a cabinet with lights") == ["drill", "cabinet", "light"]
    assert LexicalEncoder(Bm25Params(stem=False)).tokenize("Cordless Drills") == [
        "cordless",
        "drills",
    ]


def test_accents_entities_and_apostrophes(enc: LexicalEncoder) -> None:
    assert enc.tokenize("Café Crème") == enc.tokenize("cafe creme") == ["cafe", "creme"]
    assert enc.tokenize("Knape &amp; Vogt") == ["knape", "vogt"]
    assert enc.tokenize("Elmer&#39;s Glue") == enc.tokenize("elmers glue")
    assert enc.tokenize("Paint™ Brush®") == ["paint", "brush"]


@pytest.mark.parametrize("text", ["", " ", "  \t\n ", "the of and", "!!! ---"])
def test_empty_input(enc: LexicalEncoder, text: str) -> None:
    assert enc.tokenize(text) == []
    assert enc.encode_query(text) == ([], [])


def test_without_sizes_numbers_are_plain_tokens() -> None:
    plain = LexicalEncoder(Bm25Params(keep_sizes=False))
    assert plain.tokenize("1/2 in. Copper Pipes") == ["1", "2", "copper", "pipe"]


# --- hashing -----------------------------------------------------------------------


def test_hashing_is_stable_and_in_range() -> None:
    texts = ["Cordless 20-Volt Drill", "1/2 in. copper pipe", "Café Crème 5 gal. bucket"]
    a, b = LexicalEncoder(avg_doc_len=5.0), LexicalEncoder(avg_doc_len=5.0)
    assert a.encode_documents(texts) == b.encode_documents(texts)
    for text in texts:
        indices, values = a.encode_query(text)
        assert indices == b.encode_query(text)[0]
        assert indices == sorted(set(indices))
        assert all(0 <= i < 2**31 for i in indices)
        assert values == [1.0] * len(indices)
    assert token_id("drill") == 569161712  # pinned: changing it invalidates every index


def test_hashing_is_stable_across_processes() -> None:
    code = "from retrieval.lexical import LexicalEncoder as E; print(E().encode_query('cordless drills 1/2 in'))"
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        outs.add(run.stdout)
    assert len(outs) == 1
    assert str(LexicalEncoder().encode_query("cordless drills 1/2 in")) == outs.pop().strip()


# --- BM25 values -------------------------------------------------------------------


def test_document_values_follow_bm25() -> None:
    enc = LexicalEncoder(Bm25Params(k1=1.2, b=0.75), avg_doc_len=4.0)
    [(indices, values)] = enc.encode_documents(["drill drills bit"])  # tokens: drill x2, bit
    got = dict(zip(indices, values, strict=True))
    # dl = 3, avgdl = 4: norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 4) = 0.975
    assert got[token_id("drill")] == pytest.approx(2 * 2.2 / (2 + 0.975))  # 1.478992
    assert got[token_id("bit")] == pytest.approx(1 * 2.2 / (1 + 0.975))  # 1.113924
    assert len(got) == 2


def test_avg_len_config_and_errors() -> None:
    enc = LexicalEncoder()
    with pytest.raises(ValueError, match="avg_doc_len"):
        enc.encode_documents(["drill"])
    with pytest.raises(ValueError):
        enc.fit_avg_len([])
    assert enc.fit_avg_len(["cordless drill", "1/2 in. copper pipe", "the"]) == pytest.approx(
        (2 + 4 + 0) / 3
    )
    cfg = json.loads(json.dumps(enc.config()))
    again = LexicalEncoder.from_config(cfg)
    assert again.params == enc.params
    assert again.avg_doc_len == enc.avg_doc_len
    assert again.encode_documents(["cordless drill"]) == enc.encode_documents(["cordless drill"])
    with pytest.raises(ShopsearchError, match="version"):
        LexicalEncoder.from_config({**cfg, "tokenizer_version": -1})
    with pytest.raises(ValueError):
        LexicalEncoder(avg_doc_len=0.0)


def test_idf_matches_qdrant_formula() -> None:
    assert idf(1, 10) == pytest.approx(math.log(1 + 9.5 / 1.5))


# --- Qdrant end to end -------------------------------------------------------------

DOCS = [
    "DEWALT 20-Volt Max Lithium-Ion Cordless Drill Driver Kit",
    "Milwaukee M18 18-Volt Cordless Hammer Drill",
    "Ryobi 18-Volt ONE+ Drill/Driver with Drill Bits",
    "SharkBite 1/2 in. Push-to-Connect Brass Coupling",
    "Everbilt 1/2 in. x 10 ft. Copper Pipe",
    "NIBCO 3/4 in. Copper Pipe Elbow Fitting",
    "Charlotte Pipe 1-1/2 in. PVC Sch. 40 Pipe",
    "BEHR Premium Plus 5 gal. Ultra Pure White Interior Paint",
    "Glidden 1 gal. Interior Paint in Swiss Coffee",
    "Leaf Blower 25cc Gas Handheld",
    "Cordless Leaf Blower 40-Volt with Battery",
]
QUERIES = [
    "cordless drill",
    "1/2 inch copper pipe",
    "1 1/2 pvc pipe",
    "5 gallon white paint",
    "40v leaf blower",
    "drill bits",
]
EXPECTED_TOP = {
    "1/2 inch copper pipe": 4,
    "1 1/2 pvc pipe": 6,
    "5 gallon white paint": 7,
    "40v leaf blower": 10,
    "drill bits": 2,
}


def _brute_force(enc: LexicalEncoder, docs: list[str], query: str) -> np.ndarray:
    """BM25 scores with Qdrant's IDF formula, from the encoder's own vectors."""
    encoded = enc.encode_documents(docs)
    q_idx, q_val = enc.encode_query(query)
    scores = np.zeros(len(docs))
    for t, w in zip(q_idx, q_val, strict=True):
        hits = [dict(zip(ix, vals, strict=True)).get(t) for ix, vals in encoded]
        df = sum(h is not None for h in hits)
        scores += np.array([w * idf(df, len(docs)) * (h or 0.0) for h in hits])
    return scores


def _check(enc: LexicalEncoder, query: str, got: list[tuple[int, float]]) -> None:
    expect = _brute_force(enc, DOCS, query)
    ranked = [i for i in np.argsort(-expect, kind="stable") if expect[i] > 0]
    assert ranked, query
    assert len(got) == len(ranked), query
    if query in EXPECTED_TOP:
        assert got[0][0] == EXPECTED_TOP[query], query
    for (pid, score), want in zip(got, ranked, strict=True):
        assert score == pytest.approx(expect[pid], abs=1e-4), query
        assert expect[pid] == pytest.approx(expect[want], abs=1e-4), query
    # same ranking up to ties: every rank holds a doc with the brute-force score of that rank
    assert {pid for pid, _ in got} == {int(i) for i in ranked}, query


@pytest.fixture(scope="module")
def fitted() -> LexicalEncoder:
    enc = LexicalEncoder()
    enc.fit_avg_len(DOCS)
    return enc


def test_qdrant_client_idf_collection_matches_brute_force(fitted: LexicalEncoder) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(
        "lex",
        vectors_config={},
        sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    client.upsert(
        "lex",
        points=[
            models.PointStruct(id=i, vector={"bm25": models.SparseVector(indices=ix, values=vals)})
            for i, (ix, vals) in enumerate(fitted.encode_documents(DOCS))
        ],
    )
    for query in QUERIES:
        ix, vals = fitted.encode_query(query)
        res = client.query_points(
            "lex", query=models.SparseVector(indices=ix, values=vals), using="bm25", limit=20
        ).points
        _check(fitted, query, [(int(p.id), p.score) for p in res])
    client.close()


def test_qdrant_edge_idf_shard_matches_brute_force(fitted: LexicalEncoder, tmp_path: Path) -> None:
    from qdrant_edge import (
        EdgeConfig,
        EdgeShard,
        EdgeSparseVectorParams,
        Modifier,
        Point,
        Query,
        QueryRequest,
        SparseVector,
        UpdateOperation,
    )

    shard = EdgeShard.create(
        str(tmp_path / "shard"),
        EdgeConfig(sparse_vectors={"bm25": EdgeSparseVectorParams(modifier=Modifier.Idf)}),
    )
    shard.update(
        UpdateOperation.upsert_points(
            [
                Point(id=i, vector={"bm25": SparseVector(ix, vals)}, payload={"title": DOCS[i]})
                for i, (ix, vals) in enumerate(fitted.encode_documents(DOCS))
            ]
        )
    )
    for query in QUERIES:
        ix, vals = fitted.encode_query(query)
        res = shard.query(
            QueryRequest(
                limit=20,
                query=Query.Nearest(SparseVector(ix, vals), using="bm25"),
                with_payload=True,
            )
        )
        _check(fitted, query, [(int(p.id), p.score) for p in res])
        assert all(p.payload["title"] == DOCS[int(p.id)] for p in res)
    shard.close()
