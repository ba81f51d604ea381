"""Fusion benchmark: which hybrid fusion holds across data (``shopsearch bench-fusion``).

The built-in fusion of an index without recorded weights must not be one benchmark's setting.
This run fetches each query's BM25 and dense lists once (top 100 each, queries corrected as a
search does; cached under the workdir), then fuses them offline with every candidate rule and
scores each rule on several data sets built here:

* the Home Depot test split, whole;
* Home Depot "sub-shops": the test queries grouped by the department of their relevant
  products (a keyword lexicon over the products' title nouns, read from the end of the title:
  :data:`DEPARTMENTS`), and by query type (1-2 words, 4+ words, with and without a digit);
* the synthetic sample catalog (``catalog.sample``) with judgments from its category tree:
  queries are leaf and subcategory names and attribute + leaf phrases, relevant products are
  those of the leaf (with the attribute) or under the subcategory. No retriever made them.

Rules (:data:`RULES`): weighted reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR
2009) at dense shares 0.1, 0.25, 0.5 (equal weights), 0.75, 0.9 and at the previous built-in
default (dense 0.1 against BM25 1.0); dense only; BM25 only; and rules from the lists'
structure: CombSUM and CombMNZ over min-max normalized scores (Fox and Shaw, TREC-2 1994;
Lee, SIGIR 1997; Weaviate's ``relativeScoreFusion``), distribution-based score fusion (scores
as ``(s - (mean - 3 sd)) / (6 sd)``, Qdrant's ``dbsf``) and RRF with per-query weights from each
list's score gap (:func:`gap_share`).

Each rule is reported per data set with NDCG@10 and Recall@100 against equal-weight RRF and
against BM25 (paired randomization tests, ``evaluation.stats``), and with its worst case: the
largest shortfall, relative to the best rule on the same data set, over all data sets and both
metrics. The best worst case is the recommended default, provided that on the Home Depot test
split it is not below BM25 nor equal-weight RRF with p < 0.05.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.data import load_benchmark
from evaluation.metrics import evaluate
from evaluation.stats import paired_test
from retrieval.store import RRF_K

METRICS = ("ndcg@10", "recall@100")
#: Depth of each source list (the store's hybrid prefetch depth).
DEPTH = 100
#: Dense shares ``w_dense / (w_dense + w_bm25)`` of the weighted-RRF candidates.
SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)
#: The built-in default before this benchmark: dense 0.1 against BM25 1.0 (share 0.0909).
PREVIOUS_DEFAULT = 0.1 / 1.1
EQUAL = "rrf 0.5 (equal)"
BM25 = "bm25 only"
DENSE = "dense only"
#: Fused scores are compared at this many decimals, ties by product id (as the store does).
_DECIMALS = 12
#: The gap of :func:`gap_share` is read between rank 1 and this rank.
GAP_AT = 10
REPORT_KEY = "fusion"

#: Title nouns -> department: a product's department is that of the last title word found
#: here (the head noun of a Home Depot title comes last: "Delta Vero 1-Handle Faucet").
DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "plumbing & bath": (
        "faucet", "faucets", "toilet", "toilets", "sink", "sinks", "shower", "showerhead",
        "valve", "valves", "pipe", "pipes", "drain", "tub", "bathtub", "heater", "pvc",
        "fitting", "fittings", "coupling", "elbow", "tee", "vanity", "plumbing", "bidet",
        "spout", "cartridge", "flapper", "trap", "hose",
    ),
    "electrical & lighting": (
        "light", "lights", "lighting", "lamp", "lamps", "bulb", "bulbs", "led", "fixture",
        "switch", "switches", "outlet", "outlets", "receptacle", "wire", "wiring", "cable",
        "breaker", "fan", "fans", "chandelier", "sconce", "pendant", "cord", "dimmer",
        "flashlight", "lantern", "timer", "battery", "batteries", "thermostat", "detector",
    ),
    "tools & hardware": (
        "drill", "saw", "tool", "tools", "wrench", "screwdriver", "hammer", "blade", "blades",
        "bit", "bits", "screw", "screws", "nail", "nails", "bolt", "bolts", "anchor", "anchors",
        "hinge", "hinges", "lock", "knob", "knobs", "bracket", "brackets", "hook", "hooks",
        "pliers", "sander", "grinder", "compressor", "nailer", "stapler", "level", "chisel",
        "clamp", "tape", "ladder", "chest", "deadbolt", "handle", "pull", "pulls", "latch",
    ),
    "paint & supplies": (
        "paint", "stain", "primer", "brush", "roller", "caulk", "sealant", "sealer",
        "spray", "finish", "coating", "adhesive", "glue", "epoxy", "putty", "patch",
    ),
    "outdoor & garden": (
        "grill", "grills", "mower", "garden", "patio", "plant", "plants", "lawn", "fence",
        "fencing", "planter", "mulch", "soil", "trimmer", "sprinkler", "shed", "deck",
        "blower", "chainsaw", "edger", "fertilizer", "seed", "umbrella", "pot", "pots",
        "gazebo", "pergola", "firepit", "repellent", "killer", "weed", "tiller", "paver",
        "pavers",
    ),
    "building & flooring": (
        "tile", "tiles", "floor", "flooring", "carpet", "lumber", "board", "boards",
        "plywood", "drywall", "concrete", "insulation", "siding", "roof", "roofing",
        "shingle", "shingles", "moulding", "molding", "door", "doors", "window", "windows",
        "vinyl", "laminate", "post", "stud", "joist", "mortar", "grout", "trim", "panel",
        "panels", "baseboard", "threshold", "underlayment", "railing", "baluster",
    ),
    "home & appliances": (
        "refrigerator", "washer", "dryer", "dishwasher", "range", "oven", "microwave",
        "cabinet", "cabinets", "shelf", "shelves", "shelving", "storage", "countertop",
        "rug", "rugs", "curtain", "curtains", "blind", "blinds", "shade", "shades", "mirror",
        "rack", "organizer", "bin", "bins", "cooktop", "hood", "freezer", "disposal",
        "humidifier", "dehumidifier", "conditioner", "mat", "mats", "basket", "towel",
    ),
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")
_DEPARTMENT_OF = {w: d for d, words in DEPARTMENTS.items() for w in words}

List = list[tuple[str, float]]  # (product_id, score), best first
Fused = dict[str, float]


# --- the rules -----------------------------------------------------------------------------


def rrf(lists: Sequence[List], weights: Sequence[float], depth: int = DEPTH) -> Fused:
    """Weighted reciprocal-rank fusion: product -> ``sum_s w_s / (60 + rank_s)`` (ranks from 1)."""
    out: Fused = {}
    for hits, w in zip(lists, weights, strict=True):
        for rank, (pid, _) in enumerate(hits[:depth], start=1):
            out[pid] = out.get(pid, 0.0) + w / (RRF_K + rank)
    return out


def _minmax(hits: List) -> dict[str, float]:
    if not hits:
        return {}
    scores = [s for _, s in hits]
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return {p: 1.0 for p, _ in hits}
    return {p: (s - lo) / (hi - lo) for p, s in hits}


def combsum(lists: Sequence[List], mnz: bool = False) -> Fused:
    """CombSUM (or CombMNZ: the sum times the number of lists holding the product) over each
    list's min-max normalized scores (Fox and Shaw 1994; Lee 1997)."""
    out: Fused = {}
    seen: Counter[str] = Counter()
    for hits in lists:
        for p, s in _minmax(hits).items():
            out[p] = out.get(p, 0.0) + s
            seen[p] += 1
    return {p: s * seen[p] for p, s in out.items()} if mnz else out


