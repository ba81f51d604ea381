"""Query-time personalization: a shopper's profile, their taste vector, and the fused score.

A :class:`Personalizer` holds the three things personalization needs at query time: the fusion
model (:class:`personalization.ranker.PersonalRanker`), the profile store and the pseudonymizer
(raw shopper ids never go further than :meth:`Personalizer.profile`). The search pipeline
(:class:`rerank.pipeline.SearchPipeline`) calls it; product vectors come from the index, never
from a second copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from personalization.features import compute_features, reasons
from personalization.ingest import PROFILES_FILE, open_profiles  # noqa: F401 (re-exported)
from personalization.privacy import Pseudonymizer
from personalization.profiles import ProfileStore, UserProfile, is_warm
from personalization.ranker import PersonalRanker
from retrieval.hits import RankedHit

#: Looks up product vectors by id: ``ids -> {product_id: float32 vector}`` (missing ids absent).
VectorLookup = Callable[[Sequence[str]], dict[str, np.ndarray]]


def taste_vector(recent: np.ndarray | None) -> np.ndarray | None:
    """The normalised mean of a shopper's recent items' vectors.

    Args:
        recent: float32 array ``(m, dim)`` of the recent items' vectors, or None.

    Returns:
        A unit float32 vector ``(dim,)``, or None without vectors.
    """
    if recent is None or len(recent) == 0:
        return None
    mean = np.asarray(recent, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None


def recent_vectors(profile: UserProfile | None, lookup: VectorLookup) -> np.ndarray | None:
    """Vectors of a profile's recent items, most recent first, as the index holds them."""
    if not is_warm(profile) or not profile.recent_items:
        return None
    ids = list(profile.recent_items)
    got = lookup(ids)
    rows = [got[p] for p in ids if got.get(p) is not None]
    return np.stack(rows).astype(np.float32) if rows else None


class Personalizer:
    """The fusion model with the shopper data it reads.

    Args:
        model: The trained fusion model.
        profiles: The profile store.
        pseudonymizer: Turns shopper ids into the pseudonyms the store keys on.
    """

    def __init__(
        self, model: PersonalRanker, profiles: ProfileStore, pseudonymizer: Pseudonymizer
    ) -> None:
        self.model = model
        self.profiles = profiles
        self.pseudonymizer = pseudonymizer

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str],
        profiles: str | os.PathLike[str],
        key: str | None = None,
    ) -> Personalizer:
        """Loads a model folder and opens a profiles directory.

        Args:
            model: The personalization model folder.
            profiles: The profiles directory (the store, and the key file unless ``key``).
            key: The pseudonym key as hex text; None: the profiles directory's key file.

        Raises:
            ShopsearchError: The model folder is not a personalization model for these features,
                or a bad key.
        """
        ranker = PersonalRanker.load(model)
        store, pseudonymizer = open_profiles(profiles, key)
        return cls(ranker, store, pseudonymizer)

    def profile(self, user_id: str | None, before: float | None = None) -> UserProfile | None:
        """The shopper's point-in-time profile (None for an anonymous search)."""
        if user_id is None:
            return None
        return self.profiles.profile(self.pseudonymizer.pseudonym(user_id), before=before)

    def rank(
        self,
        hits: Sequence[RankedHit],
        profile: UserProfile | None,
        recent: np.ndarray | None,
        explain: bool = True,
        query: str | None = None,
    ) -> list[RankedHit]:
        """Adds the personal part to relevance-scored hits (not sorted).

        Args:
            hits: Candidates with ``relevance`` set (the relevance-only pipeline's score).
            profile: The shopper's profile; None for an anonymous search.
            recent: Vectors of the shopper's recent items ``(m, dim)``, or None.
            explain: Fill ``because`` (costs one extra model pass per feature).
            query: The query as the shopper typed it (reads the log's click counts for it).

        Returns:
            The hits with ``score = relevance part + personal part``, in input order. A cold
            or anonymous shopper gets exactly the relevance-only order (the personal part is
            gated by ``has_history``).
        """
        if not hits:
            return []
        relevance = np.array([h.relevance for h in hits], dtype=np.float32)
        ids = [h.product_id for h in hits]
        popularity = self.profiles.popularity(ids) if profile is not None else {}
        warm = is_warm(profile)
        clicks = self.model.click_features(query, ids) if warm else None
        feats = compute_features(profile, hits, popularity, recent, clicks)
        scored = self.model.score(relevance, feats, explain=explain and warm)
        out = []
        for i, h in enumerate(hits):
            out.append(
                replace(
                    h,
                    score=float(scored.total[i]),
                    relevance=float(scored.relevance[i]),
                    personal=float(scored.personal[i]),
                    because=reasons(feats[i], scored.contributions[i]),
                )
            )
        return out

    def close(self) -> None:
        """Closes the profile store."""
        self.profiles.close()
