"""Personalization benchmark on simulated shoppers (no public behaviour log exists here).

For each simulator seed: simulate shoppers over the real catalog and graded queries; the
simulator logs only what a shop logs (impressions and interactions, never examinations). Train
the fusion from the training period's log through exactly the code ``shopsearch train
personal`` runs (:func:`personalization.learn.train_from_log`), naive and position-bias
corrected, fit an oracle on the true utilities (the ceiling), and score the held-out period's
searches against each simulated shopper's true utility (evaluation only; never a feature or a
label). The relevance-only pipeline (hybrid retrieval + cross-encoder) is the baseline.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evaluation.data import judgments_from, load_benchmark
from evaluation.labels import Judgments
from evaluation.metrics import ndcg_of_scores
from evaluation.stats import paired_test
from personalization.events import read_events
from personalization.features import compute_features, with_clicks
from personalization.impressions import impressions_from_events
from personalization.personalizer import recent_vectors, taste_vector
from personalization.ranker import PersonalRanker
from research.simulate import SimConfig, build_world, simulate, utility, write_simulation
from retrieval.hits import RankedHit
from retrieval.retriever import Retriever
from training.from_log import (
    LogTrainConfig,
    SearchAt,
    click_snapshots,
    features_at,
    lessons_from_log,
    train_from_log,
)
from training.personal import Group, PersonalTrainConfig, train_personal

DEPTH = 50
#: Warm held-out searches re-run with the shopper's taste vector to measure personalized retrieval.
RETRIEVAL_PROBE = 300


@dataclass(frozen=True)
class Setup:
    """What every seed shares: the query pool, its candidates and their scores, the vectors."""

    judgments: Judgments
    pool: list[str]
    candidates: dict[str, list[str]]  # qid -> top-DEPTH, in relevance-only pipeline order
    retrieval_score: dict[str, dict[str, float]]
    retrieval_rank: dict[str, dict[str, int]]
    cross: dict[str, dict[str, float]]
    product_ids: list[str]
    titles: list[str]
    tuned_index: str
    world_vectors: np.ndarray  # zero-shot embeddings: the simulator's latent clusters
    feature_vectors: dict[str, np.ndarray]  # fine-tuned embeddings: what features read


def _all_vectors(retriever: Retriever, ids: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(ids), retriever.encoder.dim), dtype=np.float32)
    for i in range(0, len(ids), 2000):
        chunk = ids[i : i + 2000]
        got = retriever.vectors(chunk)
        for j, pid in enumerate(chunk):
            out[i + j] = got[pid]
    return out


def prepare(
    data_dir: str | Path,
    zero_shot_index: str | Path,
    tuned_index: str | Path,
    reranker_path: str | Path,
    workdir: str | Path,
    pool_size: int = 800,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Setup:
    """Retrieves and cross-scores the query pool once (cached in ``workdir/setup``)."""
    from rerank.blend import rerank_hits
    from rerank.cross_encoder import Reranker
    from retrieval.hits import hit_text

    workdir = Path(workdir) / "setup"
    workdir.mkdir(parents=True, exist_ok=True)
    judgments = judgments_from(load_benchmark(data_dir))
    ids = sorted(judgments.texts)
    titles = [judgments.texts[p].split(" | ")[0] for p in ids]
    cache = workdir / "candidates.parquet"
    with Retriever.open(tuned_index) as tuned:
        if cache.exists():
            frame = pl.read_parquet(cache)
        else:
            rng = np.random.default_rng(seed)
            eligible = sorted(
                q
                for split in ("validation", "test")
                for q, j in judgments.qrels[split].items()
                if q in judgments.queries[split]
                and any(g >= judgments.threshold for g in j.values())
            )
            pool = sorted(
                rng.choice(eligible, size=min(pool_size, len(eligible)), replace=False).tolist()
            )
            texts = {q: t for s in ("validation", "test") for q, t in judgments.queries[s].items()}
            reranker = Reranker.load(reranker_path)
            rows = []
            t0 = time.perf_counter()
            for i in range(0, len(pool), 32):
                chunk = pool[i : i + 32]
                batches = tuned.search_batch([texts[q] for q in chunk], k=DEPTH, mode="hybrid")
                pairs = [
                    (texts[q], hit_text(h))
                    for q, hits in zip(chunk, batches, strict=True)
                    for h in hits
                ]
                logits = reranker.score_pairs(pairs)
                pos = 0
                for q, hits in zip(chunk, batches, strict=True):
                    # the relevance-only pipeline's score: cross-encoder blended with stage 1
                    ranked = rerank_hits(
                        hits, logits[pos : pos + len(hits)], reranker.retrieval_weight
                    )
                    for h in ranked:
                        rows.append(
                            (q, h.product_id, h.retrieval, h.retrieval_rank, float(h.relevance))
                        )
                    pos += len(hits)
                log(
                    f"setup: {min(i + 32, len(pool))}/{len(pool)} pool queries retrieved and cross-scored ({time.perf_counter() - t0:.0f} s)"
                )
            frame = pl.DataFrame(
                rows,
                schema=["query_id", "product_id", "retrieval_score", "retrieval_rank", "cross"],
                orient="row",
            )
            frame.write_parquet(cache)
        feature_vectors = dict(zip(ids, _all_vectors(tuned, ids), strict=True))
    with Retriever.open(zero_shot_index) as zero:
        world_vectors = _all_vectors(zero, ids)
    candidates: dict[str, list[str]] = {}
    rscore: dict[str, dict[str, float]] = {}
    rrank: dict[str, dict[str, int]] = {}
    cross: dict[str, dict[str, float]] = {}
    for q, pid, rs, rk, cs in frame.iter_rows():
        rscore.setdefault(q, {})[pid] = rs
        rrank.setdefault(q, {})[pid] = rk
        cross.setdefault(q, {})[pid] = cs
    for q, scores in cross.items():
        # the relevance-only pipeline's order: cross-encoder score, ties by retrieval rank
        candidates[q] = sorted(scores, key=lambda p, q=q: (-scores[p], rrank[q][p]))
    return Setup(
        judgments,
        sorted(candidates),
        candidates,
        rscore,
        rrank,
        cross,
        ids,
        titles,
        str(tuned_index),
        world_vectors,
        feature_vectors,
    )


#: The four rankers compared, in table order.
RANKERS = ("relevance-only", "naive", "corrected", "oracle")
#: The last days of the training period validate (early stopping), as ``train personal`` does.
VAL_DAYS = 7.0


@dataclass(frozen=True)
class SeedResult:
    """One simulator seed's results (NDCG@10 against each shopper's true utility)."""

    seed: int
    noise_share: float
    examine_eta: float
    train_searches: int
    heldout_warm: int
    heldout_cold: int
    ndcg: dict[str, float]
    lift: dict[str, float]
    p_corrected_vs_naive: float
    p_corrected_vs_relevance: float
    oracle_share: float
    propensity_estimated: list[float]
    propensity_true: list[float]
    propensity_max_error: float
    cold: dict[str, float]
    hd_relevance: tuple[float, float]
    skipped: dict[str, int]
    personal_retrieval_recall_gain: float | None
    per_search: dict[str, dict[str, float]] = field(repr=False)
    latency_p99_ms: float = 0.0
    latency_p50_ms: float = 0.0


def _rank_fn(setup: Setup):
    """The relevance-only pipeline's candidates for query texts (cached in ``setup``)."""
    qid_by_text = {_query_text(setup.judgments, q): q for q in setup.pool}

    def rank(texts: Sequence[str]) -> list[list[RankedHit]]:
        return [
            [_hit(p, qid_by_text[t], setup) for p in setup.candidates[qid_by_text[t]]]
            if t in qid_by_text
            else []
            for t in texts
        ]

    return rank


