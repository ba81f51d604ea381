"""The learned stage's latency: ``shopsearch bench-ltr ... --latency-only`` and bench-ltr's section.

What serving pays for the learned final stage on one query's ``depth`` (50) candidates:
:meth:`rerank.ltr.LearnedRanker.rank`, that is the features (:func:`rerank.ltr.ranker_features`),
LightGBM's predict on one thread and the sort, timed per test query with ``perf_counter``:

* cold: every cache of product and query analysis cleared before each query (every candidate
  tokenized), and as served (the caches empty at the first test query, then kept);
* the three parts apart (features, predict, sort), as served;
* the first implementation of the stage (:func:`features_v1`, the ``dataclasses.replace`` and
  ``sort_hits`` ranking) on the same queries in the same run, the two taken in turn on each
  block of :data:`BLOCK` queries so that the machine's load falls on both alike: the ratio
  new / old is the figure that holds across machines. The run also checks that both give the same feature values and the
  same order on every list.

``--latency-only`` reads the test candidates ``bench-ltr`` cached in its workdir and the full
model it saved there, so it needs no retrieval and no training (a few seconds).

    measure(ranker, lists, depth) -> dict of ms figures
    run(index, workdir, depth) -> LatencyReport
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rerank.ltr import _COL, _TOKENIZE, FEATURE_NAMES, _kind, _number

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "learned-stage-latency"


# -- the first implementation, kept as the reference the fast one is timed against -------------


@lru_cache(maxsize=50_000)
def _analyse_v1(text: str) -> tuple[tuple[str, ...], frozenset[str]]:
    tokens = tuple(_TOKENIZE(text))
    return tokens, frozenset(tokens)


@lru_cache(maxsize=4096)
def _query_v1(
    text: str,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]], frozenset, int]:
    tokens = tuple(_TOKENIZE(text))
    distinct = tuple(dict.fromkeys(tokens))
    kinds: dict[str, list[str]] = {"word": [], "number": [], "measure": [], "model": []}
    for t in distinct:
        kinds[_kind(t)].append(t)
    return (
        tokens,
        distinct,
        {k: tuple(v) for k, v in kinds.items()},
        frozenset(zip(tokens, tokens[1:], strict=False)),
        len(text.strip()),
    )


def features_v1(query: str, hits: Sequence[Any], corrected: str | None = None) -> np.ndarray:
    """The first :func:`rerank.ltr.ranker_features` (commit fd4d9f0), unchanged: a Python loop
    per candidate over per-text token caches. Same arguments and values."""
    n = len(hits)
    x = np.full((n, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    if n == 0:
        return x
    read = corrected if corrected else query
    q_tokens, q_distinct, q_kinds, q_pairs, q_chars = _query_v1(read)
    fused = np.array([h.retrieval for h in hits], dtype=np.float64)
    x[:, _COL["fused_score"]] = fused
    top = fused.max()
    x[:, _COL["fused_score_rel"]] = fused / top if top > 0 else np.nan
    x[:, _COL["fused_rank"]] = [h.retrieval_rank or np.nan for h in hits]
    for source, score, rel, rank, gap in (
        ("bm25", "bm25_score", "bm25_score_rel", "bm25_rank", False),
        ("dense", "dense_score", "dense_score_gap", "dense_rank", True),
    ):
        scores = np.full(n, np.nan)
        ranks = np.full(n, np.nan)
        for i, h in enumerate(hits):
            for name, s, r in h.sources:
                if name == source:
                    scores[i], ranks[i] = s, r
                    break
        x[:, _COL[score]] = scores
        x[:, _COL[rank]] = ranks
        if not np.isnan(scores).all():
            best = np.nanmax(scores)
            if gap:
                x[:, _COL[rel]] = scores - best
            elif best > 0:
                x[:, _COL[rel]] = scores / best
    cross = np.array([np.nan if h.cross is None else h.cross for h in hits], dtype=np.float64)
    x[:, _COL["cross"]] = cross
    if not np.isnan(cross).all():
        x[:, _COL["cross_gap"]] = cross - np.nanmax(cross)
    distinct, pairs = q_distinct, sorted(q_pairs)
    title_rows: list[list[bool]] = []
    text_rows: list[list[bool]] = []
    pair_rows: list[list[bool]] = []
    title_len: list[int] = []
    brand_in_query: list[float] = []
    product: list[tuple[float, float]] = []
    query_set = set(distinct)
    for h in hits:
        payload = h.payload
        t_tokens, t_set = _analyse_v1(str(payload.get("title") or ""))
        title_len.append(len(t_tokens))
        row = [t in t_set for t in distinct]
        title_rows.append(row)
        brand, category = payload.get("brand"), payload.get("category")
        if brand or category:
            extra = [_analyse_v1(v)[1] for v in (brand, category) if isinstance(v, str)]
            row = [t in t_set or any(t in e for e in extra) for t in distinct]
        text_rows.append(row)
        if pairs:
            t_pairs = set(zip(t_tokens, t_tokens[1:], strict=False))
            pair_rows.append([p in t_pairs for p in pairs])
        brand_tokens = _analyse_v1(brand)[0] if isinstance(brand, str) and brand else t_tokens[:1]
        brand_in_query.append(
            all(t in query_set for t in brand_tokens) if brand_tokens else math.nan
        )
        product.append((_number(payload.get("price")), _number(payload.get("in_stock"))))
    in_title = np.array(title_rows, dtype=bool).reshape(n, len(distinct))
    in_text = np.array(text_rows, dtype=bool).reshape(n, len(distinct))
    in_pairs = np.array(pair_rows, dtype=bool).reshape(n, len(pairs))
    x[:, _COL["price"] : _COL["in_stock"] + 1] = product

    def share(found: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray | float:
        part = found if columns is None else found[:, list(columns)]
        return part.mean(axis=1) if part.shape[1] else math.nan

    kinds = {k: [distinct.index(t) for t in q_kinds[k]] for k in q_kinds}
    words = kinds["word"]
    x[:, _COL["query_tokens"]] = len(q_tokens)
    x[:, _COL["query_chars"]] = q_chars
    x[:, _COL["title_tokens"]] = title_len
    x[:, _COL["title_matched"]] = in_title.sum(axis=1)
    x[:, _COL["title_covered"]] = share(in_title)
    x[:, _COL["text_covered"]] = share(in_text)
    x[:, _COL["words_covered"]] = share(in_title, words)
    for kind in ("number", "measure", "model"):
        x[:, _COL[f"{kind}s_in_query"]] = len(kinds[kind])
        x[:, _COL[f"{kind}s_covered"]] = share(in_title, kinds[kind])
    if words:
        x[:, _COL["first_word_matched"]] = in_title[:, words[0]]
        x[:, _COL["last_word_matched"]] = in_title[:, words[-1]]
    x[:, _COL["pairs_covered"]] = share(in_pairs)
    x[:, _COL["brand_matched"]] = brand_in_query
    x[:, _COL["corrected"]] = 1.0 if corrected else 0.0
    return x


def rank_v1(ranker: Any, query: str, hits: Sequence[Any], corrected: str | None) -> list[Any]:
    """The first ``LearnedRanker.rank``: :func:`features_v1`, predict, ``replace`` per hit and
    ``sort_hits``."""
    from rerank.blend import sort_hits

    x = features_v1(query, hits, corrected)
    if ranker._dropped:
        x[:, ranker._dropped] = np.nan
    scores = np.asarray(ranker.booster.predict(x, num_threads=1), dtype=np.float64)
    scored = [
        replace(h, score=float(s), relevance=float(s)) for h, s in zip(hits, scores, strict=True)
    ]
    return sort_hits(scored)


def clear_caches_v1() -> None:
    """The first implementation's caches, emptied (its cold start)."""
    _analyse_v1.cache_clear()
    _query_v1.cache_clear()


