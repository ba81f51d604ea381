"""Personalization benchmark on simulated shoppers (no public behaviour log exists here).

For each simulator seed: simulate shoppers over the real catalog and graded queries, replay
their events in time order into a profile store (so every feature is point-in-time), train the
fused reranker on the training period's clicks and purchases, and score the held-out period's
searches against each simulated shopper's true utility (evaluation only; never a feature or a
label). The relevance-only pipeline (hybrid retrieval + cross-encoder) is the baseline.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from behaviour.events import read_events
from behaviour.features import Candidate, compute_features
from behaviour.privacy import Pseudonymizer
from behaviour.profiles import ProfileStore
from behaviour.simulate import SimConfig, build_world, simulate, write_simulation
from evaluation.data import judgments_from, load_benchmark
from evaluation.labels import Judgments
from evaluation.stats import paired_test
from rerank.personal import Group, PersonalRanker, PersonalTrainConfig, train_personal
from rerank.personalized import taste_vector
from retrieval.retriever import Retriever

LABEL_WEIGHT = {"click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}
DEPTH = 50
#: Warm held-out searches re-run with the shopper's taste vector to measure personalized retrieval.
RETRIEVAL_PROBE = 300
HOUR = 3600.0


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
        got = retriever.collection.retrieve(chunk, with_vectors=True)
        for j, pid in enumerate(chunk):
            out[i + j] = got[pid].vector
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
    from rerank.reranker import Reranker, blend, hit_text

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
                    rel = blend(
                        logits[pos : pos + len(hits)],
                        np.array([h.score for h in hits]),
                        reranker.retrieval_weight,
                    )
                    for r, (h, score) in enumerate(zip(hits, rel, strict=True), 1):
                        rows.append((q, h.product_id, float(h.score), r, float(score)))
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


@dataclass(frozen=True)
class SeedResult:
    """One simulator seed's results."""

    seed: int
    noise_share: float
    preference_strength: float
    train_searches: int
    heldout_searches: int
    heldout_warm: int
    heldout_cold: int
    ndcg_relevance: float
    ndcg_personal: float
    ndcg_relevance_cold: float
    ndcg_personal_cold: float
    lift: float
    p_value: float
    personal_retrieval_recall_gain: float | None
    per_search: dict[str, tuple[float, float]] = field(repr=False)
    hd_relevance: tuple[float, float] = (0.0, 0.0)
    latency_p99_ms: float = 0.0
    latency_p50_ms: float = 0.0