def _vectors(setup: Setup):
    def lookup(ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {p: setup.feature_vectors[p] for p in ids if p in setup.feature_vectors}

    return lookup


def simulate_setup(
    setup: Setup,
    out_dir: Path,
    *,
    seed: int,
    n_users: int = 1500,
    preference_strength: float = 1.0,
    noise_share: float = 0.0,
    examine_eta: float = 1.0,
):
    """Simulates shoppers over a prepared setup and writes the log (``shopsearch simulate``).

    Returns:
        (the simulated world, the simulation output).
    """
    config = SimConfig(
        n_users=n_users,
        preference_strength=preference_strength,
        noise_share=noise_share,
        seed=seed,
        examine_eta=examine_eta,
    )
    world = build_world(setup.product_ids, setup.titles, setup.world_vectors, config)
    sim = simulate(world, setup.judgments, setup.candidates, config, query_pool=setup.pool)
    write_simulation(sim, out_dir)
    return world, sim


def run_seed(
    setup: Setup,
    seed: int,
    workdir: Path,
    preference_strength: float = 1.0,
    noise_share: float = 0.0,
    n_users: int = 1500,
    log: Callable[[str], None] = print,
    examine_eta: float = 1.0,
    click_evidence: bool = True,
) -> tuple[SeedResult, dict[str, PersonalRanker]]:
    """Simulate a log, train naive and corrected from it exactly as ``shopsearch train
    personal`` does, fit the oracle on true utilities, and score held-out searches."""
    sim_dir = workdir / f"sim-seed{seed}-noise{noise_share:g}"
    world, sim = simulate_setup(
        setup,
        sim_dir,
        seed=seed,
        n_users=n_users,
        preference_strength=preference_strength,
        noise_share=noise_share,
        examine_eta=examine_eta,
    )
    events = [
        e
        for batch in read_events(sim_dir / "events.parquet", known_products=set(setup.product_ids))
        for e in batch.events
    ]
    train_log = [e for e in events if e.timestamp < sim.split_ts]
    log(f"seed {seed}: {len(events)} events, {len(train_log)} before the held-out period")
    rank, vectors = _rank_fn(setup), _vectors(setup)
    train_config = LogTrainConfig(
        val_days=VAL_DAYS,
        click_evidence=click_evidence,
        model=PersonalTrainConfig(loss="listwise", seed=seed),
        bootstrap=0,  # the curve's interval is a report's; the benchmark measures the model
    )
    t0 = time.perf_counter()
    lessons = lessons_from_log(  # featurized once, read by both models trained below
        train_log, rank, vectors, train_config.max_rank, train_config.flush_s
    )
    log(f"seed {seed}: the training log featurized in {time.perf_counter() - t0:.0f} s")
    models: dict[str, PersonalRanker] = {}
    models["corrected"], corrected = train_from_log(
        train_log, rank, vectors, train_config, log=log, lessons=lessons
    )
    models["naive"], _ = train_from_log(
        train_log, rank, vectors, replace(train_config, correct=False), log=log, lessons=lessons
    )
    # every search with ground truth, featurized as it was (point in time)
    utility = _utilities(sim.utility)
    qid_by_text = {_query_text(setup.judgments, q): q for q in setup.pool}
    searches = sorted(
        (e for e in events if e.event == "search"), key=lambda e: (e.timestamp, e.search_id)
    )
    keyed = []
    for e in searches:
        qid = qid_by_text[e.query]
        u = utility.get((e.user_id, e.session_id, round(e.timestamp, 3), qid))
        if u is not None:
            keyed.append((e, qid, u))
    t0 = time.perf_counter()
    at = [
        SearchAt(e.timestamp, e.user_id, [_hit(p, qid, setup) for p in setup.candidates[qid]])
        for e, qid, _ in keyed
    ]
    featurized = features_at(events, at, vectors)
    per_search_ms = (time.perf_counter() - t0) * 1000 / max(len(at), 1)
    split_val = sim.split_ts - VAL_DAYS * 86400
    # the oracle reads the click evidence as the corrected model does: point in time in the
    # training period, then the counts it was trained from (what serving reads)
    snapshots, _ = click_snapshots(
        impressions_from_events(train_log)[0],
        [(e.timestamp, e.query, setup.candidates[qid]) for e, qid, _ in keyed],
        train_config.max_rank,
        train_config.flush_s,
    )
    theta = corrected.propensity or None
    oracle_train, oracle_val = [], []
    evals: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, bool, bool]] = {}
    taste_probe: list[tuple[str, str, np.ndarray]] = []
    for (e, qid, u), (profile, feats), snap in zip(keyed, featurized, snapshots, strict=True):
        cands = setup.candidates[qid]
        cross = np.array([setup.cross[qid][p] for p in cands], dtype=np.float32)
        gains = np.array([u.get(p, 0.0) for p in cands], dtype=np.float32)
        cold = profile.n_events == 0
        heldout = e.timestamp >= sim.split_ts
        if not heldout and not cold:  # the oracle learns the true utilities of the candidates
            point = with_clicks(feats, snap.features(theta) if click_evidence else None)
            group = Group(e.search_id, cross, point, np.ones_like(gains), gains)
            (oracle_val if e.timestamp >= split_val else oracle_train).append(group)
        if heldout or cold:
            by_model = {  # each with the counts and curve it serves with
                r: with_clicks(feats, models[r].click_features(e.query, cands))
                for r in ("naive", "corrected")
            }
            by_model["oracle"] = by_model["corrected"]
            evals[e.search_id] = (cross, by_model, gains, cold, heldout)
        if heldout and not cold and len(taste_probe) < RETRIEVAL_PROBE:
            vec = taste_vector(recent_vectors(profile, vectors))
            if vec is not None:
                taste_probe.append((e.user_id, qid, vec))
    models["oracle"], _ = train_personal(
        oracle_train, PersonalTrainConfig(loss="listwise", seed=seed), log, val_groups=oracle_val
    )
    models["oracle"].click_stats = models["corrected"].click_stats
    models["oracle"].meta["propensity"] = corrected.propensity
    per: dict[str, dict[str, float]] = {r: {} for r in RANKERS}
    cold_scores: dict[str, list[float]] = {r: [] for r in RANKERS}
    for key, (cross, feats, gains, cold, heldout) in evals.items():
        for r in RANKERS:
            scores = cross if r == "relevance-only" else models[r].score(cross, feats[r]).total
            value = ndcg_of_scores(scores, gains)
            if cold:
                cold_scores[r].append(value)
            elif heldout:
                per[r][key] = value
    ndcg = {r: float(np.mean(list(per[r].values()))) for r in RANKERS}
    lift = {r: ndcg[r] / ndcg["relevance-only"] - 1.0 for r in RANKERS}
    vs_naive = paired_test(per["naive"], per["corrected"], method="randomization")
    vs_rel = paired_test(per["relevance-only"], per["corrected"], method="randomization")
    true_curve = [1.0 / r**examine_eta for r in range(1, len(corrected.propensity) + 1)]
    error = float(np.max(np.abs(np.array(corrected.propensity) - np.array(true_curve))))
    hd = _hd_relevance(setup, models["corrected"])
    gap = ndcg["oracle"] - ndcg["relevance-only"]
    result = SeedResult(
        seed=seed,
        noise_share=noise_share,
        examine_eta=examine_eta,
        train_searches=corrected.train_searches,
        heldout_warm=len(per["relevance-only"]),
        heldout_cold=len(cold_scores["relevance-only"]),
        ndcg=ndcg,
        lift=lift,
        p_corrected_vs_naive=vs_naive.p_value,
        p_corrected_vs_relevance=vs_rel.p_value,
        oracle_share=float((ndcg["corrected"] - ndcg["relevance-only"]) / gap) if gap > 0 else 0.0,
        propensity_estimated=corrected.propensity,
        propensity_true=true_curve,
        propensity_max_error=error,
        cold={r: float(np.mean(v)) if v else float("nan") for r, v in cold_scores.items()},
        hd_relevance=hd,
        skipped=corrected.skipped,
        personal_retrieval_recall_gain=retrieval_probe(
            setup, world, preference_strength, taste_probe, log
        ),
        per_search={r: dict(v) for r, v in per.items()},
        latency_p99_ms=per_search_ms,
        latency_p50_ms=per_search_ms,
    )
    log(
        f"seed {seed} noise {noise_share:g}: held-out NDCG@10 vs true utility "
        + ", ".join(f"{r} {ndcg[r]:.4f}" for r in RANKERS)
        + f"; corrected vs naive p={vs_naive.p_value:.4f}; examination max error {error:.3f}"
    )
    return result, models


