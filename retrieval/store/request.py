"""The one request builder: a ``QuerySpec`` to engine-neutral source requests, and back.

Both backends run the same plan; each only spells the neutral requests in its own engine's
types (``edge.py``, ``server.py``). Hybrid (and any multi-source) queries are fused here, by
reciprocal-rank fusion over each source's ranked list, with ties ordered by product id, so the
ranking does not depend on the order an engine returns equal scores in: the same catalog, model
and query give the same ranking on every build and on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from catalog.fields import FieldSchema
from retrieval.filters import All, AnyOf, Condition, Filters, Match, MatchAny, Not
from retrieval.filters import Range as Range  # the neutral conditions' home is filters.py
from retrieval.hits import RankedHit
from retrieval.store.base import (
    DENSE,
    RRF_K,
    SCORE_DECIMALS,
    TIE_SLACK,
    QuerySpec,
    stored_hit,
)

#: RRF sums are compared at this many decimals (they are sums of 1/(k + rank)).
_FUSED_DECIMALS = 12


@dataclass(frozen=True)
class SourceRequest:
    """One nearest-neighbour query against one named vector, in neutral terms.

    Attributes:
        using: Vector name (``dense`` or ``bm25``).
        vector: Dense float32 array, or sparse (indices, values).
        limit: Points to return.
        conditions: Filter conditions, all of which must hold.
        payload: True for the whole payload, or the keys to return.
        with_vector: Return the dense vector of each point.
        hnsw_ef: HNSW beam width.
        exact: Scan every point exactly over the fp32 vectors (no HNSW, no quantized copy).
    """

    using: str
    vector: Any
    limit: int
    conditions: tuple[Condition, ...]
    payload: bool | tuple[str, ...]
    with_vector: bool
    hnsw_ef: int
    exact: bool = False


def conditions(filters: Filters, schema: FieldSchema | None = None) -> tuple[Condition, ...]:
    """Filters to engine-neutral conditions on the schema's normalized payload keys
    (:meth:`Filters.conditions`; None: the default schema)."""
    return filters.conditions(schema)


def plan(spec: QuerySpec, schema: FieldSchema | None = None) -> list[SourceRequest]:
    """The source requests for one query: one when it reads one source, else one per source.

    ``schema`` is the index's (its filter expression's fields); None: the default schema.
    """
    import retrieval.store as tunables  # HNSW_EF_SEARCH may be set there (scripts/ef_sweep.py)

    conds = conditions(spec.filters, schema)
    ef = max(tunables.HNSW_EF_SEARCH, spec.depth)
    sources = spec.sources()
    if len(sources) == 1:
        name, vec, _ = sources[0]
        limit = spec.k + TIE_SLACK
        exact = spec.exact and name == DENSE
        return [SourceRequest(name, vec, limit, conds, True, spec.with_vectors, ef, exact)]
    # whole payloads: one engine call, no second round trip for the fused top k's payloads
    limit = spec.depth + TIE_SLACK
    return [
        SourceRequest(
            name, vec, limit, conds, True, spec.with_vectors, ef, spec.exact and name == DENSE
        )
        for name, vec, _ in sources
    ]


def engine_filter(conds: Sequence[Condition], types: Any, range_type: Any):
    """Conditions in an engine's filter types (qdrant-edge's or qdrant-client's: the same
    names, ``FieldCondition``, ``MatchValue``, ``MatchAny``, ``Filter``, but for the range).
    AND, OR and NOT are nested ``Filter``s (``must``, ``should``, ``must_not``).

    Returns:
        The engine's ``Filter``, or None without conditions.
    """
    if not conds:
        return None
    return types.Filter(must=[_engine_condition(c, types, range_type) for c in conds])


def _engine_condition(c: Condition, types: Any, range_type: Any):
    if isinstance(c, All):
        return types.Filter(must=[_engine_condition(i, types, range_type) for i in c.items])
    if isinstance(c, AnyOf):
        return types.Filter(should=[_engine_condition(i, types, range_type) for i in c.items])
    if isinstance(c, Not):
        return types.Filter(must_not=[_engine_condition(c.item, types, range_type)])
    if isinstance(c, Match):
        return types.FieldCondition(key=c.key, match=types.MatchValue(value=c.value))
    if isinstance(c, MatchAny):
        return types.FieldCondition(key=c.key, match=types.MatchAny(any=list(c.values)))
    bounds = range_type(gte=c.gte, lte=c.lte, gt=c.gt, lt=c.lt)
    return types.FieldCondition(key=c.key, range=bounds)


def ranked(hits: Sequence[RankedHit], decimals: int = SCORE_DECIMALS) -> list[RankedHit]:
    """Hits by score, descending; equal scores (at ``decimals``) by product id."""
    return sorted(hits, key=lambda h: (-round(h.score, decimals), h.product_id))


def fuse(lists: Sequence[Sequence[RankedHit]], weights: Sequence[float], depth: int):
    """Weighted reciprocal-rank fusion: product id -> sum of ``weight / (RRF_K + rank)``.

    Each list is first ordered by :func:`ranked` and cut to ``depth``; ranks start at 1.
    """
    scores: dict[str, float] = {}
    for hits, weight in zip(lists, weights, strict=True):
        for rank, hit in enumerate(ranked(hits)[:depth], start=1):
            scores[hit.product_id] = scores.get(hit.product_id, 0.0) + weight / (RRF_K + rank)
    return scores


def search_batch(
    specs: Sequence[QuerySpec],
    run: Callable[[list[SourceRequest]], list[list[RankedHit]]],
    fetch: Callable[[list[str], bool], dict[str, RankedHit]],
    schema: FieldSchema | None = None,
) -> list[list[RankedHit]]:
    """Runs queries through a backend's ``run`` (one engine batch) and ``fetch`` (by id).

    Args:
        specs: The queries.
        run: Executes source requests, one ranked-or-not hit list each, in order.
        fetch: Payloads (and vectors when asked) of product ids; a fallback for fused ids
            whose source hit lacks them.
        schema: The index's fields (what filter expressions may name); None: the defaults.

    Returns:
        One list of at most ``k`` hits per spec, best first.
    """
    plans = [plan(s, schema) for s in specs]
    flat = [r for p in plans for r in p]
    results = run(flat) if flat else []
    out: list[list[RankedHit]] = []
    at = 0
    for spec, reqs in zip(specs, plans, strict=True):
        lists = results[at : at + len(reqs)]
        at += len(reqs)
        names = source_names(spec)
        if len(reqs) == 1:
            out.append(
                [
                    replace(h, sources=((names[0], h.score, rank),))
                    for rank, h in enumerate(ranked(lists[0])[: spec.k], start=1)
                ]
            )
            continue
        scores = fuse(lists, [w for _, _, w in spec.sources()], spec.depth)
        parts = source_parts(lists, names, spec.depth)
        top = sorted(scores, key=lambda p: (-round(scores[p], _FUSED_DECIMALS), p))[: spec.k]
        stored = {h.product_id: h for hits in lists for h in hits}
        missing = [p for p in top if p not in stored]  # none: every fused id came from a list
        if missing:
            stored.update(fetch(missing, spec.with_vectors))
        out.append(
            [
                replace(
                    stored_hit(p, scores[p], stored[p].payload, stored[p].vector),
                    sources=parts.get(p, ()),
                )
                for p in top
                if p in stored
            ]
        )
    return out


def source_names(spec: QuerySpec) -> list[str]:
    """The name of each list ``spec`` reads, in order: its query's sources (``dense``,
    ``bm25``), then ``user`` for each shopper-taste prefetch."""
    names = [name for name, _, _ in spec.sources()]
    query = 2 if spec.mode == "hybrid" else 1
    return names[:query] + ["user"] * (len(names) - query)


def source_parts(
    lists: Sequence[Sequence[RankedHit]], names: Sequence[str], depth: int
) -> dict[str, tuple[tuple[str, float, int], ...]]:
    """Product id -> (source, score, rank) in each list it is in, ranked and cut as
    :func:`fuse` reads them (:attr:`RankedHit.sources`)."""
    parts: dict[str, list[tuple[str, float, int]]] = {}
    for hits, name in zip(lists, names, strict=True):
        for rank, hit in enumerate(ranked(hits)[:depth], start=1):
            parts.setdefault(hit.product_id, []).append((name, float(hit.score), rank))
    return {p: tuple(v) for p, v in parts.items()}


def as_float32(vector: Any) -> np.ndarray | None:
    """An engine's dense vector (a list, or a dict by name) as float32, or None."""
    if vector is None:
        return None
    if isinstance(vector, dict):
        vector = vector.get(DENSE)
        if vector is None:
            return None
    return np.asarray(vector, dtype=np.float32)