def dbsf(lists: Sequence[List]) -> Fused:
    """Distribution-based score fusion: each list's scores as ``(s - (mu - 3 sd)) / (6 sd)``,
    summed (Qdrant's ``dbsf``); a list of equal scores counts 0.5 each."""
    out: Fused = {}
    for hits in lists:
        if not hits:
            continue
        x = np.array([s for _, s in hits], dtype=np.float64)
        mu, sd = float(x.mean()), float(x.std())
        for p, s in hits:
            v = 0.5 if sd == 0 else (s - (mu - 3 * sd)) / (6 * sd)
            out[p] = out.get(p, 0.0) + v
    return out


def list_gap(hits: List, at: int = GAP_AT) -> float:
    """How far a list's first score stands out: ``(s_1 - s_at) / (s_1 - s_last)``, in [0, 1].

    Unchanged by any increasing affine map of the scores, so BM25's and cosine's scales compare;
    0 for a list of fewer than 2 hits or of equal scores.
    """
    if len(hits) < 2:
        return 0.0
    first, last = hits[0][1], hits[-1][1]
    if first == last:
        return 0.0
    return (first - hits[min(at, len(hits)) - 1][1]) / (first - last)


def gap_share(dense: List, bm25: List, at: int = GAP_AT) -> float:
    """The dense list's share of the RRF weight for one query: ``g_dense / (g_dense + g_bm25)``
    with :func:`list_gap`; 0.5 when neither list stands out."""
    gd, gb = list_gap(dense, at), list_gap(bm25, at)
    return 0.5 if gd + gb == 0 else gd / (gd + gb)