def _hd_relevance(setup: Setup, model: PersonalRanker) -> tuple[float, float]:
    """Home Depot human grades for an anonymous shopper: relevance-only vs personalized."""
    rel, per = [], []
    for qid in setup.pool:
        cands = setup.candidates[qid]
        grades = {
            p: g
            for split in ("validation", "test")
            for p, g in setup.judgments.qrels[split].get(qid, {}).items()
        }
        gains = np.array(
            [max(grades.get(p, 1.0) - setup.judgments.gain_offset, 0.0) for p in cands],
            dtype=np.float32,
        )
        feats = compute_features(None, [_hit(p, qid, setup) for p in cands], {}, None)
        cross = np.array([setup.cross[qid][p] for p in cands], dtype=np.float32)
        rel.append(ndcg_of_scores(cross, gains))
        per.append(ndcg_of_scores(model.score(cross, feats).total, gains))
    return float(np.mean(rel)), float(np.mean(per))


def _hit(pid: str, qid: str, setup: Setup) -> RankedHit:
    """A candidate as the query-time pipeline sees it (Home Depot payloads carry no brand)."""
    return RankedHit(
        product_id=pid,
        score=setup.cross[qid][pid],
        retrieval=setup.retrieval_score[qid][pid],
        retrieval_rank=setup.retrieval_rank[qid][pid],
        relevance=setup.cross[qid][pid],
        vector=setup.feature_vectors[pid],
    )