def _ndcg10(scores: np.ndarray, gains: np.ndarray) -> float:
    order = np.lexsort((np.arange(len(scores)), -scores))[:10]
    dcg = sum(gains[i] / math.log2(r + 2) for r, i in enumerate(order))
    ideal = np.sort(gains)[::-1][:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0


def run_seed(
    setup: Setup,
    seed: int,
    workdir: Path,
    preference_strength: float = 1.0,
    noise_share: float = 0.0,
    n_users: int = 1500,
    log: Callable[[str], None] = print,
) -> tuple[SeedResult, PersonalRanker]:
    """Simulate, replay, train, evaluate for one seed."""
    config = SimConfig(
        n_users=n_users, preference_strength=preference_strength, noise_share=noise_share, seed=seed
    )
    world = build_world(setup.product_ids, setup.titles, setup.world_vectors, config)
    sim = simulate(world, setup.judgments, setup.candidates, config, query_pool=setup.pool)
    sim_dir = workdir / f"sim-seed{seed}-noise{noise_share:g}"
    write_simulation(sim, sim_dir)
    events = [
        e
        for batch in read_events(sim_dir / "events.parquet", known_products=set(setup.product_ids))
        for e in batch.events
    ]
    events.sort(key=lambda e: e.timestamp)  # the log is per user; replay it in time order
    log(
        f"seed {seed}: {len(events)} events, split at day {(sim.split_ts - events[0].timestamp) / 86400:.0f}"
    )
    store_path = workdir / f"profiles-seed{seed}-noise{noise_share:g}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(store_path) + suffix).unlink(missing_ok=True)
    pz = Pseudonymizer(b"shopsearch-benchmark-key-" + str(seed).encode())
    store = ProfileStore(store_path)
    used = {p for q in setup.pool for p in setup.candidates[q]}
    store.upsert_items(
        {"product_id": p, "vector": setup.feature_vectors[p]}
        for p in setup.product_ids
        if p in used
    )
    # product events -> the search they answer (same session, same query, after it)
    by_search: dict[tuple[str, str, str], dict[str, float]] = {}
    viewed: dict[tuple[str, str, str], set[str]] = {}
    query_of = {}
    qid_by_text = {_query_text(setup.judgments, q): q for q in setup.pool}
    last_search: dict[tuple[str, str], tuple[str, str, str]] = {}
    for e in events:
        if e.event == "search":
            key = (e.user_id, e.session_id, f"{e.timestamp:.3f}")
            last_search[(e.user_id, e.session_id)] = key
            query_of[key] = qid_by_text[e.query]
            continue
        key = last_search.get((e.user_id, e.session_id))
        if key is None:
            continue
        if e.event == "view":
            viewed.setdefault(key, set()).add(e.product_id)
        elif e.event in LABEL_WEIGHT:
            got = by_search.setdefault(key, {})
            got[e.product_id] = max(got.get(e.product_id, 0.0), LABEL_WEIGHT[e.event])
    utility = _utilities(sim.utility)
    # Features see what the index payload holds (Home Depot has no brand column), exactly as the
    # query-time pipeline does; the simulator's brand proxy stays inside the simulator.
    brands: dict[str, str | None] = {}
    train_groups: list[Group] = []
    evals: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # key -> cross, feats, gains
    taste_probe: list[tuple[str, str, np.ndarray]] = []
    cold_keys: set[str] = set()
    lat: list[float] = []
    pending: list = []
    next_flush = events[0].timestamp + HOUR
    searches = [e for e in events if e.event == "search"]
    ei = 0
    for s in searches:
        while (
            ei < len(events)
            and events[ei].timestamp < s.timestamp
            and events[ei].timestamp < next_flush
        ):
            pending.append(events[ei])
            ei += 1
        if s.timestamp >= next_flush:
            while ei < len(events) and events[ei].timestamp < s.timestamp:
                pending.append(events[ei])
                ei += 1
            store.ingest(
                pending, pz
            )  # hourly: profiles and popularity as a live shop would have them
            pending = []
            next_flush = s.timestamp + HOUR
        key = (s.user_id, s.session_id, f"{s.timestamp:.3f}")
        qid = query_of[key]
        heldout = s.timestamp >= sim.split_ts
        t0 = time.perf_counter()
        profile = store.profile(pz.pseudonym(s.user_id), before=s.timestamp)
        cold_now = profile.n_events == 0
        skey = "|".join(key)
        if heldout or cold_now:  # scored against true utility over the whole candidate list
            cands = setup.candidates[qid]
            u = utility.get((s.user_id, s.session_id, round(s.timestamp, 3), qid))
            if u is not None:
                feats = _features(store, profile, cands, qid, setup, brands)
                lat.append(time.perf_counter() - t0)
                cross = np.array([setup.cross[qid][p] for p in cands], dtype=np.float32)
                gains = np.array([u.get(p, 0.0) for p in cands], dtype=np.float32)
                evals[skey] = (cross, feats, gains)
                if cold_now:
                    cold_keys.add(skey)
                elif heldout and len(taste_probe) < RETRIEVAL_PROBE:
                    vec = taste_vector(store, profile)
                    if vec is not None:
                        taste_probe.append((s.user_id, qid, vec))
        if not heldout:  # training examples: the shown results the shopper examined
            cands = [p for p in setup.candidates[qid][:10] if p in viewed.get(key, set())]
            if cands:
                feats = _features(store, profile, cands, qid, setup, brands)
                cross = np.array([setup.cross[qid][p] for p in cands], dtype=np.float32)
                got = by_search.get(key, {})
                label = np.array([1.0 if p in got else 0.0 for p in cands], dtype=np.float32)
                weight = np.array([got.get(p, 1.0) for p in cands], dtype=np.float32)
                train_groups.append(Group(skey, cross, feats, label, weight))
    store.close()
    model, report = train_personal(train_groups, PersonalTrainConfig(seed=seed), log=log)
    per_search: dict[str, tuple[float, float]] = {}
    for skey, (cross, feats, gains) in evals.items():
        scored = model.score(cross, feats)
        per_search[skey] = (_ndcg10(cross, gains), _ndcg10(scored.total, gains))
    # Home Depot relevance (human grades) for an anonymous shopper: must not change
    hd_rel, hd_per = [], []
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
        feats = compute_features(
            None,
            [
                Candidate(
                    p,
                    None,
                    None,
                    None,
                    None,
                    setup.retrieval_score[qid][p],
                    setup.retrieval_rank[qid][p],
                    setup.cross[qid][p],
                )
                for p in cands
            ],
            {},
            None,
        )
        cross = np.array([setup.cross[qid][p] for p in cands], dtype=np.float32)
        hd_rel.append(_ndcg10(cross, gains))
        hd_per.append(_ndcg10(model.score(cross, feats).total, gains))
    heldout_keys = {k for k in per_search if float(k.rsplit("|", 1)[1]) >= sim.split_ts}
    warm = {k: v for k, v in per_search.items() if k not in cold_keys and k in heldout_keys}
    cold = {k: v for k, v in per_search.items() if k in cold_keys}
    rel = {k: v[0] for k, v in warm.items()}
    per = {k: v[1] for k, v in warm.items()}
    test = paired_test(rel, per, method="randomization")
    arr = np.asarray(lat) * 1000
    result = SeedResult(
        seed=seed,
        noise_share=noise_share,
        preference_strength=preference_strength,
        train_searches=len(train_groups),
        heldout_searches=len(heldout_keys),
        heldout_warm=len(warm),
        heldout_cold=len(cold),
        ndcg_relevance=test.mean_a,
        ndcg_personal=test.mean_b,
        ndcg_relevance_cold=float(np.mean([v[0] for v in cold.values()])) if cold else float("nan"),
        ndcg_personal_cold=float(np.mean([v[1] for v in cold.values()])) if cold else float("nan"),
        lift=test.relative_delta,
        p_value=test.p_value,
        personal_retrieval_recall_gain=retrieval_probe(
            setup, world, preference_strength, taste_probe, log
        ),
        per_search=warm,
        hd_relevance=(float(np.mean(hd_rel)), float(np.mean(hd_per))),
        latency_p99_ms=float(np.percentile(arr, 99)),
        latency_p50_ms=float(np.percentile(arr, 50)),
    )
    log(
        f"seed {seed} noise {noise_share:g}: held-out NDCG@10 vs true utility {test.mean_a:.4f} -> {test.mean_b:.4f} "
        f"({test.relative_delta:+.1%}, p={test.p_value:.4f}) on {len(warm)} warm searches; cold {len(cold)}"
    )
    return result, model


def _features(store, profile, cands, qid, setup: Setup, brands) -> np.ndarray:
    """The features of one search's candidates, as the query-time pipeline computes them."""
    pop = store.popularity(cands)
    recent = store.vectors(list(profile.recent_items)) if profile.recent_items else None
    return compute_features(
        profile,
        [
            Candidate(
                p,
                brands.get(p),
                None,
                None,
                setup.feature_vectors[p],
                setup.retrieval_score[qid][p],
                setup.retrieval_rank[qid][p],
                setup.cross[qid][p],
            )
            for p in cands
        ],
        pop,
        recent,
    )


def world_utility(
    world, judgments: Judgments, strength: float, user_id: str, qid: str, pids: Sequence[str]
) -> np.ndarray:
    """True utility of any products for a simulated shopper (the simulator's formula)."""
    u = world.user_ids.index(user_id)
    w = world.user_pref[u] / world.user_pref[u].max()
    brands = set(world.user_brands[u])
    grades = {}
    for split in ("train", "validation", "test"):
        grades.update(judgments.qrels[split].get(qid, {}))
    out = []
    for p in pids:
        rel = (grades[p] - 1.0) / 2.0 if p in grades else 0.0
        pref = 0.7 * w[world.item_cluster[p]] + 0.3 * (world.item_brand.get(p) in brands)
        out.append(rel + strength * pref)
    return np.asarray(out, dtype=np.float32)


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
    mean_lift: float
    pooled_p_value: float
    mean_lift_noisy: float
    cold_loss: float
    hd_loss: float
    latency_p99_ms: float
    seconds: float
    machine: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for group in ("seeds", "noisy"):
            for s in d[group]:
                s.pop("per_search", None)
        return d

    def markdown(self) -> str:
        lines = [
            "| seed | noise | train searches | held-out warm searches | cold-start searches | NDCG@10 relevance-only | NDCG@10 personalized | lift | p | cold-start: relevance-only -> personalized | Home Depot grades (anonymous): relevance-only -> personalized | personalized retrieval: best reachable top-10 utility |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in [*self.seeds, *self.noisy]:
            lines.append(
                f"| {s.seed} | {s.noise_share:.0%} | {s.train_searches} | {s.heldout_warm} | {s.heldout_cold} | "
                f"{s.ndcg_relevance:.4f} | {s.ndcg_personal:.4f} | {s.lift:+.1%} | {s.p_value:.4f} | "
                f"{s.ndcg_relevance_cold:.4f} -> {s.ndcg_personal_cold:.4f} | "
                f"{s.hd_relevance[0]:.4f} -> {s.hd_relevance[1]:.4f} | "
                + (
                    f"{s.personal_retrieval_recall_gain:+.1%} |"
                    if s.personal_retrieval_recall_gain is not None
                    else "- |"
                )
            )
        lines += [
            "",
            f"Mean lift over seeds (no noise): {self.mean_lift:+.1%} (pooled paired randomization p = {self.pooled_p_value:.4g}); "
            f"with 20% noisy users: {self.mean_lift_noisy:+.1%} ({self.mean_lift_noisy / self.mean_lift:.0%} of the lift kept). "
            f"Cold-start change: {self.cold_loss:+.2%}; Home Depot relevance (anonymous shopper) change: {self.hd_loss:+.2%}. "
            f"Profile lookup + features p99: {self.latency_p99_ms:.2f} ms per query (machine: {self.machine}).",
        ]
        return "\n".join(lines)


def run_personalization_benchmark(
    setup: Setup,
    workdir: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    noise: float = 0.2,
    preference_strength: float = 1.0,
    n_users: int = 1500,
    log: Callable[[str], None] = print,
) -> PersonalizationReport:
    """Runs every seed clean and with ``noise`` noisy users; writes JSON and Markdown."""
    from shopsearch.speed import machine_description

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clean = []
    for s in seeds:
        result, model = run_seed(setup, s, workdir, preference_strength, 0.0, n_users, log)
        model.save(
            workdir / f"personal-seed{s}"
        )  # usable with rerank.personalized.PersonalizedPipeline
        clean.append(result)
    noisy = (
        [run_seed(setup, s, workdir, preference_strength, noise, n_users, log)[0] for s in seeds]
        if noise > 0
        else []
    )
    pooled_a = {f"{r.seed}|{k}": v[0] for r in clean for k, v in r.per_search.items()}
    pooled_b = {f"{r.seed}|{k}": v[1] for r in clean for k, v in r.per_search.items()}
    pooled = paired_test(pooled_a, pooled_b, method="randomization")
    cold_rel = [r.ndcg_relevance_cold for r in clean]
    cold_per = [r.ndcg_personal_cold for r in clean]
    report = PersonalizationReport(
        seeds=clean,
        noisy=noisy,
        mean_lift=float(np.mean([r.lift for r in clean])),
        pooled_p_value=pooled.p_value,
        mean_lift_noisy=float(np.mean([r.lift for r in noisy])) if noisy else float("nan"),
        cold_loss=float(np.nanmean(cold_per) / np.nanmean(cold_rel) - 1.0),
        hd_loss=float(
            np.mean([r.hd_relevance[1] for r in clean])
            / np.mean([r.hd_relevance[0] for r in clean])
            - 1.0
        ),
        latency_p99_ms=float(max(r.latency_p99_ms for r in [*clean, *noisy])),
        seconds=time.perf_counter() - start,
        machine=machine_description(),
    )
    (workdir / "personalization.json").write_text(
        json.dumps(report.as_dict(), indent=1, default=str)
    )
    (workdir / "personalization.md").write_text(report.markdown() + "\n")
    return report
