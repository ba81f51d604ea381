"""Position bias estimation: moved to :mod:`personalization.propensity` (the service's analytics
use it, and serving code never imports ``training``); the names stay importable from here.

Callers that relied on the default clip of :meth:`Propensities.of` and
:meth:`Propensities.inverse_weights` pass it now: :data:`DEFAULT_CLIP`.
"""

from __future__ import annotations

from personalization.propensity import (
    DEFAULT_RESAMPLES,
    Propensities,
    PropensityInterval,
    bootstrap_propensities,
    estimate_propensities,
)
from training.config import DEFAULT_CLIP

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_RESAMPLES",
    "Propensities",
    "PropensityInterval",
    "bootstrap_propensities",
    "estimate_propensities",
]
