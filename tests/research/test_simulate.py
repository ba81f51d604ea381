"""The shopper simulator (research.simulate): determinism, click model, valid event logs,
ground truth, time split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.errors import ShopsearchError
from evaluation.labels import Judgments
from personalization.events import read_events
from research.simulate import (
    EVENTS_FILE,
    ITEMS_FILE,
    MANIFEST_FILE,
    MODEL_DESCRIPTION,
    USERS_FILE,
    UTILITY_DEPTH,
    UTILITY_FILE,
    SimConfig,
    SimOutput,
    SimWorld,
    brand_proxy,
    build_world,
    simulate,
    write_simulation,
)

N_TRUE_CLUSTERS = 4
PER_CLUSTER = 50
BRANDS = [
    ["Acme", "Bolt", "Crane", "Dyna", "Echo"],
    ["Fjord", "Gale", "Helix", "Iris", "Jade"],
    ["Kilo", "Lumen", "Mesa", "Nova", "Onyx"],
    ["Pike", "Quill", "Rune", "Sol", "Tern"],
]
QUERIES_PER_CLUSTER = 10
JUDGED_PER_QUERY = 6


def _catalog() -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """200 products in 4 obvious clusters (orthogonal directions plus a little noise)."""
    rng = np.random.default_rng(123)
    ids, titles, truth = [], [], []
    vectors = np.zeros((N_TRUE_CLUSTERS * PER_CLUSTER, 16))
    for c in range(N_TRUE_CLUSTERS):
        for i in range(PER_CLUSTER):
            row = c * PER_CLUSTER + i
            ids.append(f"p{row:03d}")
            titles.append(f"{BRANDS[c][i % 5]} gadget {c}-{i} in Chrome")
            truth.append(c)
            vectors[row, c] = 1.0
    vectors += rng.normal(0.0, 0.05, size=vectors.shape)
    return ids, titles, vectors, np.array(truth)


def _judgments_and_results(ids: list[str]) -> tuple[Judgments, dict[str, list[str]], list[str]]:
    """Queries judged within one cluster; results mix that cluster with the others.

    The judged products are spread over the top 15 results (about 40% at rank 1).
    """
    rng = np.random.default_rng(7)
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    results: dict[str, list[str]] = {}
    for c in range(N_TRUE_CLUSTERS):
        own = ids[c * PER_CLUSTER : (c + 1) * PER_CLUSTER]
        others = [p for p in ids if p not in set(own)]
        for j in range(QUERIES_PER_CLUSTER):
            qid = f"q{c}{j:02d}"
            queries[qid] = f"gadget {c} kind {j}"
            judged = list(rng.choice(own, size=JUDGED_PER_QUERY, replace=False))
            qrels[qid] = {
                p: float(g)
                for p, g in zip(
                    judged, rng.choice([1.0, 1.67, 2.33, 3.0], size=len(judged)), strict=True
                )
            }
            rest = [p for p in own if p not in qrels[qid]]
            mixed = list(rng.permutation(rest[:24] + list(rng.choice(others, 30, replace=False))))
            top = list(rng.permutation(judged + mixed[:9]))  # judged ones spread over the top 15
            results[qid] = top + mixed[9:]
    texts = dict.fromkeys(ids, "text")
    judgments = Judgments(
        texts=texts,
        queries={"train": queries, "validation": {}, "test": {}},
        qrels={"train": qrels, "validation": {}, "test": {}},
        threshold=2.5,
        gain_offset=1.0,
    )
    return judgments, results, sorted(queries)


CATALOG = _catalog()
JUDGMENTS, RESULTS, POOL = _judgments_and_results(CATALOG[0])
BASE = SimConfig(n_users=300, sessions_per_user=6.0, n_clusters=N_TRUE_CLUSTERS, seed=3)


def _run(config: SimConfig = BASE) -> tuple[SimWorld, SimOutput]:
    ids, titles, vectors, _ = CATALOG
    world = build_world(ids, titles, vectors, config)
    return world, simulate(world, JUDGMENTS, RESULTS, config, POOL)


@pytest.fixture(scope="module")
def run() -> tuple[SimWorld, SimOutput]:
    return _run()


@pytest.fixture(scope="module")
def written(run: tuple[SimWorld, SimOutput], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_simulation(run[1], tmp_path_factory.mktemp("sim") / "out")


def _searches(events: pl.DataFrame) -> pl.DataFrame:
    return events.filter(pl.col("event") == "search")


# --- world -------------------------------------------------------------------------------


def test_brand_proxy_is_the_first_word() -> None:
    assert brand_proxy("Simpson Strong-Tie 12-Gauge Angle") == "Simpson"
    assert brand_proxy("  BEHR Premium Textured DeckOver") == "BEHR"
    assert brand_proxy('"Acme," widget') == "Acme"
    assert brand_proxy("") == ""


def test_world_recovers_the_clusters_and_brands(run: tuple[SimWorld, SimOutput]) -> None:
    world, _ = run
    _, _, _, truth = CATALOG
    assert world.cluster_source == "kmeans"
    assert world.n_clusters == N_TRUE_CLUSTERS
    # Each true cluster maps to one k-means cluster, and different ones to different ones.
    mapping = {c: set(world.item_cluster_idx[truth == c].tolist()) for c in range(N_TRUE_CLUSTERS)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == N_TRUE_CLUSTERS
    assert world.item_brand["p000"] == "Acme"
    assert np.allclose(world.user_pref.sum(axis=1), 1.0)
    assert world.user_pref.shape == (BASE.n_users, N_TRUE_CLUSTERS)
    # Users' brands are 2-3 brands, mostly from their top cluster.
    sizes = {len(b) for b in world.user_brands}
    assert sizes <= {2, 3}
    top = world.user_pref.argmax(axis=1)
    brand_cluster = {b: c for c in range(N_TRUE_CLUSTERS) for b in BRANDS[c]}
    kmeans_of_true = {c: next(iter(v)) for c, v in mapping.items()}
    in_top = [
        kmeans_of_true[brand_cluster[b]] == top[u]
        for u, brands in enumerate(world.user_brands)
        for b in brands
    ]
    assert np.mean(in_top) > 0.6
    assert world.user_ids[0] == "sim-u00001"


def test_categories_replace_kmeans_when_given() -> None:
    ids, titles, vectors, truth = CATALOG
    cats = [f"Dept {c}" for c in truth]
    world = build_world(ids, titles, vectors, BASE, categories=cats, brands=[None] * len(ids))
    assert world.cluster_source == "category"
    assert world.cluster_names == ("Dept 0", "Dept 1", "Dept 2", "Dept 3")
    assert world.item_cluster["p000"] == 0
    assert world.item_brand["p000"] == "Acme"  # missing brands fall back to the proxy


def test_bad_inputs_are_reported() -> None:
    ids, titles, vectors, _ = CATALOG
    with pytest.raises(ShopsearchError, match="list_size"):
        SimConfig(list_size=UTILITY_DEPTH + 1)
    with pytest.raises(ShopsearchError, match="train_days"):
        SimConfig(days=10, train_days=20)
    with pytest.raises(ShopsearchError, match="one title and one vector"):
        build_world(ids, titles[:-1], vectors, BASE)
    with pytest.raises(ShopsearchError, match="duplicate"):
        build_world([*ids[:-1], ids[0]], titles, vectors, BASE)
    world = build_world(ids, titles, vectors, BASE)
    with pytest.raises(ShopsearchError, match="n_users"):
        simulate(world, JUDGMENTS, RESULTS, SimConfig(n_users=5, n_clusters=4), POOL)
    with pytest.raises(ShopsearchError, match="no text"):
        simulate(world, JUDGMENTS, {**RESULTS, "nope": ids[:50]}, BASE, [*POOL, "nope"])
    bad = {**RESULTS, POOL[0]: ["ghost", *RESULTS[POOL[0]]]}
    with pytest.raises(ShopsearchError, match="not in the world"):
        simulate(world, JUDGMENTS, bad, BASE, POOL)


# --- determinism -------------------------------------------------------------------------


def test_same_seed_same_simulation(run: tuple[SimWorld, SimOutput]) -> None:
    _, first = run
    _, again = _run()
    assert first.events.equals(again.events)
    assert first.utility.equals(again.utility)
    assert first.users.equals(again.users)


def test_different_seeds_differ(run: tuple[SimWorld, SimOutput]) -> None:
    _, first = run
    _, other = _run(SimConfig(**{**BASE.__dict__, "seed": 4}))
    assert not first.events.equals(other.events)
    assert not first.users.equals(other.users)


# --- click model -------------------------------------------------------------------------


def test_clicks_follow_utility_at_equal_rank(run: tuple[SimWorld, SimOutput]) -> None:
    _, out = run
    rank1 = out.impressions.filter((pl.col("position") == 1) & ~pl.col("noisy"))
    median = rank1["utility"].median()
    high = rank1.filter(pl.col("utility") > median)["clicked"].mean()
    low = rank1.filter(pl.col("utility") <= median)["clicked"].mean()
    assert high > low + 0.15
    # Personalisation matters: at equal relevance, a preferred product is clicked more.
    examined = out.impressions.filter(pl.col("examined") & ~pl.col("noisy"))
    for rel_is_zero in (True, False):
        part = examined.filter((pl.col("rel") == 0) == rel_is_zero)
        liked = part.filter(pl.col("pref") >= 0.5)["clicked"].mean()
        disliked = part.filter(pl.col("pref") < 0.2)["clicked"].mean()
        assert liked > disliked + 0.1
    # ...and relevance matters at equal preference.
    low_pref = examined.filter(pl.col("pref") < 0.2)
    assert (
        low_pref.filter(pl.col("rel") >= 0.5)["clicked"].mean()
        > low_pref.filter(pl.col("rel") == 0)["clicked"].mean() + 0.1
    )


def test_position_bias(run: tuple[SimWorld, SimOutput]) -> None:
    _, out = run
    clicks = out.events.filter(pl.col("event") == "click")
    n_searches = _searches(out.events).height
    ctr = [clicks.filter(pl.col("position") == r).height / n_searches for r in (1, 5)]
    assert ctr[0] > 2 * ctr[1]
    # examination is ground truth only: the log a shop keeps never shows it
    assert out.events.filter(pl.col("event") == "view").height == 0
    shown = out.impressions
    assert shown.filter((pl.col("position") == 1) & ~pl.col("examined")).height == 0
    at5 = shown.filter(pl.col("position") == 5)
    assert 0.12 < at5["examined"].mean() < 0.28  # 1/5 with eta = 1
    assert out.stats["ctr_by_rank"][0] > out.stats["ctr_by_rank"][4]


def test_noisy_users_click_at_random() -> None:
    config = SimConfig(**{**BASE.__dict__, "noise_share": 1.0, "n_users": 200})
    world, out = _run(config)
    assert world.user_noisy.all()
    examined = out.impressions.filter(pl.col("examined"))
    median = examined["utility"].median()
    high = examined.filter(pl.col("utility") > median)["clicked"].mean()
    low = examined.filter(pl.col("utility") <= median)["clicked"].mean()
    assert abs(high - low) < 0.04
    assert abs(examined["clicked"].mean() - config.noise_click) < 0.03
    corr = np.corrcoef(examined["utility"].to_numpy(), examined["clicked"].cast(float).to_numpy())
    assert abs(corr[0, 1]) < 0.05


def test_users_search_what_they_like(run: tuple[SimWorld, SimOutput]) -> None:
    world, out = run
    query_cluster = {q: int(q[1]) for q in POOL}  # judged products sit in cluster int(q[1])
    _, _, _, truth = CATALOG
    kmeans_of_true = {c: int(world.item_cluster_idx[truth == c][0]) for c in range(4)}
    top = dict(zip(world.user_ids, world.user_pref.argmax(axis=1).tolist(), strict=True))
    searches = _searches(out.events)
    hits = [
        kmeans_of_true[query_cluster[q]] == top[u]
        for u, q in zip(searches["user_id"], searches["query_id"], strict=True)
    ]
    assert np.mean(hits) > 0.5  # 0.25 if users searched at random


# --- the files ---------------------------------------------------------------------------


def test_written_events_validate(run: tuple[SimWorld, SimOutput], written: Path) -> None:
    world, out = run
    events, rejects = [], []
    for batch in read_events(written / EVENTS_FILE, known_products=set(world.product_ids)):
        events.extend(batch.events)
        rejects.extend(batch.rejects)
    assert rejects == []
    assert len(events) == out.events.height
    kinds = {e.event for e in events}
    assert kinds == {"search", "click", "add_to_cart", "purchase"}
    assert all(e.query for e in events)
    assert all(e.position is None for e in events if e.event == "search")
    assert all(e.position and e.product_id for e in events if e.event != "search")
    # impressions: each search names the page it showed; each interaction its search
    shown = {e.search_id: e.results for e in events if e.event == "search"}
    assert all(shown.values()) and len(shown) == out.stats["searches"]
    for e in events:
        if e.event != "search":
            assert shown[e.search_id][e.position - 1] == e.product_id
    truth = pl.read_parquet(written / "shown.parquet")
    assert {"search_id", "position", "examined", "clicked"} <= set(truth.columns)
    assert all(e.user_id.startswith("sim-u") for e in events)


def test_event_order_within_searches(run: tuple[SimWorld, SimOutput]) -> None:
    _, out = run
    ev = out.events
    assert ev.equals(ev.sort("user_id", "timestamp", maintain_order=True))
    before = {"click": "search", "add_to_cart": "click", "purchase": "add_to_cart"}
    n_carts = 0
    for (_,), session in ev.group_by("session_id"):
        rows = session.sort("timestamp").iter_rows(named=True)
        seen: set[tuple[str, str | None, str | None]] = set()
        for i, row in enumerate(rows):
            if i == 0:
                assert row["event"] == "search"  # each session opens with a search
            kind = row["event"]
            if kind in before:
                # A click follows its search, a cart its click, a purchase its cart.
                prior = row["search_id"] if kind == "click" else row["product_id"]
                assert (before[kind], row["search_id"], prior) in seen
            n_carts += kind == "add_to_cart"
            seen.add(
                (
                    kind,
                    row["search_id"],
                    row["search_id"] if kind == "search" else row["product_id"],
                )
            )
    assert n_carts > 0
    # Sessions are numbered in time order within each user.
    starts = _searches(ev).group_by("user_id", "session_id").agg(pl.col("timestamp").min())
    for _, grp in starts.sort("timestamp").group_by("user_id", maintain_order=True):
        assert grp["session_id"].to_list() == sorted(grp["session_id"].to_list())


def test_utility_covers_every_search_and_stays_out_of_events(
    run: tuple[SimWorld, SimOutput], written: Path
) -> None:
    _, out = run
    events = pl.read_parquet(written / EVENTS_FILE)
    utility = pl.read_parquet(written / UTILITY_FILE)
    assert not {"utility", "rel", "pref", "period"} & set(events.columns)
    assert {
        "user_id",
        "session_id",
        "search_ts",
        "query_id",
        "product_id",
        "utility",
        "period",
    } <= set(utility.columns)
    keys = ["user_id", "session_id", "search_ts", "query_id"]
    searches = _searches(events).select(
        "user_id", "session_id", pl.col("timestamp").alias("search_ts"), "query_id"
    )
    per_search = utility.group_by(keys).len()
    assert per_search.height == searches.height
    assert searches.join(per_search, on=keys, how="anti").height == 0
    assert (per_search["len"] == UTILITY_DEPTH).all()
    # Utility is rel + beta * pref, rel from the grade, unjudged = 0.
    assert np.allclose(
        utility["utility"], utility["rel"] + BASE.preference_strength * utility["pref"]
    )
    qrels = JUDGMENTS.qrels["train"]
    sample = utility.head(500).iter_rows(named=True)
    for row in sample:
        grade = qrels[row["query_id"]].get(row["product_id"])
        expected = 0.0 if grade is None else (grade - 1.0) / 2.0
        assert row["rel"] == pytest.approx(expected)
    # Product events only name products shown for that search (top list_size).
    shown = utility.filter(pl.col("rank") <= BASE.list_size).select("session_id", "product_id")
    product_events = events.filter(pl.col("event") != "search").select("session_id", "product_id")
    assert product_events.join(shown, on=["session_id", "product_id"], how="anti").height == 0


def test_train_and_heldout_split_by_time(run: tuple[SimWorld, SimOutput], written: Path) -> None:
    _, out = run
    manifest = json.loads((written / MANIFEST_FILE).read_text())
    split = manifest["split_ts"]
    assert (
        split == out.split_ts == manifest["config"]["train_days"] * 86400 + manifest["epoch_base"]
    )
    utility = pl.read_parquet(written / UTILITY_FILE)
    assert set(utility["period"].unique()) == {"train", "heldout"}
    assert (utility.filter(pl.col("period") == "train")["search_ts"] < split).all()
    assert (utility.filter(pl.col("period") == "heldout")["search_ts"] >= split).all()
    # No session straddles the split: every event of a session lies on its side.
    periods = utility.select("session_id", "period").unique()
    events = pl.read_parquet(written / EVENTS_FILE).join(periods, on="session_id")
    assert (events.filter(pl.col("period") == "train")["timestamp"] < split).all()
    assert (events.filter(pl.col("period") == "heldout")["timestamp"] >= split).all()
    share = (utility["period"] == "heldout").mean()
    assert 0.15 < share < 0.35  # 15 of 60 days


def test_manifest_and_side_files(run: tuple[SimWorld, SimOutput], written: Path) -> None:
    world, out = run
    manifest = json.loads((written / MANIFEST_FILE).read_text())
    assert manifest["model"] == MODEL_DESCRIPTION
    assert manifest["config"]["seed"] == BASE.seed
    assert manifest["stats"]["searches"] == _searches(out.events).height
    assert manifest["split_iso"] == "2024-02-15T00:00:00Z"
    users = pl.read_parquet(written / USERS_FILE)
    assert users.height == BASE.n_users
    assert users["user_id"].to_list() == list(world.user_ids)
    items = pl.read_parquet(written / ITEMS_FILE)
    assert items.height == len(world.product_ids)
    assert set(items.columns) == {"product_id", "brand", "cluster"}
    assert "price" in MODEL_DESCRIPTION.lower() and "skipped" in MODEL_DESCRIPTION


def test_rank1_ctr_is_plausible(run: tuple[SimWorld, SimOutput]) -> None:
    _, out = run
    ctr1 = out.stats["ctr_by_rank"][0]
    assert 0.2 < ctr1 < 0.6