def world_utility(
    world, judgments: Judgments, strength: float, user_id: str, qid: str, pids: Sequence[str]
) -> np.ndarray:
    """True utility of any products for a simulated shopper (the simulator's own formula)."""
    grades: dict[str, float] = {}
    for split in ("train", "validation", "test"):
        grades.update(judgments.qrels[split].get(qid, {}))
    return utility(world, user_id, grades, pids, strength)


def _oracle_dcg10(utilities: np.ndarray) -> float:
    top = np.sort(utilities)[::-1][:10]
    return float(sum(g / math.log2(r + 2) for r, g in enumerate(top)))


def retrieval_probe(setup: Setup, world, strength: float, probes, log) -> float | None:
    """Relative gain in the best top-10 utility reachable from the candidates when the
    shopper's taste vector is a second prefetch (personalized retrieval), over plain hybrid."""
    if not probes:
        return None
    texts = {q: _query_text(setup.judgments, q) for _, q, _ in probes}
    plain, personal = [], []
    with Retriever.open(setup.tuned_index) as r:
        for user, qid, vec in probes:
            a = [h.product_id for h in r.search(texts[qid], k=DEPTH, mode="hybrid")]
            b = [
                h.product_id for h in r.search(texts[qid], k=DEPTH, mode="hybrid", user_vector=vec)
            ]
            plain.append(
                _oracle_dcg10(world_utility(world, setup.judgments, strength, user, qid, a))
            )
            personal.append(
                _oracle_dcg10(world_utility(world, setup.judgments, strength, user, qid, b))
            )
    gain = float(np.mean(personal) / np.mean(plain) - 1.0)
    log(
        f"personalized retrieval: best reachable top-10 utility {np.mean(plain):.3f} -> {np.mean(personal):.3f} ({gain:+.1%}) on {len(probes)} searches"
    )
    return gain