@dataclass(frozen=True)
class Rule:
    """A fusion rule: (dense list, BM25 list, products holding every query word) -> product
    -> score."""

    name: str
    fuse: Callable[[List, List, frozenset[str]], Fused]
    kind: str  # "weighted RRF", "single list", "structural"


def _share(a: float) -> Callable[[List, List, frozenset[str]], Fused]:
    return lambda d, b, w: rrf([d, b], [a, 1 - a])


def words_first(fused: Fused, full: frozenset[str], depth: int = DEPTH) -> Fused:
    """``retrieval.retriever.words_first`` on fused scores, as a search of ``depth`` hits runs
    it: the fused top ``depth``, in which every product holding all the query words (``full``,
    computed with the retriever's own functions when the lists were fetched) scores 1 more
    (RRF sums are below 1)."""
    top = as_run(fused, depth)
    return {p: fused[p] + 1.0 if p in full else fused[p] for p in top}


RULES: tuple[Rule, ...] = (
    Rule("bm25 only", lambda d, b, w: rrf([b], [1.0]), "single list"),
    Rule("dense only", lambda d, b, w: rrf([d], [1.0]), "single list"),
    Rule("rrf 0.1:1 (previous default)", lambda d, b, w: rrf([d, b], [0.1, 1.0]), "weighted RRF"),
    *(Rule(EQUAL if a == 0.5 else f"rrf {a:g}", _share(a), "weighted RRF") for a in SHARES),
    Rule("combsum min-max", lambda d, b, w: combsum([d, b]), "structural"),
    Rule("combmnz min-max", lambda d, b, w: combsum([d, b], mnz=True), "structural"),
    Rule("dbsf", lambda d, b, w: dbsf([d, b]), "structural"),
    Rule(
        "words-first, equal rrf",
        lambda d, b, w: words_first(rrf([d, b], [0.5, 0.5]), w),
        "structural",
    ),
    Rule(
        "words-first, rrf 0.1:1",
        lambda d, b, w: words_first(rrf([d, b], [0.1, 1.0]), w),
        "structural",
    ),
    Rule(
        "rrf gap-weighted",
        lambda d, b, w: rrf([d, b], [gap_share(d, b), 1 - gap_share(d, b)]),
        "structural",
    ),
)


def as_run(fused: Fused, k: int = DEPTH) -> dict[str, float]:
    """The top ``k`` of fused scores as a run (``float(k - i)`` by rank; ties by product id)."""
    top = sorted(fused, key=lambda p: (-round(fused[p], _DECIMALS), p))[:k]
    return {p: float(len(top) - i) for i, p in enumerate(top)}


# --- the data sets ---------------------------------------------------------------------------


