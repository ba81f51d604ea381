"""Deprecated import path, kept so scripts written against shopsearch 0.1 keep running.

``open_profiles`` lives in :mod:`personalization.ingest`; ``from shopsearch import
open_profiles`` is the public path.
"""

from __future__ import annotations

import warnings

from personalization.ingest import open_profiles

warnings.warn(
    "rerank.personalized is deprecated: use 'from shopsearch import open_profiles'",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["open_profiles"]
