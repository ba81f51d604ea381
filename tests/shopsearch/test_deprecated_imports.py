"""The import paths of shopsearch 0.1 keep working for one release, each with a warning.

The README of 0.1 taught ``from rerank import SearchPipeline``; shops' scripts still use it (and
``from retrieval import Retriever``, ``from rerank.personalized import open_profiles``).
"""

from __future__ import annotations

import importlib
import sys

import pytest

import shopsearch

OLD_PATHS = [
    ("rerank", "SearchPipeline"),
    ("rerank", "Reranker"),
    ("rerank", "RankedHit"),
    ("retrieval", "Retriever"),
    ("retrieval", "Filters"),
    ("retrieval", "RankedHit"),
    ("retrieval", "Hits"),
    ("retrieval", "QueryCorrection"),
]


@pytest.mark.parametrize(("package", "name"), OLD_PATHS)
def test_an_old_path_warns_and_gives_the_front_doors_object(package, name):
    module = importlib.import_module(package)
    vars(module).pop(name, None)  # an earlier lookup in this process cached it (warned once)
    with pytest.warns(DeprecationWarning, match=f"from shopsearch import {name}"):
        old = getattr(module, name)
    assert old is getattr(shopsearch, name)


def test_rerank_personalized_warns_and_still_opens_profiles():
    sys.modules.pop("rerank.personalized", None)
    with pytest.warns(DeprecationWarning, match="from shopsearch import open_profiles"):
        from rerank.personalized import open_profiles
    assert open_profiles is shopsearch.open_profiles


def test_a_name_that_never_was_is_still_an_attribute_error():
    import rerank

    with pytest.raises(AttributeError, match="Nope"):
        rerank.Nope  # noqa: B018
