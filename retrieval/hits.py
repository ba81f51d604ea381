"""The one result type: a product at a position in a ranked list, with its score parts.

Every stage returns :class:`RankedHit`: the store and the retriever fill the retrieval part,
the reranker the relevance part, personalization the personal part and its reasons. Light
(numpy only), so every layer can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from catalog.schema import Product
from catalog.text import product_text

#: One reason a hit moved: (feature name, feature value, contribution to the score).
Reason = tuple[str, float, float]


@dataclass(frozen=True)
class RankedHit:
    """One product in a ranked list.

    Attributes:
        product_id: The product's id.
        score: What the list is sorted by (descending; ties by ``retrieval_rank``): the
            retrieval score after stage 1, the relevance after reranking, relevance +
            personal after personalization.
        retrieval: The first stage's score (cosine for dense, BM25 for bm25, RRF for hybrid).
        retrieval_rank: 1-based position in the first stage's list (0 for a product the store
            fetched by id, outside any list).
        relevance: The relevance score: the cross-encoder's logit blended with the first
            stage's score (standardised over the candidates); None before reranking.
        cross: The cross-encoder's logit alone; None without a cross-encoder.
        personal: What this shopper's behaviour added to the score (0.0 when anonymous, cold,
            or without a personalization model).
        because: The features that moved ``personal`` most, largest first.
        rule: The merchandising rules that moved it, as (rule id, action) pairs, action one
            of ``pin``, ``boost``, ``bury`` (:mod:`rerank.rules`).
        payload: The product's stored fields (title, brand, category, price, ...).
        vector: The product's dense vector (float32, shape ``(dim,)``) when asked for.
        sources: The first stage's lists the product was in, as (source, score, 1-based
            rank) per list: ``dense`` (cosine), ``bm25``, ``user`` (a shopper-taste
            prefetch); what ``retrieval`` fused. Read by the learned stage
            (:mod:`rerank.ltr`); empty for a product fetched by id.
    """

    product_id: str
    score: float
    retrieval: float
    retrieval_rank: int
    relevance: float | None = None
    cross: float | None = None
    personal: float = 0.0
    because: tuple[Reason, ...] = ()
    rule: tuple[tuple[str, str], ...] = ()
    payload: dict[str, Any] = field(default_factory=dict)
    vector: np.ndarray | None = field(default=None, repr=False, compare=False)
    sources: tuple[tuple[str, float, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def title(self) -> str:
        """The product title."""
        return str(self.payload.get("title", ""))

    def to_dict(self, rank: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict: the score parts apart from the product, so no catalog column
        can overwrite a score (the product's fields are under ``"product"``)."""
        out: dict[str, Any] = {} if rank is None else {"rank": rank}
        out.update(
            product_id=self.product_id,
            score=self.score,
            scores={
                "retrieval": self.retrieval,
                "retrieval_rank": self.retrieval_rank,
                "relevance": self.relevance,
                "cross": self.cross,
                "personal": self.personal,
            },
            product=dict(self.payload),
        )
        if self.because:
            out["because"] = [
                {"feature": n, "value": v, "contribution": c} for n, v, c in self.because
            ]
        if self.rule:
            out["merchandising"] = [{"rule": r, "action": a} for r, a in self.rule]
        return out


@dataclass(frozen=True)
class QueryCorrection:
    """What the spelling corrector did to a query ("showing results for ...").

    Attributes:
        original: The query as typed.
        corrected: The query with its corrections, everything else as typed.
        changes: (word as typed, correction) for each corrected word, in query order.
        applied: True when the results are for ``corrected`` ("showing results for"); False
            when the evidence did not hold and the query was searched as typed, with
            ``corrected`` only offered ("did you mean").
    """

    original: str
    corrected: str
    changes: tuple[tuple[str, str], ...]
    applied: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"original", "corrected", "changes": [{"from", "to"}], "applied"}``."""
        return {
            "original": self.original,
            "corrected": self.corrected,
            "changes": [{"from": a, "to": b} for a, b in self.changes],
            "applied": self.applied,
        }


class Hits(list):
    """A ranked list of :class:`RankedHit` (best first) and the query correction behind it.

    A plain ``list`` in every other way (index it, slice it, iterate it); slices are plain
    lists, so a stage that cuts the list wraps the cut again (:meth:`like`).

    Attributes:
        correction: What the corrector changed in the query; None when nothing (or when
            correction was off).
        stage_ms: Time per stage of the search that made the list, in ms (filled by
            ``SearchPipeline.search``; empty otherwise).
        facets: Field name -> its values' counts over the candidates
            (:class:`rerank.storefront.FacetCount` each), for the facets a search asked for.
        total_candidates: How many candidates the ranking the list is a page of holds (None
            outside ``SearchPipeline.search``).
        rules: The ids of the merchandising rules that fired for the query (filled by
            ``SearchPipeline.search``; see :mod:`rerank.rules`).
        redirected: The text searched instead of the query when a redirect rule fired, or
            None.
    """

    def __init__(self, hits=(), correction: QueryCorrection | None = None) -> None:
        super().__init__(hits)
        self.correction = correction
        self.stage_ms: dict[str, float] = {}
        self.rules: tuple[str, ...] = ()
        self.redirected: str | None = None
        self.facets: dict[str, list[Any]] = {}
        self.total_candidates: int | None = None

    @property
    def corrected(self) -> str | None:
        """The corrected query the results are for, or None when the query was used as typed."""
        c = self.correction
        return c.corrected if c is not None and c.applied else None

    @property
    def suggestion(self) -> str | None:
        """A correction offered but not applied ("did you mean"), or None."""
        c = self.correction
        return c.corrected if c is not None and not c.applied else None

    def like(self, hits) -> Hits:
        """Other hits for the same query (same correction)."""
        return Hits(hits, self.correction)


def hit_text(hit: RankedHit) -> str:
    """The product text of a hit, from its payload, by the one recipe (``product_text``)."""
    return product_text(Product.from_payload({**(hit.payload or {}), "product_id": hit.product_id}))
