"""Search, in one pipeline: retrieve for recall, rerank for precision, personalize for the shopper.

    SearchPipeline(retriever, reranker=None, personal=None)

Stage 1 (:class:`retrieval.retriever.Retriever`) gives candidates; stage 2
(:class:`rerank.cross_encoder.Reranker`) reads (query, product) and its logit is blended with
the stage-1 score (:func:`rerank.blend.blend`); the personal stage
(:class:`personalization.personalizer.Personalizer`) adds what the shopper's behaviour says.
Each stage is optional but the first. Benchmarks rank through the same blend-and-sort
(:func:`rerank.blend.rerank_hits`): there is no second copy of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from core.managed import side_dir
from personalization.personalizer import Personalizer, recent_vectors, taste_vector
from personalization.profiles import UserProfile, is_warm
from rerank import storefront
from rerank.blend import rerank_hits, sort_hits
from rerank.cross_encoder import Reranker
from rerank.defaults import DEFAULT_RERANK_DEPTH
from rerank.ltr import LearnedRanker
from rerank.rules import Plan, RuleStore
from rerank.storefront import DiversifySpec, FacetSpec, SortSpec
from retrieval.filters import Filters
from retrieval.hits import Hits, RankedHit, hit_text
from retrieval.retriever import MAX_K, Retriever
from retrieval.store import Mode


def check_relevance_source(recorded: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Refuses a personal model trained on top of other relevance scores than served.

    Raises:
        ShopsearchError: The recorded reranker (or blend weight) differs from the pipeline's.
    """
    if not recorded:  # a model trained before this was recorded (the benchmark's older ones)
        return
    if recorded.get("ranker") != current.get("ranker"):
        raise ShopsearchError(
            "the personalization model was trained on top of learned ranker "
            f"{recorded.get('ranker') or 'none'}, not this pipeline's "
            f"({current.get('ranker') or 'none'}): serve it with that --ranker, or retrain it"
        )
    if recorded.get("reranker") != current["reranker"]:
        raise ShopsearchError(
            "the personalization model was trained on top of reranker "
            f"{recorded.get('reranker') or 'none'}, not this pipeline's "
            f"({current['reranker'] or 'none'}): serve it with that reranker, or retrain it "
            "with 'shopsearch train personal ... --reranker <this one>'"
        )
    weight = recorded.get("retrieval_weight")
    if weight is not None and abs(float(weight) - current["retrieval_weight"]) > 1e-9:
        raise ShopsearchError(
            f"the personalization model was trained on relevance blended with weight {weight}, "
            f"not {current['retrieval_weight']}: retrain it, or load the reranker as it was"
        )


@dataclass(frozen=True)
class _Storefront:
    """What one search asks of :mod:`rerank.storefront` (empty: nothing)."""

    schema: Any
    facets: tuple[FacetSpec, ...] = ()
    sort: SortSpec | None = None
    diversify: DiversifySpec | None = None

    def __bool__(self) -> bool:
        return bool(self.facets) or self.sort is not None or self.diversify is not None