def department(title: str) -> str | None:
    """A title's department (:data:`DEPARTMENTS`): that of its last word found there."""
    for w in reversed(_WORD.findall(title.lower())):
        if w in _DEPARTMENT_OF:
            return _DEPARTMENT_OF[w]
    return None


def query_departments(
    qrels: Mapping[str, Mapping[str, float]], titles: Mapping[str, str], threshold: float
) -> dict[str, str]:
    """Each query's department: the most common one among its relevant products' (ties: the
    first in :data:`DEPARTMENTS`' order); ``other`` when none of them has one."""
    order = list(DEPARTMENTS)
    out = {}
    for q, judged in qrels.items():
        found = Counter(
            d
            for p, g in judged.items()
            if g >= threshold and (d := department(titles.get(p, ""))) is not None
        )
        out[q] = min(found, key=lambda d: (-found[d], order.index(d))) if found else "other"
    return out


def query_types(texts: Mapping[str, str]) -> dict[str, list[str]]:
    """Query ids by type: ``1-2 words``, ``4+ words``, ``with a digit``, ``no digit``."""
    groups: dict[str, list[str]] = {"1-2 words": [], "4+ words": [], "with a digit": [],
                                    "no digit": []}  # fmt: skip
    for q, t in texts.items():
        n = len(t.split())
        if n <= 2:
            groups["1-2 words"].append(q)
        elif n >= 4:
            groups["4+ words"].append(q)
        groups["with a digit" if any(c.isdigit() for c in t) else "no digit"].append(q)
    return groups


def sample_judgments(products: Sequence[Any]) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Queries and graded judgments for the synthetic catalog, from its category tree.

    * a leaf's name (``paint rollers``): its products grade 3;
    * a subcategory's name (``power tools``): every product under it grade 3;
    * an attribute value + the leaf's name (``woven paint rollers``), one per attribute of each
      leaf (the value most products of the leaf have): the leaf's products with that value
      grade 3, the leaf's others grade 2.

    Returns:
        (query id -> text, query id -> product id -> grade).
    """
    texts: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}

    def add(kind: str, text: str, judged: dict[str, float]) -> None:
        qid = f"{kind}:{text}"
        if text and judged and qid not in texts:
            texts[qid], qrels[qid] = text, judged

    by_leaf: dict[str, list[Any]] = {}
    for p in products:
        by_leaf.setdefault(p.category, []).append(p)
    by_sub: dict[str, list[Any]] = {}
    for leaf, ps in by_leaf.items():
        by_sub.setdefault(" > ".join(leaf.split(" > ")[:2]), []).extend(ps)
    for sub, ps in sorted(by_sub.items()):
        add("sub", sub.split(" > ")[-1].lower(), {p.product_id: 3.0 for p in ps})
    for leaf, ps in sorted(by_leaf.items()):
        name = leaf.split(" > ")[-1].lower()
        add("leaf", name, {p.product_id: 3.0 for p in ps})
        for attr in sorted({a for p in ps for a in p.attributes}):
            values = Counter(
                str(p.attributes[attr])
                for p in ps
                if isinstance(p.attributes.get(attr), str)
                and _WORD.search(str(p.attributes[attr]).lower())
            )
            if not values:
                continue
            value = min(values, key=lambda v: (-values[v], v))
            if values[value] == len(ps):
                continue  # every product of the leaf: no different from the leaf's name
            judged = {
                p.product_id: 3.0 if str(p.attributes.get(attr)) == value else 2.0 for p in ps
            }
            add("attr", f"{value.lower()} {name}", judged)
    return texts, qrels


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One rule on one data set and metric, against equal-weight RRF and BM25 (paired)."""

    rule: str
    dataset: str
    metric: str
    queries: int
    value: float
    vs_equal: float
    p_equal: float
    vs_bm25: float
    p_bm25: float
    regret: float  # shortfall relative to the best rule on this data set and metric