# -- measuring ---------------------------------------------------------------------------------


def _p(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


#: The passes over the test queries, in the order run: (key, label, caches cleared per query).
#: The warm pass also times each query twice more: ``warm_best3`` is the best of the three,
#: which leaves out the preemptions of a loaded machine (the stage's own cost there).
PASSES = (
    ("cold", "cold (product and query caches cleared before each query)", True),
    ("first", "first pass (caches empty at the first query, then kept)", False),
    (
        "warm",
        "warm (second pass: every candidate analysed before, a service's steady state)",
        False,
    ),
)
#: Queries timed in a row by one implementation before the other takes its turn: long enough
#: that neither evicts the other's caches between two of its own queries (as a service's other
#: work does not run between two calls of a tight loop), short enough that both meet the same
#: load.
BLOCK = 50
#: What the report shows (key, label): the passes, then the warm pass's best of 3.
TIMED = (
    *((key, label) for key, label, _cold in PASSES),
    ("warm_best3", "warm, best of 3 per query (the load's preemptions left out)"),
)


def measure(
    ranker: Any,
    lists: Sequence[Any],
    depth: int = 50,
    reference: bool = True,
    baseline: Any = None,
) -> dict[str, float]:
    """Times the stage on each list's top ``depth`` hits; see the module's docstring.

    Args:
        ranker: A :class:`rerank.ltr.LearnedRanker`.
        lists: Candidate lists (``query``, ``corrected``, ``hits``, as
            :class:`training.ranker.CandidateList`), one per query.
        depth: Candidates ranked per query.
        reference: Also time the first implementation (:func:`rank_v1`), the two taken in turn
            on each block of :data:`BLOCK` queries, and count the lists on which both agree
            (both with ``ranker``, untimed).
        baseline: The model the first implementation is timed with (the stage as it was: its
            code and its model); None: ``ranker``.

    Returns:
        ms figures keyed ``{pass}_p50`` / ``{pass}_p99`` for each of :data:`TIMED` (and
        ``v1_{pass}_*`` with ``reference``), ``features_*``, ``predict_*``, ``sort_*`` (the
        warm pass's parts), plus ``queries``, ``trees`` and, with ``reference``,
        ``same_features`` and ``same_order`` (lists on which both agree), and
        ``baseline_trees``.
    """
    from rerank.ltr import _ordered, clear_caches

    items = [item for item in lists if item.hits]
    old_ranker = ranker if baseline is None else baseline
    lat: dict[str, list[float]] = {}
    clock = time.perf_counter
    for item in items[:50]:  # warm the interpreter, numpy and LightGBM
        ranker.rank(item.query, item.hits[:depth], item.corrected)
        if reference:
            rank_v1(old_ranker, item.query, item.hits[:depth], item.corrected)
    same_features = same_order = 0
    for key, _label, cold in PASSES:
        if key != "warm":
            clear_caches()
            clear_caches_v1()
        for b, start in enumerate(range(0, len(items), BLOCK)):
            block = [
                (it.query, it.hits[:depth], it.corrected) for it in items[start : start + BLOCK]
            ]
            stages: list[tuple[str, Callable[..., Any], Callable[[], None]]] = [
                (key, ranker.rank, clear_caches)
            ]
            if reference:
                stages.append(
                    (f"v1_{key}", lambda q, h, c: rank_v1(old_ranker, q, h, c), clear_caches_v1)
                )
            if b % 2:  # take turns at going first
                stages.reverse()
            for name, call, clear in stages:
                times = lat.setdefault(name, [])
                for query, hits, corrected in block:
                    if cold:
                        clear()
                    t0 = clock()
                    call(query, hits, corrected)
                    times.append(clock() - t0)
            if key != "warm":
                continue
            for name, call, _clear in stages:  # the best of 3: the load's preemptions left out
                best = lat[name][-len(block) :]
                for _ in range(2):
                    for i, (query, hits, corrected) in enumerate(block):
                        t0 = clock()
                        call(query, hits, corrected)
                        best[i] = min(best[i], clock() - t0)
                lat.setdefault(f"{name}_best3", []).extend(best)
            for query, hits, corrected in block:
                t0 = clock()
                x = ranker.features(query, hits, corrected)
                t1 = clock()
                scores = np.asarray(ranker.booster.predict(x, num_threads=1), dtype=np.float64)
                t2 = clock()
                _ordered(hits, scores)
                t3 = clock()
                for name, seconds in (
                    ("features", t1 - t0),
                    ("predict", t2 - t1),
                    ("sort", t3 - t2),
                ):
                    lat.setdefault(name, []).append(seconds)
                if reference:
                    old = features_v1(query, hits, corrected)
                    same_features += int(np.array_equal(x, old, equal_nan=True))
                    new_ids = [h.product_id for h in ranker.rank(query, hits, corrected)]
                    old_ids = [h.product_id for h in rank_v1(ranker, query, hits, corrected)]
                    same_order += int(new_ids == old_ids)
    out: dict[str, float] = {
        "queries": float(len(items)),
        "trees": float(ranker.booster.num_trees()),
    }
    for name, values in lat.items():
        out[f"{name}_p50"], out[f"{name}_p99"] = _p(values)
    if reference:
        out["same_features"] = float(same_features)
        out["same_order"] = float(same_order)
        out["baseline_trees"] = float(old_ranker.booster.num_trees())
    return out


@dataclass(frozen=True)
class LatencyReport:
    """The figures of one ``bench-ltr --latency-only`` run.

    Attributes:
        depth: Candidates ranked per query.
        model: The model's folder.
        latency_ms: :func:`measure`'s figures.
        load: Mean 1-minute load average over the run (above the core count: loaded figures).
        cores: CPU cores the machine has.
        baseline: The model the first implementation was timed with, when not ``model``.
    """

    depth: int
    model: str
    latency_ms: dict[str, float]
    load: float
    cores: int
    baseline: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as the docs page shows it."""
        lat = self.latency_ms
        loaded = f"load average {self.load:.2f} on {self.cores} cores" + (
            " (loaded: the figures are the machine's, not the stage's own)"
            if self.load > self.cores
            else ""
        )
        lines = [
            f"The learned stage for {self.depth} candidates (`LearnedRanker.rank`: features, "
            f"LightGBM predict on one thread, sort), per test query over "
            f"{int(lat['queries'])} queries, model `{self.model}` ({int(lat['trees'])} trees); "
            f"{loaded}.",
            "",
            "| | p50 ms | p99 ms |",
            "|---|---|---|",
        ]
        rows = [(label, key) for key, label in TIMED]
        rows += [(f"of which {part} (warm)", part) for part in ("features", "predict", "sort")]
        old = (
            f"with `{self.baseline}` ({int(lat.get('baseline_trees', 0))} trees)"
            if self.baseline
            else "same model"
        )
        rows += [
            (f"first implementation ({old}), {label.split(' (')[0]}", f"v1_{key}")
            for key, label in TIMED
        ]
        for label, key in rows:
            if f"{key}_p50" in lat:
                lines.append(f"| {label} | {lat[f'{key}_p50']:.3f} | {lat[f'{key}_p99']:.3f} |")
        if "v1_warm_p50" in lat:
            ratios = "; ".join(
                f"{label.split(' (')[0]} {lat[f'{key}_p50'] / lat[f'v1_{key}_p50']:.2f} (p50), "
                f"{lat[f'{key}_p99'] / lat[f'v1_{key}_p99']:.2f} (p99)"
                for key, label in TIMED
                if f"v1_{key}_p50" in lat
            )
            lines += [
                "",
                f"New / first implementation ({old}), the two taken in turn on each block of "
                f"{BLOCK} queries: {ratios}. The two implementations with the same model: same "
                f"feature values on {int(lat['same_features'])} of {int(lat['queries'])} lists, same order on "
                f"{int(lat['same_order'])}.",
            ]
        return "\n".join(lines) + "\n"


def run(
    index: str | os.PathLike[str],
    workdir: str | os.PathLike[str] = "runs/ltr",
    depth: int = 50,
    model: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    baseline: str | os.PathLike[str] | None = None,
) -> LatencyReport:
    """The latency section alone, on what a ``bench-ltr`` run left in ``workdir``.

    Args:
        index: The index the cached candidates came from (its live build names the cache).
        workdir: ``bench-ltr``'s workdir.
        depth: Candidates ranked per query.
        model: A learned ranker folder; None: ``workdir/model-full``.
        baseline: A learned ranker folder the first implementation is timed with (the stage
            as it was); None: the same model.
        log: Progress messages.

    Raises:
        ShopsearchError: No cached test candidates for this index, or no model (run
            ``bench-ltr`` without ``--latency-only`` first).
    """
    from core.errors import ShopsearchError
    from rerank.ltr import LearnedRanker
    from retrieval.store import IndexLocation, open_backend

    work = Path(workdir)
    build = open_backend(IndexLocation(path=Path(index))).current_version() or "index"
    path = work / f"lists-test-{build}-k100.pkl"
    if not path.is_file():
        raise ShopsearchError(
            f"--latency-only: no cached test candidates {path}: run bench-ltr once without "
            "--latency-only on this index and workdir"
        )
    folder = Path(model) if model is not None else work / "model-full"
    ranker = LearnedRanker.open(folder)
    with open(path, "rb") as fh:
        lists = pickle.load(fh)  # noqa: S301 - bench-ltr's own cache
    log(f"timing the learned stage on {len(lists)} test lists ({depth} candidates)")
    load0 = os.getloadavg()[0]
    old = LearnedRanker.open(baseline) if baseline is not None else None
    figures = measure(ranker, lists, depth, baseline=old)
    load = (load0 + os.getloadavg()[0]) / 2
    return LatencyReport(
        depth,
        str(folder),
        figures,
        load,
        os.cpu_count() or 1,
        str(baseline) if baseline is not None else None,
    )