class SearchPipeline:
    """Retriever, then an optional cross-encoder, then optional personalization.

    Args:
        retriever: An open :class:`retrieval.Retriever`.
        reranker: A loaded :class:`rerank.Reranker`, or None for retrieval-only relevance.
        personal: A :class:`personalization.personalizer.Personalizer`, or None.
        rules: The shop's merchandising rules (:class:`rerank.rules.RuleStore`); None: those
            kept beside an embedded index (``DIR/rules.json``), none for a server index.
        ranker: A learned final stage (:class:`rerank.ltr.LearnedRanker`): its score is the
            relevance, in place of the blend (the cross-encoder's logit is one of its
            features); None: the blend.

    :meth:`search` returns each search's time per stage with its hits (``Hits.stage_ms``): the
    pipeline keeps no per-call state.
    """

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None = None,
        personal: Personalizer | None = None,
        rules: RuleStore | None = None,
        ranker: LearnedRanker | None = None,
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.personal = personal
        self.ranker = ranker
        self.rules = rules if rules is not None else _rules_beside(retriever)
        if ranker is not None:
            ranker.check_reranker(getattr(reranker, "fingerprint", None))
        if personal is not None:
            check_relevance_source(personal.model.meta.get("relevance"), self.relevance_source())

    @classmethod
    def open(
        cls,
        index: str | os.PathLike[str] | None = None,
        *,
        reranker: str | os.PathLike[str] | None = None,
        personal: str | os.PathLike[str] | None = None,
        profiles: str | os.PathLike[str] | None = None,
        device: str | None = None,
        backend: str = "torch",
        quantize: str | None = None,
        threads: int | None = None,
        pseudonym_key: str | None = None,
        ranker: str | os.PathLike[str] | None = None,
        **retriever_options: Any,
    ) -> SearchPipeline:
        """Opens every stage from its folder.

        Args:
            index: Embedded index directory (or pass ``qdrant_url=`` etc., see
                ``Retriever.open``).
            reranker: A cross-encoder folder (sentence-transformers ``CrossEncoder`` format).
            personal: A personalization model folder; needs ``profiles``.
            profiles: The profiles directory (events ingested with ``shopsearch events ingest``).
            device: Torch device; None picks CUDA when present.
            backend: Backend of the query tower and the reranker: torch, onnx, openvino.
            quantize: None or ``int8`` (the quantized onnx/openvino copies).
            threads: Intra-op CPU threads of the query tower and the reranker; None: the
                physical cores (:func:`inference.backend.cpu_threads`).
            pseudonym_key: The profiles' pseudonym key (hex), when it is not kept in the
                profiles directory (:meth:`personalization.privacy.Pseudonymizer.from_dir`).
            ranker: A learned final stage folder (``shopsearch train ranker``): its score is
                the relevance, in place of the blend.
            retriever_options: Passed to ``Retriever.open``; ``rules_dir`` (where the shop's
                ``rules.json`` and ``synonyms.json`` live; default: the index directory) is
                read here too.

        Raises:
            ShopsearchError: ``personal`` without ``profiles`` (or the reverse), or a folder
                that is not what it should be.
        """
        if (personal is None) != (profiles is None):
            raise ShopsearchError(
                "personalization needs both a model folder (personal=) and a profiles "
                "directory (profiles=): give both or neither"
            )
        model = (
            Reranker.load(
                reranker, device=device, backend=backend, quantize=quantize, threads=threads
            )
            if reranker is not None
            else None
        )
        learned = LearnedRanker.open(ranker) if ranker is not None else None
        personalizer = None
        if personal is not None:
            personalizer = Personalizer.open(personal, profiles, key=pseudonym_key)
        retriever = Retriever.open(
            index,
            device=device,
            backend=backend,
            quantize=quantize,
            threads=threads,
            **retriever_options,
        )
        rules_dir = retriever_options.get("rules_dir")
        rules = RuleStore(side_dir(index, rules_dir)) if rules_dir is not None else None
        return cls(retriever, model, personalizer, rules, learned)

    def relevance_source(self) -> dict[str, Any]:
        """What produces this pipeline's relevance scores (recorded with a personal model)."""
        return {
            "reranker": getattr(self.reranker, "fingerprint", None),
            "retrieval_weight": self.retrieval_weight,
            "ranker": getattr(self.ranker, "fingerprint", None),
        }

    def relevance_fn(self, depth: int = DEFAULT_RERANK_DEPTH):
        """The relevance-only ranking of queries, as training from a log needs it.

        Returns:
            A function ``queries -> per query, its top ``depth`` candidates`` with
            ``relevance`` and vectors set (no personalization).
        """

        def rank(queries: Sequence[str]) -> list[list[RankedHit]]:
            batches = self.retriever.search_batch(list(queries), k=depth, with_vectors=True)
            return [self._relevance(q, hits) for q, hits in zip(queries, batches, strict=True)]

        return rank

    @property
    def retrieval_weight(self) -> float:
        """The blend weight in use (1.0 without a cross-encoder: relevance is stage 1's)."""
        return self.reranker.retrieval_weight if self.reranker is not None else 1.0

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        k: int = 10,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        filters: Filters | dict | None = None,
        filter: str | None = None,
        mode: Mode | None = None,
        explain: bool = True,
        correct: bool = True,
        facets: Sequence[str | FacetSpec] | None = None,
        sort: str | SortSpec | None = None,
        diversify: str | DiversifySpec | None = None,
        offset: int = 0,
        rules: bool = True,
    ) -> Hits:
        """The top ``k`` products for a query and (optionally) a shopper.

        Args:
            query: What the shopper typed.
            user_id: The shopper's id (pseudonymized before any lookup); None: anonymous.
            k: Hits to return.
            rerank_depth: Candidates retrieved and reranked (at least ``k`` are).
            filters: ``Filters`` or a dict (category, brands, min_price, max_price, in_stock,
                where).
            filter: A filter expression over the index's filterable fields, ANDed with
                ``filters`` (``"voltage >= 18 AND brand IN [DeWalt, Makita]"``; the grammar is
                in :mod:`retrieval.filters`).
            mode: Retrieval mode: ``hybrid`` (default), ``dense`` or ``bm25``.
            explain: Fill each hit's ``because`` when personalization applies.
            correct: Correct misspelled words (every stage then reads the corrected query);
                False searches the query as typed.
            facets: Fields to count values of over the candidates (``"brand"``,
                ``"brand:5"`` for the top 5, ``"price:25,50,100"`` for bands), into
                ``.facets`` (see :mod:`rerank.storefront`); a field the filters select on is
                counted as if its own conditions were not there (one more retrieval each).
            sort: ``"FIELD:asc"`` or ``"FIELD:desc"`` over a sortable field: the relevant
                candidates by that field, relevance breaking ties, products without a value
                last; None or ``"relevance"``: by relevance.
            diversify: ``"FIELD:N"`` (e.g. ``"brand:2"``): at most N products of one value
                of a facetable field per round (:func:`rerank.storefront.diversify`).
            offset: Hits to skip (paging): hits ``offset`` to ``offset + k`` of the ranking.
            rules: Apply the shop's merchandising rules (:mod:`rerank.rules`): a redirect
                before retrieval, hidden products out and boosts/buries after ranking, pins
                last, at their absolute positions in the whole ranking (so a page holds a
                pinned product only at its position, and a hidden one never); False ignores
                them.

        Returns:
            Up to ``k`` hits, best first; ``.facets`` the counts asked for,
            ``.total_candidates`` how many candidates the ranking holds (what facets count;
            a sorted ranking keeps only the relevant ones); ``.stage_ms["storefront"]`` their
            time when any was asked; ``.corrected`` is the corrected query when a
            correction was applied, ``.suggestion`` one only offered; ``.stage_ms`` the time
            per stage in ms: ``profile`` (the shopper's profile and taste vector),
            ``retrieve`` (query encoding and the store's search), ``rerank`` (cross-encoder
            and blend), ``personal`` (features and fusion) and ``rank`` (the last two). A
            shopper without history gets the relevance-only ranking, exactly. With rules:
            ``.rules`` the ids of the rules that fired, ``.redirected`` the text a redirect
            searched instead, each moved hit's ``rule``, and ``.stage_ms["rules"]``.

        Raises:
            ShopsearchError: An empty query, bad filters, k or offset, a facet, sort or
                diversify on a field that cannot take it (the fields that can are named).
        """
        if offset < 0:
            raise ShopsearchError(f"offset must be >= 0, got {offset}")
        shop = self._storefront(facets, sort, diversify)
        flt = Filters.coerce(filters).and_where(filter)
        t0 = time.perf_counter()
        book = self.rules.book() if rules and self.rules is not None else None
        plan, searched, now = Plan(), query, None
        if book:  # the redirect decides what is searched; hidden ones need as many more
            now = self.rules.clock()  # type: ignore[union-attr]
            redirect = book.redirect(query, now)
            searched = redirect.redirect if redirect is not None else query
            plan = book.plan((query, searched), now, redirect)
        rules_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        profile = self.personal.profile(user_id) if self.personal is not None else None
        warm = is_warm(profile)
        recent = self._recent(profile) if warm else None
        taste = None
        if recent is not None:
            taste = taste_vector(recent)
        t1 = time.perf_counter()
        depth = min(MAX_K, max(offset + k, rerank_depth) + len(plan.hidden))
        # disjunctive facets: the query again without each selected facet field's conditions
        others = {}
        for spec in shop.facets:
            without = flt.without(spec.field)
            if without != flt:
                others[spec.field] = without
        # one correction, one encoding, one store batch for the query and each "without"
        hits, *extra = self.retriever.search_filtered(
            searched,
            [flt, *others.values()],
            k=depth,
            mode=mode,
            user_vector=taste,
            with_vectors=warm,
            correct=correct,
        )
        disjunctive = dict(zip(others, extra, strict=True))
        t2 = time.perf_counter()
        read = hits.corrected or searched  # the cross-encoder reads what BM25 read
        top, rank_ms = self._rank(
            read, hits, profile, recent=recent, top_k=None, explain=explain, typed=query
        )
        t3 = time.perf_counter()
        if book:
            if hits.corrected and hits.corrected != searched:  # rules for the corrected words
                plan = book.plan((query, searched, hits.corrected), now, plan.redirected)  # type: ignore[arg-type]
            if plan:
                top = plan.boost(plan.hide(top), book.matcher(self.retriever.schema))
        t_shop = time.perf_counter()
        rules_ms += (t_shop - t3) * 1000
        # facets count the first stage's candidates at the rerank depth, whatever the page: a
        # deeper page retrieves more, but the counts must not move as the shopper pages
        pool = rerank_depth + len(plan.hidden)
        disjunctive = {name: got[:pool] for name, got in disjunctive.items()}
        if plan and disjunctive:  # a hidden product is no candidate of any facet either
            disjunctive = {name: plan.hide(got) for name, got in disjunctive.items()}
        counted = [h for h in top if h.retrieval_rank <= pool]
        counts = storefront.facets(counted, shop.facets, shop.schema, disjunctive) if shop else {}
        total = len(top)
        if shop.diversify is not None:
            field = shop.schema.field(shop.diversify.field)
            top = storefront.diversify(top, storefront.group_by_field(field), shop.diversify.cap)
        if shop.sort is not None:
            field = shop.schema.field(shop.sort.field)
            top = storefront.sort_relevant(top, field, shop.sort.descending)
            total = len(top)
        pin_ms = 0.0
        if plan:
            t_pin = time.perf_counter()
            schema, before = self.retriever.schema, len(top)
            top = plan.pin(top, self.retriever.payloads, lambda p: flt.matches(p, schema))
            total += len(top) - before  # pinned products from outside the candidates
            pin_ms = (time.perf_counter() - t_pin) * 1000
            rules_ms += pin_ms
        ranked = hits.like(top[offset : offset + k])
        ranked.rules = plan.ids
        ranked.redirected = searched if plan.redirected is not None else None
        ranked.facets = counts
        ranked.total_candidates = total
        t4 = time.perf_counter()
        ranked.stage_ms = {
            "profile": (t1 - t0) * 1000,
            "retrieve": (t2 - t1) * 1000,
            "rerank": rank_ms.get("rerank", 0.0),
            "personal": rank_ms.get("personal", 0.0),
            "rank": (t3 - t2) * 1000,
        }
        if shop:
            ranked.stage_ms["storefront"] = (t4 - t_shop) * 1000 - pin_ms
        if book:
            ranked.stage_ms["rules"] = rules_ms
        return ranked

    def _storefront(
        self,
        facets: Sequence[str | FacetSpec] | None,
        sort: str | SortSpec | None,
        diversify: str | DiversifySpec | None,
    ) -> _Storefront:
        """The facets, sort and diversity asked for, checked against the index's fields."""
        if not facets and sort is None and diversify is None:
            return _Storefront(None)
        schema = self.retriever.schema
        asked, by, groups = storefront.check(schema, facets, sort, diversify)
        return _Storefront(schema, tuple(asked), by, groups)

    def search_batch(
        self,
        queries: Sequence[str],
        *,
        user_ids: Sequence[str | None] | None = None,
        k: int = 10,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        filters: Filters | dict | None = None,
        mode: Mode | None = None,
        explain: bool = True,
        correct: bool = True,
    ) -> list[Hits]:
        """:meth:`search` for several queries; anonymous ones share one retrieval batch.

        The ranking alone, as benchmarks and training read it: merchandising rules (and the
        storefront options) are :meth:`search`'s.
        """
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one")
        if user_ids is not None and len(user_ids) != len(queries):
            raise ShopsearchError(f"{len(user_ids)} user_ids for {len(queries)} queries")
        if user_ids is not None and any(u is not None for u in user_ids):
            return [
                self.search(
                    q,
                    user_id=u,
                    k=k,
                    rerank_depth=rerank_depth,
                    filters=filters,
                    mode=mode,
                    explain=explain,
                    correct=correct,
                )
                for q, u in zip(queries, user_ids, strict=True)
            ]
        batches = self.retriever.search_batch(
            queries, k=max(k, rerank_depth), filters=filters, mode=mode, correct=correct
        )
        return [
            hits.like(self.rank(hits.corrected or q, hits, None, top_k=k, explain=explain, typed=q))
            for q, hits in zip(queries, batches, strict=True)
        ]

    def rank(
        self,
        query: str,
        hits: Sequence[RankedHit],
        profile: UserProfile | None = None,
        *,
        recent: np.ndarray | None = None,
        top_k: int | None = None,
        explain: bool = True,
        typed: str | None = None,
    ) -> list[RankedHit]:
        """Ranks retrieved hits: relevance (cross-encoder + blend), then personalization.

        Args:
            query: What the shopper typed.
            hits: Stage-1 hits, best first.
            profile: The shopper's point-in-time profile; None: anonymous.
            recent: Vectors of the shopper's recent items; None looks them up in the index.
            top_k: Keep this many; None keeps all.
            explain: Fill ``because`` for a warm shopper.
            typed: The query as the shopper typed it, when ``query`` is its correction: the
                search log, and so the personal model's click counts, hold the typed text.
        """
        return self._rank(
            query, hits, profile, recent=recent, top_k=top_k, explain=explain, typed=typed
        )[0]

    def _rank(
        self,
        query: str,
        hits: Sequence[RankedHit],
        profile: UserProfile | None = None,
        *,
        recent: np.ndarray | None = None,
        top_k: int | None = None,
        explain: bool = True,
        typed: str | None = None,
    ) -> tuple[list[RankedHit], dict[str, float]]:
        """:meth:`rank`, and the time of its ``rerank`` and ``personal`` stages (ms)."""
        if not hits:
            return [], {}
        if self.reranker is None and self.personal is None and self.ranker is None:  # stage 1
            return list(hits[:top_k] if top_k is not None else hits), {}
        t0 = time.perf_counter()
        ranked = self._relevance(query, hits)
        t1 = time.perf_counter()
        timing = {"rerank": (t1 - t0) * 1000}
        if self.personal is None:
            return (ranked[:top_k] if top_k is not None else ranked), timing
        warm = is_warm(profile)
        if recent is None and warm:
            recent = self._recent(profile)
        if warm and any(h.vector is None for h in ranked):  # retrieved without vectors
            got = self.retriever.vectors([h.product_id for h in ranked if h.vector is None])
            ranked = [
                h if h.vector is not None else replace(h, vector=got.get(h.product_id))
                for h in ranked
            ]
        out = sort_hits(
            self.personal.rank(ranked, profile, recent, explain, query=typed or query), top_k
        )
        timing["personal"] = (time.perf_counter() - t1) * 1000
        return out, timing

    def _relevance(self, query: str, hits: Sequence[RankedHit]) -> list[RankedHit]:
        """The relevance stage alone: cross-encoder (when loaded) blended with stage 1, or the
        learned stage over both when one is loaded."""
        if self.ranker is not None:
            corrected = getattr(hits, "corrected", None)  # a Hits knows its correction
            if self.reranker is not None:
                cross = self.reranker.score(query, [hit_text(h) for h in hits])
                hits = [replace(h, cross=float(c)) for h, c in zip(hits, cross, strict=True)]
            return self.ranker.rank(query, hits, corrected)
        if self.reranker is not None:
            return self.reranker.rank(query, hits)
        return rerank_hits(hits, None, self.retrieval_weight)

    def _recent(self, profile: UserProfile | None) -> np.ndarray | None:
        return recent_vectors(profile, self.retriever.vectors)

    def close(self) -> None:
        """Releases the index and the profile store."""
        self.retriever.close()
        if self.personal is not None:
            self.personal.close()

    def __enter__(self) -> SearchPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rules_beside(retriever: Retriever) -> RuleStore | None:
    """The rules kept in an embedded index's directory; None for a server index."""
    location = getattr(getattr(retriever, "backend", None), "location", None)
    path = getattr(location, "path", None)
    return RuleStore(path) if path is not None else None
