"""Shared fixtures: tiny models built from a config (no download), small catalogs.

The builders are in tests/tiny_models.py (``from tiny_models import build_tiny_bert``), not here:
a test that imports ``conftest`` gets whichever conftest.py pytest loaded last (tests/shopsearch/
has its own)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
from tiny_models import build_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# tests/research/ tests shopsearch-research (research/, a distribution of its own); no other test
# imports it. Without it (the runtime alone) those tests are left out, and the header says so.
# (A spec without an origin is a namespace package: tests/research/ itself, tests/ being on
# sys.path.)
_research = importlib.util.find_spec("research")
HAS_RESEARCH = _research is not None and _research.origin is not None
collect_ignore = [] if HAS_RESEARCH else ["research"]


def pytest_report_header(config) -> str | None:
    if HAS_RESEARCH:
        return None
    return "shopsearch-research (research/) is not installed: tests/research/ left out"


@pytest.fixture(scope="session")
def sample_products():
    """300 synthetic products (deterministic)."""
    from catalog.sample import generate_products

    return generate_products(300, seed=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, sample_products) -> Path:
    """A tiny BERT bi-encoder whose vocabulary covers the sample catalog."""
    words: set[str] = set()
    from catalog.text import product_text

    for p in sample_products:
        words.update(re.findall(r"[a-z]+|\d+", product_text(p).lower()))
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-model"), sorted(words))


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory, sample_products) -> Path:
    """Another tiny model (different weights), to test model-mismatch errors."""
    return build_tiny_bert(
        tmp_path_factory.mktemp("tiny-model-b"), ["drill", "paint", "faucet"], seed=1
    )


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    from retrieval.encoder import BiEncoder

    return BiEncoder(tiny_model, device="cpu")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory, sample_products) -> Path:
    """The 300 products as a Parquet catalog."""
    from catalog.sample import write_sample_catalog

    return write_sample_catalog(
        tmp_path_factory.mktemp("catalog") / "catalog.parquet", n=300, seed=3
    )


@pytest.fixture()
def tiny_bench(tmp_path, sample_products):
    """A benchmark directory: the 300 products, 90 queries (30 per split) graded 3 and 1."""
    import json

    import polars as pl

    rows = [
        {"product_id": p.product_id, "title": p.title, "brand": p.brand, "category": p.category}
        for p in sample_products
    ]
    out = tmp_path / "data"
    out.mkdir()
    pl.DataFrame(rows).write_parquet(out / "catalog.parquet")
    queries, qrels = [], []
    for i, p in enumerate(sample_products[:90]):
        split = ("train", "validation", "test")[i % 3]
        qid = f"q{i}"
        queries.append({"query_id": qid, "query": " ".join(p.title.split()[1:4]), "split": split})
        qrels.append({"query_id": qid, "product_id": p.product_id, "grade": 3.0})
        qrels.append(
            {"query_id": qid, "product_id": sample_products[(i + 7) % 300].product_id, "grade": 1.0}
        )
    pl.DataFrame(queries).write_parquet(out / "queries.parquet")
    pl.DataFrame(qrels).write_parquet(out / "qrels.parquet")
    (out / "manifest.json").write_text(json.dumps({"relevance_threshold": 2.5, "gain_offset": 1.0}))
    return out


# -- a throw-away PostgreSQL server (tests/pg_server.py): the shared profile store's tests ----


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server in a temporary folder for the session; skips, saying why, when
    none can start here (not installed: ``.ci/run`` installs Debian's ``postgresql``)."""
    import pg_server

    reason = pg_server.why_not()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server for this test: {reason}")
    server = pg_server.start()
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """A new empty database on the session's server (dropped afterwards): its URL."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
