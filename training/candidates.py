"""Stage-1 candidates for reranker training: the retrieved negatives a cross-encoder learns from.

Moved out of the CLI (it was ``shopsearch.cli.reranker_candidates``) so that Python callers and
``shopsearch train reranker`` share one path: check the options, retrieve each training and
validation query's hybrid candidates from the index the reranker will serve, then train.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from evaluation.labels import Judgments
from rerank.defaults import DEFAULT_RERANK_DEPTH
from retrieval.retriever import Retriever
from retrieval.store import IndexLocation
from training.config import RerankerTrainConfig
from training.reranker import TrainReport, check_config, select_train_queries, train_reranker

_BATCH = 64


def reranker_candidates(
    location: IndexLocation,
    data: Judgments,
    query_ids: Sequence[str],
    depth: int = DEFAULT_RERANK_DEPTH,
) -> dict[str, list[str]]:
    """Stage-1 (hybrid) candidates for queries, the negatives a reranker should learn from (and
    the lists its validation reranks): what serving would rerank, ``depth`` per query."""
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
        out_dir: New (or empty) folder for the model (see :func:`training.reranker.train_reranker`).
        location: The index whose hybrid results the reranker will reorder.
        config: The training options.
        progress: Show a progress bar.
        log: Where progress messages go.

    Returns:
        The :class:`training.common.TrainReport`.

    Raises:
        ShopsearchError: Options out of range (before anything is retrieved), no index at
            ``location``, or too little to train on.
    """
    check_config(config)
    wanted = select_train_queries(data, config) + sorted(data.queries["validation"])
    log(f"retrieving negatives for {len(wanted)} queries from {location.describe()}")
    candidates = reranker_candidates(location, data, wanted)
    return train_reranker(data, out_dir, candidates, config, progress=progress, log=log)
