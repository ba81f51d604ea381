"""Deprecated import path, kept so scripts written against shopsearch 0.1 keep running.

``PersonalizedPipeline`` is now :class:`rerank.pipeline.SearchPipeline` with ``personal=``, and
``open_profiles`` lives in :mod:`personalization.ingest`. Import from there.
"""

from __future__ import annotations

import warnings

from personalization.ingest import open_profiles

warnings.warn(
    "rerank.personalized is deprecated: use personalization.ingest.open_profiles and "
    "rerank.pipeline.SearchPipeline(personal=...)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["open_profiles"]