@dataclass(frozen=True)
class FusionReport:
    """What ``shopsearch bench-fusion`` measured."""

    data: str
    index: str
    machine: str
    date: str
    seconds: float
    datasets: dict[str, int]
    cells: list[Cell]
    worst: dict[str, dict[str, Any]]
    chosen: str
    hold: dict[str, Any]
    check: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        """The tables."""
        rules = [r.name for r in RULES]
        sets = list(self.datasets)
        by = {(c.rule, c.dataset, c.metric): c for c in self.cells}
        lines = [
            f"Benchmark {self.data}, index {self.index} (zero-shot all-MiniLM-L6-v2; BM25 and "
            f"dense top {DEPTH} per query, corrected as a search does, fused offline). "
            f"Machine: {self.machine}.",
            "",
        ]
        if self.check:
            lines += [
                "Check: offline RRF at dense 0.1, BM25 1 against the store's hybrid search of "
                "the same index, HD test: "
                + ", ".join(f"{k} {v:.4f}" for k, v in self.check.items()),
                "",
            ]
        lines += [
            "Data sets (scored queries): "
            + ", ".join(f"{s} ({n})" for s, n in self.datasets.items()),
            "",
            "Worst case of each rule: the largest shortfall against the best rule of the same "
            "data set, over all data sets (HD sub-shops and the synthetic shop) and both "
            "metrics; `*` below: p < 0.05 (paired randomization, 10,000 sign flips).",
            "",
            "| rule | kind | worst NDCG@10 (where) | worst Recall@100 (where) | worst of both "
            "| holds on HD test |",
            "|---|---|---|---|---|---|",
        ]
        for r in RULES:
            w = self.worst[r.name]
            mark = "**" if r.name == self.chosen else ""
            lines.append(
                f"| {mark}{r.name}{mark} | {r.kind} | -{w['ndcg@10']:.1%} ({w['ndcg@10 where']}) "
                f"| -{w['recall@100']:.1%} ({w['recall@100 where']}) | -{w['both']:.1%} "
                f"| {'yes' if w['holds'] else 'no'} |"
            )
        h = self.hold
        lines += [
            "",
            "Holds: not below BM25 nor equal-weight RRF with p < 0.05 on the HD test split, at "
            f"NDCG@10 and Recall@100. Chosen, the best worst case among the rules that hold: "
            f"**{self.chosen}**. On the HD test split: NDCG@10 "
            f"{h['ndcg@10']:.4f} (BM25 {h['bm25 ndcg@10']:.4f}, p {h['p bm25 ndcg@10']:.4f}; "
            f"equal RRF {h['equal ndcg@10']:.4f}, p {h['p equal ndcg@10']:.4f}), Recall@100 "
            f"{h['recall@100']:.4f} (BM25 {h['bm25 recall@100']:.4f}, p "
            f"{h['p bm25 recall@100']:.4f}; equal RRF {h['equal recall@100']:.4f}, p "
            f"{h['p equal recall@100']:.4f}): "
            + ("holds (not below either with p < 0.05)." if h["holds"] else "does NOT hold."),
            "",
        ]
        for metric in METRICS:
            lines += [
                f"{metric}: each rule's value; below it the change against equal-weight RRF "
                "and against BM25 (relative, p).",
                "",
                "| rule | " + " | ".join(sets) + " |",
                "|---|" + "---|" * len(sets),
            ]
            for rule in rules:
                cells = []
                for s in sets:
                    c = by[(rule, s, metric)]
                    e = "" if rule == EQUAL else _delta(c.vs_equal, c.p_equal)
                    b = "" if rule == BM25 else _delta(c.vs_bm25, c.p_bm25)
                    cells.append(f"{c.value:.3f}<br>{e or '='} / {b or '='}")
                lines.append(f"| {rule} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)


def _delta(rel: float, p: float) -> str:
    return f"{rel:+.1%}{'*' if p < 0.05 else ''}"


def _cache_key(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def fetch_lists(
    retriever: Any,
    qids: Sequence[str],
    texts: Sequence[str],
    cache: Path,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Each query's BM25 and dense top :data:`DEPTH` (corrected as a search does), and the
    products of either list holding every word of the corrected query (by the retriever's own
    ``query_words`` and tokenizer), from ``cache`` when it holds them for this index build and
    these queries.

    Returns:
        query id -> ``{"bm25": [(product id, score), ...], "dense": [...], "all_words": [...]}``.
    """
    from retrieval.hits import hit_text
    from retrieval.retriever import query_words

    key = _cache_key("v2", retriever.manifest.get("build_id"), list(qids), list(texts))
    path = cache.with_name(f"{cache.stem}-{key}.json")
    if path.is_file():
        log(f"reusing the lists in {path}")
        raw = json.loads(path.read_text())
        return {
            q: {m: [tuple(x) for x in v] if m != "all_words" else v for m, v in d.items()}
            for q, d in raw.items()
        }
    tokenize = retriever.lexical.tokenize
    out: dict[str, dict[str, Any]] = {q: {"all_words": set()} for q in qids}
    for mode in ("bm25", "dense"):
        log(f"fetching {mode} lists for {len(qids)} queries")
        for i in range(0, len(qids), 64):
            queries = list(texts[i : i + 64])
            batch = retriever.search_batch(queries, k=DEPTH, mode=mode)
            for q, text, hits in zip(qids[i : i + 64], queries, batch, strict=True):
                out[q][mode] = [(h.product_id, float(h.score)) for h in hits]
                c = hits.correction
                words = query_words(tokenize, c.corrected if c is not None and c.applied else text)
                if words:
                    out[q]["all_words"] |= {
                        h.product_id for h in hits if words <= set(tokenize(hit_text(h)))
                    }
    for d in out.values():
        d["all_words"] = sorted(d["all_words"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _sample_data(
    workdir: Path, products: int, encoder: Any, log: Callable[[str], None]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]], dict[str, str]]:
    from catalog.sample import generate_products, write_sample_catalog
    from research.bench_quality import _index_for
    from retrieval.retriever import Retriever

    catalog = write_sample_catalog(workdir / "sample" / f"catalog-{products}.parquet", products)
    index = _index_for(encoder, catalog, workdir / "sample", log)
    texts, qrels = sample_judgments(generate_products(products))
    qids = sorted(texts)
    with Retriever.open(index, encoder=encoder) as r:
        lists = fetch_lists(r, qids, [texts[q] for q in qids], workdir / "lists-sample", log)
    return lists, qrels, texts


def run_fusion_benchmark(
    data_dir: str | Path,
    index: str | Path,
    workdir: str | Path,
    *,
    sample_products: int = 2000,
    min_queries: int = 30,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> FusionReport:
    """Runs the fusion benchmark; writes ``fusion.json`` and ``fusion.md`` in ``workdir``.

    Args:
        data_dir: A benchmark folder (``runs/hd``): its test split is scored.
        index: An index of that benchmark's catalog (its recorded fusion is not used: the lists
            are fetched per source and fused here).
        workdir: The cached lists, the synthetic shop's catalog and index, the report.
        sample_products: Products of the synthetic shop (0: leave it out).
        min_queries: A sub-shop with fewer scored queries is left out.
        device: Torch device of the query tower.
        log: Progress lines.
    """
    from research.bench_speed import machine_description
    from retrieval.retriever import Retriever

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_benchmark(data_dir)
    frame, qrels = data.split("test")
    scored = {q for q, j in qrels.items() if any(g >= data.threshold for g in j.values())}
    texts = {
        q: t
        for q, t in zip(frame["query_id"].to_list(), frame["query"].to_list(), strict=True)
        if q in scored
    }
    qids = sorted(texts)
    check: dict[str, float] = {}
    with Retriever.open(index, device=device) as retriever:
        lists = fetch_lists(retriever, qids, [texts[q] for q in qids], workdir / "lists-hd", log)
        recorded = retriever.tuning
        if (recorded.dense_weight, recorded.sparse_weight) == (0.1, 1.0):
            log("checking offline fusion against the store's hybrid search")
            online: dict[str, dict[str, float]] = {}
            for i in range(0, len(qids), 64):
                batch = retriever.search_batch([texts[q] for q in qids[i : i + 64]], k=DEPTH)
                for q, hits in zip(qids[i : i + 64], batch, strict=True):
                    online[q] = {h.product_id: float(len(hits) - j) for j, h in enumerate(hits)}
            offline = {
                q: as_run(rrf([d["dense"], d["bm25"]], [0.1, 1.0])) for q, d in lists.items()
            }
            for name, run in (("store", online), ("offline", offline)):
                s = evaluate(qrels, run, METRICS, data.threshold, data.gain_offset)
                for m in METRICS:
                    check[f"{name} {m}"] = float(np.mean(list(s[m].values())))
        encoder = retriever.encoder

    titles = dict(
        zip(data.catalog["product_id"].to_list(), data.catalog["title"].to_list(), strict=True)
    )
    departments = query_departments({q: qrels[q] for q in qids}, titles, data.threshold)
    sets: dict[str, list[str]] = {"HD test": qids}
    for d in [*DEPARTMENTS, "other"]:
        members = [q for q in qids if departments[q] == d]
        if len(members) >= min_queries:
            sets[f"HD {d}"] = members
    for name, members in query_types(texts).items():
        if len(members) >= min_queries:
            sets[f"HD {name}"] = sorted(members)
    all_lists = dict(lists)
    judged: dict[str, dict[str, float]] = {q: qrels[q] for q in qids}
    thresholds = {q: data.threshold for q in qids}
    if sample_products:
        s_lists, s_qrels, s_texts = _sample_data(workdir, sample_products, encoder, log)
        for q in s_lists:
            all_lists[q], judged[q], thresholds[q] = s_lists[q], s_qrels[q], data.threshold
        sets["sample: category names"] = sorted(q for q in s_texts if not q.startswith("attr:"))
        sets["sample: attribute + leaf"] = sorted(q for q in s_texts if q.startswith("attr:"))

    log(f"fusing {len(all_lists)} queries with {len(RULES)} rules")
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for rule in RULES:
        run = {
            q: as_run(rule.fuse(d["dense"], d["bm25"], frozenset(d["all_words"])))
            for q, d in all_lists.items()
        }
        scores[rule.name] = evaluate(judged, run, METRICS, data.threshold, data.gain_offset)

    cells: list[Cell] = []
    for s, members in sets.items():
        for m in METRICS:
            means = {r.name: float(np.mean([scores[r.name][m][q] for q in members])) for r in RULES}
            best = max(means.values())
            for r in RULES:
                a = {q: scores[r.name][m][q] for q in members}
                eq = paired_test({q: scores[EQUAL][m][q] for q in members}, a)
                bm = paired_test({q: scores[BM25][m][q] for q in members}, a)
                cells.append(
                    Cell(
                        r.name, s, m, len(members), means[r.name],
                        eq.relative_delta, eq.p_value, bm.relative_delta, bm.p_value,
                        (best - means[r.name]) / best if best > 0 else 0.0,
                    )
                )  # fmt: skip
    worst: dict[str, dict[str, Any]] = {}
    for r in RULES:
        w: dict[str, Any] = {}
        for m in METRICS:
            mine = [c for c in cells if c.rule == r.name and c.metric == m]
            top = max(mine, key=lambda c: c.regret)
            w[m], w[f"{m} where"] = top.regret, top.dataset
        w["both"] = max(w[m] for m in METRICS)
        w["mean"] = float(np.mean([c.regret for c in cells if c.rule == r.name]))
        worst[r.name] = w

    def hold_of(name: str) -> dict[str, Any]:
        h: dict[str, Any] = {"holds": True}
        for m in METRICS:
            c = next(c for c in cells if (c.rule, c.dataset, c.metric) == (name, "HD test", m))
            e = next(c for c in cells if (c.rule, c.dataset, c.metric) == (EQUAL, "HD test", m))
            b = next(c for c in cells if (c.rule, c.dataset, c.metric) == (BM25, "HD test", m))
            h[m], h[f"equal {m}"], h[f"bm25 {m}"] = c.value, e.value, b.value
            h[f"p equal {m}"], h[f"p bm25 {m}"] = c.p_equal, c.p_bm25
            for rel, p in ((c.vs_equal, c.p_equal), (c.vs_bm25, c.p_bm25)):
                if not math.isnan(rel) and rel < 0 and p < 0.05:
                    h["holds"] = False
        return h

    for r in RULES:
        worst[r.name]["holds"] = hold_of(r.name)["holds"]
    ranked_rules = sorted(RULES, key=lambda r: (worst[r.name]["both"], worst[r.name]["mean"]))
    chosen = next((r.name for r in ranked_rules if hold_of(r.name)["holds"]), ranked_rules[0].name)
    report = FusionReport(
        data=str(data_dir),
        index=str(index),
        machine=machine_description(),
        date=time.strftime("%Y-%m-%d"),
        seconds=time.perf_counter() - start,
        datasets={s: len(m) for s, m in sets.items()},
        cells=cells,
        worst=worst,
        chosen=chosen,
        hold=hold_of(chosen),
        check=check,
    )
    (workdir / "fusion.json").write_text(json.dumps(asdict(report), indent=1))
    (workdir / "fusion.md").write_text(report.markdown() + "\n")
    return report


__all__ = [
    "DEPARTMENTS",
    "RULES",
    "FusionReport",
    "combsum",
    "dbsf",
    "gap_share",
    "list_gap",
    "rrf",
    "run_fusion_benchmark",
    "sample_judgments",
]


#: The latency block's name in the docs page.
LATENCY_KEY = "fusion-latency"


def fusion_latency(
    data: str | Path, index: str | Path, n_queries: int = 300, rounds: int = 3, k: int = 50
) -> str:
    """What the default fusion's structural step costs a hybrid search: ``Retriever.search``
    on one index with equal-weight RRF alone and with words-first, query by query in turn
    (the order flipped each round), so both see the same machine state.

    Args:
        data: The benchmark folder (its test queries are searched).
        index: An index of its catalog.
        n_queries: Test queries timed (the first ones, in the split's order).
        rounds: Passes over them.
        k: Results asked for (the pipeline asks for its rerank depth, 50).

    Returns:
        The Markdown block: p50 / p99 of each and of the difference, in ms.
    """
    from dataclasses import replace

    from research.bench_speed import machine_description
    from retrieval.retriever import Retriever

    queries = load_benchmark(data).split("test")[0]["query"].to_list()[:n_queries]
    times: dict[str, list[float]] = {"rrf": [], "words-first": []}
    with Retriever.open(index) as retriever:
        base = replace(retriever.tuning, dense_weight=1.0, sparse_weight=1.0)
        tunings = {
            "rrf": replace(base, fusion="rrf"),
            "words-first": replace(base, fusion="words-first"),
        }
        for q in queries[:20]:  # warm: the models, the store's pages, the title-token cache
            for t in tunings.values():
                retriever.tuning = t
                retriever.search(q, k=k)
        for r in range(rounds):
            order = list(tunings) if r % 2 == 0 else list(reversed(tunings))
            for q in queries:
                for name in order:
                    retriever.tuning = tunings[name]
                    t0 = time.perf_counter()
                    retriever.search(q, k=k)
                    times[name].append((time.perf_counter() - t0) * 1000)
    a, b = np.array(times["rrf"]), np.array(times["words-first"])
    diff = b - a
    rows = [
        ("hybrid, equal-weight RRF", a),
        ("hybrid, words-first (the default)", b),
        ("difference, per query", diff),
    ]
    lines = [
        f"{len(queries)} Home Depot test queries x {rounds} rounds, `Retriever.search(k={k})` on "
        f"one index, the two fusions in turn per query (ms). {machine_description()}.",
        "",
        "| | p50 | p99 |",
        "| --- | ---: | ---: |",
        *[
            f"| {name} | {np.percentile(v, 50):.2f} | {np.percentile(v, 99):.2f} |"
            for name, v in rows
        ],
    ]
    return "\n".join(lines) + "\n"
