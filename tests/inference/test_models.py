"""Model folders (inference.models): resolving a model name offline, fingerprints of weights."""

from __future__ import annotations

import pytest

from core.errors import ShopsearchError
from inference.models import model_fingerprint, resolve_model_path


def test_model_resolution_errors(tmp_path):
    with pytest.raises(ShopsearchError, match="nothing is downloaded"):
        resolve_model_path("sentence-transformers/some-other-model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ShopsearchError, match="no weights"):
        model_fingerprint(tmp_path)


def test_fingerprint_follows_weights(tiny_model, tiny_model_b):
    assert model_fingerprint(tiny_model) != model_fingerprint(tiny_model_b)
    assert model_fingerprint(tiny_model) == model_fingerprint(tiny_model)
