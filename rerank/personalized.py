"""Query-time personalization: profile lookup, taste-vector retrieval, features, fused ranking,
and an explanation per hit."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from behaviour.features import FEATURE_NAMES, Candidate, compute_features
from behaviour.privacy import Pseudonymizer
from behaviour.profiles import ProfileStore, UserProfile
from rerank.personal import PersonalRanker
from rerank.reranker import Reranker, blend, hit_text
from retrieval.filters import Filters
from retrieval.retriever import Hit, Retriever
from retrieval.store import Mode

PROFILES_FILE = "profiles.sqlite"
TOP_REASONS = 3


@dataclass(frozen=True)
class PersonalHit:
    """One ranked product with why it is where it is.

    Attributes:
        product_id: The product.
        score: The fused logit the ranking uses (relevance + personalization).
        relevance: The relevance part (from the cross-encoder's reading of query and product).
        personalization: What this shopper's behaviour added (0 for an unknown shopper).
        retrieval_rank: Rank in the first stage (1-based).
        because: The features that moved the personalization most: (name, value, contribution).
        payload: The product's stored fields.
    """

    product_id: str
    score: float
    relevance: float
    personalization: float
    retrieval_rank: int
    because: tuple[tuple[str, float, float], ...]
    payload: dict

    @property
    def title(self) -> str:
        """The product title."""
        return str(self.payload.get("title", ""))


def open_profiles(directory: str | os.PathLike[str]) -> tuple[ProfileStore, Pseudonymizer]:
    """The profile store and the pseudonymizer kept in one directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return ProfileStore(directory / PROFILES_FILE), Pseudonymizer.from_dir(directory)


def taste_vector(store: ProfileStore, profile: UserProfile) -> np.ndarray | None:
    """The normalised mean vector of a shopper's recent items (None without history)."""
    if profile.n_events == 0 or not profile.recent_items:
        return None
    vecs = store.vectors(list(profile.recent_items))
    if vecs is None:
        return None
    mean = vecs.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return (mean / norm).astype(np.float32) if norm > 0 else None


class PersonalizedPipeline:
    """Retrieve (query + shopper taste) -> cross-encoder -> fused with behaviour features."""

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None,
        personal: PersonalRanker,
        profiles: ProfileStore,
        pseudonymizer: Pseudonymizer,
        personal_retrieval: bool = True,
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.personal = personal
        self.profiles = profiles
        self.pseudonymizer = pseudonymizer
        self.personal_retrieval = personal_retrieval
        self.last_profile_ms = 0.0

    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str],
        *,
        personal: str | os.PathLike[str],
        profiles: str | os.PathLike[str],
        reranker: str | os.PathLike[str] | None = None,
        device: str | None = None,
    ) -> PersonalizedPipeline:
        """Opens every part from its folder."""
        store, pz = open_profiles(profiles)
        return cls(
            Retriever.open(index, device=device),
            Reranker.load(reranker, device=device) if reranker else None,
            PersonalRanker.load(personal),
            store,
            pz,
        )

    def profile_of(self, user_id: str | None, before: float | None = None) -> UserProfile | None:
        """The shopper's point-in-time profile (None for an anonymous search)."""
        if user_id is None:
            return None
        return self.profiles.profile(self.pseudonymizer.pseudonym(user_id), before=before)

    def search(
        self,
        query: str,
        k: int = 10,
        candidates: int = 50,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
        user_id: str | None = None,
    ) -> list[PersonalHit]:
        """Top ``k`` products for this shopper, each with an explanation.

        A shopper with no history (or ``user_id=None``) gets the relevance-only ranking.
        """
        t0 = time.perf_counter()
        profile = self.profile_of(user_id)
        user_vec = (
            taste_vector(self.profiles, profile) if profile and self.personal_retrieval else None
        )
        self.last_profile_ms = (time.perf_counter() - t0) * 1000
        warm = profile is not None and profile.n_events > 0
        hits = self.retriever.search(
            query,
            k=max(k, candidates),
            filters=filters,
            mode=mode,
            user_vector=user_vec,
            with_vectors=warm,
        )
        return self.rank(query, hits, profile, top_k=k)

    def rank(
        self, query: str, hits: list[Hit], profile: UserProfile | None, top_k: int | None = None
    ) -> list[PersonalHit]:
        """Fused ranking of retrieved hits for a profile (None: anonymous)."""
        if not hits:
            return []
        retrieval = np.array([h.score for h in hits], dtype=np.float32)
        if self.reranker is not None:  # the relevance-only pipeline's score
            logits = self.reranker.score(query, [hit_text(h) for h in hits])
            cross = blend(logits, retrieval, self.reranker.retrieval_weight)
        else:
            cross = retrieval
        ids = [h.product_id for h in hits]
        vectors = {}
        recent = None
        if profile is not None and profile.n_events:
            vectors = {h.product_id: h.vector for h in hits}
            missing = [p for p, v in vectors.items() if v is None]
            if missing:  # hits retrieved without vectors: one more store call
                stored = self.retriever.collection.retrieve(missing, with_vectors=True)
                vectors.update({p: v.vector for p, v in stored.items()})
            recent = (
                self.profiles.vectors(list(profile.recent_items)) if profile.recent_items else None
            )
        cands = [
            Candidate.from_payload(
                {**h.payload, "product_id": h.product_id},
                h.score,
                r,
                float(c),
                vectors.get(h.product_id),
            )
            for r, (h, c) in enumerate(zip(hits, cross, strict=True), start=1)
        ]
        popularity = self.profiles.popularity(ids) if profile is not None else {}
        feats = compute_features(profile, cands, popularity, recent)
        scored = self.personal.score(
            cross, feats, explain=profile is not None and profile.n_events > 0
        )
        out = []
        for i, h in enumerate(hits):
            contrib = scored.contributions[i]
            top = np.argsort(-np.abs(contrib))[:TOP_REASONS]
            because = tuple(
                (FEATURE_NAMES[j], float(feats[i, j]), float(contrib[j]))
                for j in top
                if abs(contrib[j]) > 1e-6
            )
            out.append(
                PersonalHit(
                    h.product_id,
                    float(scored.total[i]),
                    float(scored.relevance[i]),
                    float(scored.personal[i]),
                    i + 1,
                    because,
                    h.payload,
                )
            )
        out.sort(key=lambda x: (-x.score, x.retrieval_rank))
        return out if top_k is None else out[:top_k]

    def close(self) -> None:
        """Releases the index and the profile store."""
        self.retriever.close()
        self.profiles.close()