def _query_text(judgments: Judgments, qid: str) -> str:
    for split in ("validation", "test", "train"):
        if qid in judgments.queries[split]:
            return judgments.queries[split][qid]
    raise KeyError(qid)


def _utilities(frame: pl.DataFrame) -> dict[tuple[str, str, float, str], dict[str, float]]:
    out: dict[tuple[str, str, float, str], dict[str, float]] = {}
    for user, session, ts, qid, pid, u in frame.select(
        "user_id", "session_id", "search_ts", "query_id", "product_id", "utility"
    ).iter_rows():
        out.setdefault((user, session, round(float(ts), 3), qid), {})[pid] = float(u)
    return out


@dataclass(frozen=True)
class PersonalizationReport:
    """All seeds, the noisy variant, and the summary figures."""

    seeds: list[SeedResult]
    noisy: list[SeedResult]
    mean_lift: dict[str, float]
    mean_lift_noisy: dict[str, float]
    noisy_kept: float
    seconds: float
    machine: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for group in ("seeds", "noisy"):
            for s in d[group]:
                s.pop("per_search", None)
        return d

    def markdown(self) -> str:
        head = " | ".join(f"NDCG@10 {r}" for r in RANKERS)
        lines = [
            f"| seed | noise | train searches | held-out warm | {head} | corrected lift | "
            "corrected vs naive p | corrected vs relevance p | share of oracle lift | "
            "examination max error | cold: relevance -> corrected | Home Depot (anonymous) |",
            "|" + "---|" * (12 + len(RANKERS) - 1),
        ]
        for s in [*self.seeds, *self.noisy]:
            cells = " | ".join(f"{s.ndcg[r]:.4f}" for r in RANKERS)
            lines.append(
                f"| {s.seed} | {s.noise_share:.0%} | {s.train_searches} | {s.heldout_warm} | "
                f"{cells} | {s.lift['corrected']:+.1%} | {s.p_corrected_vs_naive:.4f} | "
                f"{s.p_corrected_vs_relevance:.4f} | {s.oracle_share:.0%} | "
                f"{s.propensity_max_error:.3f} | {s.cold['relevance-only']:.4f} -> "
                f"{s.cold['corrected']:.4f} | {s.hd_relevance[0]:.4f} -> {s.hd_relevance[1]:.4f} |"
            )
        lines += [
            "",
            "| rank | true examination | "
            + " | ".join(f"estimated, seed {s.seed}" for s in self.seeds)
            + " |",
            "|---|---|" + "---|" * len(self.seeds),
        ]
        for k in range(len(self.seeds[0].propensity_true) if self.seeds else 0):
            lines.append(
                f"| {k + 1} | {self.seeds[0].propensity_true[k]:.3f} | "
                + " | ".join(f"{s.propensity_estimated[k]:.3f}" for s in self.seeds)
                + " |"
            )
        lines += [
            "",
            "Mean lift over relevance-only (no noise): "
            + ", ".join(f"{r} {v:+.1%}" for r, v in self.mean_lift.items())
            + (
                f". With noisy shoppers the corrected lift keeps {self.noisy_kept:.0%} of its size"
                if self.noisy
                else ". No noisy-shopper run (--noise 0)"
            )
            + f" (machine: {self.machine}).",
        ]
        return "\n".join(lines)


