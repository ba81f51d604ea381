"""Train the learned final stage: LightGBM lambdarank on the retrieved candidates' features.

    lists = retrieve_lists(retriever, queries, depth=50, reranker=None)   # what serving ranks
    report = train_ranker(data, out, {"train": ..., "validation": ...}, RankerTrainConfig())

Each training query's list is what serving would rank: the first stage's top ``depth`` hits
(with the cross-encoder's logits when a reranker is given), featurized by the one function
serving calls (:func:`rerank.ltr.ranker_features`). A candidate's label is its graded judgment
as an integer, ``round(2 * (grade - gain_offset))`` clipped at 0 (Home Depot's 1..3 in thirds
gives 0..4; unjudged candidates 0), and LightGBM's ``label_gain`` is linear in it, so the
objective's NDCG is the benchmark's (gain ``grade - gain_offset``). The objective is
``lambdarank`` (LambdaMART; Burges, MSR-TR-2010-82) in LightGBM, and training stops early on
the validation split's NDCG@10 (``lightgbm.early_stopping``). Queries none of whose candidates
is graded above 0 are left out of training and validation: lambdarank's gradient is 0 on them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from evaluation.metrics import ndcg_of_scores
from rerank.defaults import DEFAULT_RERANK_DEPTH
from rerank.ltr import FEATURE_GROUPS, FEATURE_NAMES, LearnedRanker, ranker_features
from retrieval.hits import RankedHit, hit_text

_BATCH = 64


@dataclass(frozen=True)
class RankerTrainConfig:
    """Options of :func:`train_ranker`.

    Attributes:
        depth: Candidates per query (what serving ranks: the rerank depth).
        rounds: Boosting rounds at most (trees).
        early_stopping: Stop after this many rounds without a better validation NDCG@10.
        learning_rate: Shrinkage.
        num_leaves: Leaves per tree.
        min_data_in_leaf: Fewest candidates in a leaf.
        feature_fraction: Features each tree may use (a seeded sample).
        dropped: Feature groups of :data:`rerank.ltr.FEATURE_GROUPS` left out (their columns
            set to NaN at training and serving): the ablations.
        threads: LightGBM threads (None: LightGBM's default, every core).
        seed: Seed of LightGBM's sampling.
    """

    depth: int = DEFAULT_RERANK_DEPTH
    rounds: int = 1000
    early_stopping: int = 50
    # Lean trees for serving's 1 ms: 7 leaves at 0.1 stopped at 205 trees on Home Depot (no
    # cross-encoder) against 404 for 31 leaves at 0.05, and shallower; validation
    # NDCG@10 0.5625 against 0.5664, test 0.4433 against 0.4399 (docs/guide/ranking.md).
    learning_rate: float = 0.1
    num_leaves: int = 7
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    dropped: tuple[str, ...] = ()
    threads: int | None = None
    seed: int = 13

    def __post_init__(self) -> None:
        for name in ("depth", "rounds", "early_stopping", "num_leaves", "min_data_in_leaf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ShopsearchError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 < self.learning_rate <= 1:
            raise ShopsearchError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if not 0 < self.feature_fraction <= 1:
            raise ShopsearchError(
                f"feature_fraction must be in (0, 1], got {self.feature_fraction}"
            )
        unknown = [g for g in self.dropped if g not in FEATURE_GROUPS]
        if unknown:
            raise ShopsearchError(
                f"unknown feature group {unknown[0]!r}: use one of {', '.join(FEATURE_GROUPS)}"
            )


@dataclass(frozen=True)
class CandidateList:
    """One query's candidates as serving would rank them.

    Attributes:
        query_id: The query's id.
        query: The query as typed.
        corrected: The spelling correction applied to it, or None.
        hits: The first stage's top hits, best first (``cross`` set when a reranker ran).
    """

    query_id: str
    query: str
    corrected: str | None
    hits: tuple[RankedHit, ...]

    def features(self) -> np.ndarray:
        """:func:`rerank.ltr.ranker_features` of the list, ``(len(hits), F)``."""
        return ranker_features(self.query, self.hits, self.corrected)


@dataclass(frozen=True)
class RankerReport:
    """What a training run did.

    Attributes:
        out_dir: The saved model's folder.
        train_queries: Training lists used (queries with a graded candidate).
        val_queries: Validation lists used.
        train_rows: Candidates trained on.
        best_iteration: Trees kept (early stopping's best round).
        baseline_ndcg10: Validation NDCG@10 over the candidates in the first stage's order.
        best_ndcg10: The same, ranked by the saved model.
        wall_seconds: Featurizing and training (the retrieval not included).
        importance: Feature -> total gain of its splits, largest first.
        history: Validation NDCG@10 per round.
    """

    out_dir: str
    train_queries: int
    val_queries: int
    train_rows: int
    best_iteration: int
    baseline_ndcg10: float
    best_ndcg10: float
    wall_seconds: float
    importance: dict[str, float] = field(default_factory=dict)
    history: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def grade_label(grade: float, gain_offset: float) -> int:
    """A graded judgment as lambdarank's integer label: ``round(2 * (grade - gain_offset))``,
    at least 0 (Home Depot's 1, 1.33, ..., 3 with offset 1 gives 0..4)."""
    return max(0, int(round(2 * (grade - gain_offset))))


def retrieve_lists(
    retriever: Any,
    queries: Mapping[str, str],
    depth: int = DEFAULT_RERANK_DEPTH,
    reranker: Any = None,
    log: Callable[[str], None] | None = None,
) -> list[CandidateList]:
    """The first stage's top ``depth`` candidates of each query, as serving retrieves them.

    Args:
        retriever: An open :class:`retrieval.retriever.Retriever`.
        queries: query_id -> query text.
        depth: Candidates per query.
        reranker: A loaded :class:`rerank.cross_encoder.Reranker` whose logits are set on the
            hits (``cross``), or None.
        log: Progress messages (every 1,000 queries), or None.

    Returns:
        One :class:`CandidateList` per query, in ``queries``' order.
    """
    ids = list(queries)
    out: list[CandidateList] = []
    for at in range(0, len(ids), _BATCH):
        chunk = ids[at : at + _BATCH]
        batches = retriever.search_batch([queries[q] for q in chunk], k=depth)
        for qid, hits in zip(chunk, batches, strict=True):
            corrected = hits.corrected
            got = tuple(hits)
            if reranker is not None and got:
                logits = reranker.score(corrected or queries[qid], [hit_text(h) for h in got])
                got = tuple(replace(h, cross=float(c)) for h, c in zip(got, logits, strict=True))
            out.append(CandidateList(qid, queries[qid], corrected, got))
        if log is not None and (at // _BATCH) % 16 == 15:
            log(f"retrieved {len(out)}/{len(ids)} queries")
    return out


def _matrix(
    lists: Sequence[CandidateList], qrels: Mapping[str, Mapping[str, float]], gain_offset: float
) -> tuple[np.ndarray, np.ndarray, list[int], list[CandidateList]]:
    """Features, labels and group sizes of the lists with a positive label (the others kept out)."""
    xs, ys, sizes, kept = [], [], [], []
    for item in lists:
        judged = qrels.get(item.query_id, {})
        labels = np.array(
            [
                grade_label(judged[h.product_id], gain_offset) if h.product_id in judged else 0
                for h in item.hits
            ],
            dtype=np.int32,
        )
        if not labels.any():
            continue
        xs.append(item.features())
        ys.append(labels)
        sizes.append(len(labels))
        kept.append(item)
    if not xs:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0, np.int32), [], []
    return np.concatenate(xs), np.concatenate(ys), sizes, kept


def _mask(x: np.ndarray, dropped: Sequence[str]) -> np.ndarray:
    cols = [FEATURE_NAMES.index(n) for g in dropped for n in FEATURE_GROUPS[g]]
    if cols:
        x = x.copy()
        x[:, cols] = np.nan
    return x


def _mean_ndcg(scores: np.ndarray, labels: np.ndarray, sizes: Sequence[int]) -> float:
    """Mean NDCG@10 over the lists, gains linear in the label (the benchmark's)."""
    out, at = [], 0
    for n in sizes:
        out.append(ndcg_of_scores(scores[at : at + n], labels[at : at + n] / 2.0, 10))
        at += n
    return float(np.mean(out)) if out else 0.0


def train_ranker(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    lists: Mapping[str, Sequence[CandidateList]],
    config: RankerTrainConfig | None = None,
    log: Callable[[str], None] = print,
    reranker_fingerprint: str | None = None,
) -> RankerReport:
    """Trains the learned stage on ``lists["train"]``, stopping early on ``lists["validation"]``.

    Args:
        data: The judgments (``qrels["train"]`` and ``qrels["validation"]`` label the lists).
        out_dir: Where the model goes (``model.txt`` + ``ranker.json``, see
            :meth:`rerank.ltr.LearnedRanker.save`).
        lists: ``train`` and ``validation`` candidate lists (:func:`retrieve_lists`).
        config: The options (defaults when None).
        log: Progress messages.
        reranker_fingerprint: The cross-encoder whose logits the lists carry (recorded: serving
            must use the same), or None.

    Returns:
        The :class:`RankerReport` (also in ``ranker.json`` as ``training``).

    Raises:
        ShopsearchError: No training or validation list with a graded candidate.
    """
    import lightgbm as lgb

    config = config or RankerTrainConfig()
    t0 = time.perf_counter()
    x_tr, y_tr, g_tr, _ = _matrix(lists.get("train", ()), data.qrels["train"], data.gain_offset)
    x_va, y_va, g_va, _ = _matrix(
        lists.get("validation", ()), data.qrels["validation"], data.gain_offset
    )
    for split, groups in (("train", g_tr), ("validation", g_va)):
        if not groups:
            raise ShopsearchError(
                f"no {split} query has a graded product among its {config.depth} candidates: "
                f"give the {split} split judgments of products the index retrieves"
            )
    baseline = _mean_ndcg(-x_va[:, FEATURE_NAMES.index("fused_rank")], y_va, g_va)
    x_tr, x_va = _mask(x_tr, config.dropped), _mask(x_va, config.dropped)
    log(
        f"learned stage: {len(g_tr)} training lists ({len(y_tr)} candidates), "
        f"{len(g_va)} validation lists; {len(FEATURE_NAMES)} features"
    )
    top = int(max(y_tr.max(), y_va.max()))
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "eval_at": [10],
        "label_gain": [i / 2 for i in range(top + 1)],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": config.feature_fraction,
        "feature_fraction_seed": config.seed,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
    }
    if config.threads is not None:
        params["num_threads"] = config.threads
    train_set = lgb.Dataset(
        x_tr, label=y_tr, group=g_tr, feature_name=list(FEATURE_NAMES), free_raw_data=False
    )
    val_set = lgb.Dataset(x_va, label=y_va, group=g_va, reference=train_set)
    history: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.rounds,
        valid_sets=[val_set],
        valid_names=["validation"],
        callbacks=[
            lgb.early_stopping(config.early_stopping, first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    scored = _mean_ndcg(booster.predict(x_va), y_va, g_va)
    gains = booster.feature_importance(importance_type="gain")
    importance = {
        n: float(g) for n, g in sorted(zip(FEATURE_NAMES, gains, strict=True), key=lambda p: -p[1])
    }
    report = RankerReport(
        out_dir=str(out_dir),
        train_queries=len(g_tr),
        val_queries=len(g_va),
        train_rows=int(len(y_tr)),
        best_iteration=int(best),
        baseline_ndcg10=baseline,
        best_ndcg10=scored,
        wall_seconds=time.perf_counter() - t0,
        importance=importance,
        history=[float(v) for v in history.get("validation", {}).get("ndcg@10", [])],
    )
    meta = {
        "dropped": list(config.dropped),
        "reranker": reranker_fingerprint,
        "labels": "round(2 * (grade - gain_offset)), at least 0; label_gain linear",
        "config": asdict(config),
        "training": {k: v for k, v in report.as_dict().items() if k != "history"},
    }
    LearnedRanker(booster, meta).save(Path(out_dir))
    log(
        f"learned stage: validation NDCG@10 over the candidates {baseline:.4f} (first stage) -> "
        f"{scored:.4f} with {best} trees; saved to {out_dir}"
    )
    return report


def train_ranker_on_index(
    data: Judgments,
    out_dir: str | os.PathLike[str],
    location: Any,
    reranker: str | os.PathLike[str] | None = None,
    config: RankerTrainConfig | None = None,
    log: Callable[[str], None] = print,
    device: str | None = None,
) -> RankerReport:
    """Retrieves the train and validation queries' candidates from ``location`` (and scores
    them with ``reranker``), then :func:`train_ranker`.

    Raises:
        ShopsearchError: No index at ``location``, a bad reranker folder, or nothing to train on.
    """
    from rerank.cross_encoder import Reranker
    from retrieval.retriever import Retriever

    config = config or RankerTrainConfig()
    model = Reranker.load(reranker, device=device) if reranker is not None else None
    lists: dict[str, list[CandidateList]] = {}
    with Retriever.open(
        location.path,
        qdrant_url=location.url,
        api_key=location.api_key,
        collection=location.collection,
        device=device,
    ) as retriever:
        for split in ("train", "validation"):
            judged = data.qrels[split]
            queries = {q: t for q, t in data.queries[split].items() if q in judged}
            log(f"retrieving {len(queries)} {split} queries' candidates ({config.depth} each)")
            lists[split] = retrieve_lists(retriever, queries, config.depth, model, log)
    return train_ranker(
        data,
        out_dir,
        lists,
        config,
        log=log,
        reranker_fingerprint=getattr(model, "fingerprint", None),
    )
