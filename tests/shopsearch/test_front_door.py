"""The front door: everything the docs import comes from ``shopsearch``."""

from __future__ import annotations

import subprocess
import sys

import shopsearch


def test_every_exported_name_resolves_to_the_class_it_names():
    from core.errors import ShopsearchError
    from rerank.pipeline import SearchPipeline
    from retrieval.filters import Filters
    from retrieval.hits import RankedHit

    assert shopsearch.SearchPipeline is SearchPipeline
    assert shopsearch.RankedHit is RankedHit
    assert shopsearch.Filters is Filters
    assert shopsearch.ShopsearchError is ShopsearchError
    for name in shopsearch.__all__:
        assert getattr(shopsearch, name) is not None, name
    assert set(shopsearch.__all__) <= set(dir(shopsearch))


def test_an_unknown_name_is_an_attribute_error():
    try:
        shopsearch.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover - the assertion is the test
        raise AssertionError("shopsearch.NoSuchThing resolved")


def test_importing_the_package_and_the_cli_does_not_import_torch():
    code = (
        "import sys, shopsearch, shopsearch.cli; "
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout


def test_a_user_mistake_is_not_a_value_error():
    """User mistakes and bugs have different types: ``except ValueError`` catches no user error."""
    assert not issubclass(shopsearch.ShopsearchError, ValueError)