def run_personalization_benchmark(
    setup: Setup,
    workdir: str | Path,
    seeds: Sequence[int] = (201, 202, 203),
    noise: float = 0.2,
    preference_strength: float = 1.0,
    n_users: int = 1500,
    log: Callable[[str], None] = print,
    examine_eta: float = 1.0,
    click_evidence: bool = True,
) -> PersonalizationReport:
    """Runs every seed clean and with ``noise`` noisy users; writes JSON, Markdown and PNG.

    The default seeds were never used while developing the code. ``click_evidence=False``
    trains and scores every model without the log's per-(query, product) click evidence.
    """
    from research.bench_speed import machine_description

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clean = []
    for s in seeds:
        result, models = run_seed(
            setup, s, workdir, preference_strength, 0.0, n_users, log, examine_eta, click_evidence
        )
        models["corrected"].save(workdir / f"personal-seed{s}")  # SearchPipeline(personal=...)
        clean.append(result)
    noisy = (
        [
            run_seed(
                setup,
                s,
                workdir,
                preference_strength,
                noise,
                n_users,
                log,
                examine_eta,
                click_evidence,
            )[0]
            for s in seeds
        ]
        if noise > 0
        else []
    )
    mean = {r: float(np.mean([x.lift[r] for x in clean])) for r in RANKERS}
    mean_noisy = {r: float(np.mean([x.lift[r] for x in noisy])) for r in RANKERS} if noisy else {}
    report = PersonalizationReport(
        seeds=clean,
        noisy=noisy,
        mean_lift=mean,
        mean_lift_noisy=mean_noisy,
        noisy_kept=(
            mean_noisy["corrected"] / mean["corrected"]
            if noisy and mean["corrected"]
            else float("nan")
        ),
        seconds=time.perf_counter() - start,
        machine=machine_description(),
    )
    (workdir / "personalization.json").write_text(
        json.dumps(report.as_dict(), indent=1, default=str)
    )
    (workdir / "personalization.md").write_text(report.markdown() + "\n")
    _plot_examination(clean, workdir / "examination.png")
    return report


def _plot_examination(results: Sequence[SeedResult], path: Path) -> None:
    if not results:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ranks = np.arange(1, len(results[0].propensity_true) + 1)
    ax.plot(ranks, results[0].propensity_true, "k--", label="true (simulator)")
    for r in results:
        ax.plot(ranks, r.propensity_estimated, "o-", alpha=0.7, label=f"estimated, seed {r.seed}")
    ax.set_xlabel("rank")
    ax.set_ylabel("P(examined), rank 1 = 1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
