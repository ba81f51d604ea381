"""Stage-1 candidates for reranker training: the retrieved negatives a cross-encoder learns from.

Moved out of the CLI (it was ``shopsearch.cli.reranker_candidates``) so that Python callers and
``shopsearch train reranker`` share one path: check the options, retrieve each training and
validation query's hybrid candidates from the index the reranker will serve, then train.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evaluation.labels import Judgments
    from retrieval.store import IndexLocation
    from training.reranker import RerankerTrainConfig, TrainReport

CANDIDATE_DEPTH = 50
"""Hybrid hits retrieved per query (the negatives' pool, and what the validation reranks)."""

_BATCH = 64


def reranker_candidates(
    location: IndexLocation, data: Judgments, query_ids: Sequence[str], depth: int = CANDIDATE_DEPTH
) -> dict[str, list[str]]:
    """Stage-1 (hybrid) candidates for queries, the negatives a reranker should learn from."""
    from retrieval.retriever import Retriever

    queries = {**data.queries["train"], **data.queries["validation"]}
    ids = [q for q in query_ids if q in queries]
    out: dict[str, list[str]] = {}
    with Retriever.open(
        location.path,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
    ) as r:
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            for q, hits in zip(
                chunk, r.search_batch([queries[q] for q in chunk], k=depth), strict=True
            ):
                out[q] = [h.product_id for h in hits]
    return out


def train_reranker_on_index(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    location: IndexLocation,
    config: RerankerTrainConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """Checks ``config``, retrieves candidates from ``location``, then trains the cross-encoder.

    Args:
        data: Judgments with ``train`` and ``validation`` splits.
        out_dir: New (or empty) folder for the model (see ``rerank.train.train_reranker``).
        location: The index whose hybrid results the reranker will reorder.
        config: A ``rerank.train.RerankerTrainConfig``.
        progress: Show a progress bar.
        log: Where progress messages go.

    Returns:
        The ``rerank.train.TrainReport``.

    Raises:
        ShopsearchError: Options out of range (before anything is retrieved), no index at
            ``location``, or too little to train on.
    """
    from training.reranker import select_train_queries, train_reranker

    config.check()
    wanted = select_train_queries(data, config) + sorted(data.queries["validation"])
    log(f"retrieving negatives for {len(wanted)} queries from {location.describe()}")
    candidates = reranker_candidates(location, data, wanted)
    return train_reranker(data, out_dir, candidates, config, progress=progress, log=log)
