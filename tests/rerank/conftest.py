"""Fixtures of the storefront tests: the 300 sample products in a tiny embedded index."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.build import index_catalog
from retrieval.store import IndexLocation


@pytest.fixture(scope="session")
def storefront_index(tmp_path_factory, sample_catalog, tiny_encoder) -> Path:
    """The 300 sample products (tests/conftest.py), indexed with the tiny encoder."""
    path = tmp_path_factory.mktemp("storefront") / "index"
    index_catalog(sample_catalog, IndexLocation(path=path), encoder=tiny_encoder, progress=False)
    return path


@pytest.fixture()
def storefront(storefront_index, tiny_encoder):
    """A retrieval-only pipeline over :func:`storefront_index` (shares the tiny encoder)."""
    from rerank.pipeline import SearchPipeline
    from retrieval.retriever import Retriever

    with SearchPipeline(Retriever.open(storefront_index, encoder=tiny_encoder)) as pipeline:
        yield pipeline
