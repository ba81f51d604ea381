"""Synonyms on a benchmark: a list mined from the training split, measured on the test split.

What a shop could mine from its own data: the training split's queries, each with the products
judged relevant to it (grade >= the benchmark's threshold), and the catalog. The list is mined
by a fixed, deterministic rule (:func:`mine_synonyms`), then BM25 and hybrid retrieval are
measured with and without it on the test split, with paired randomization tests. The weight of
a synonym (``w`` of :mod:`retrieval.synonyms`) and which list (form variants alone, or with
co-occurrence too) are chosen on the validation split.

The mining rule. For every content word ``q`` (3+ letters, no stopword or unit word) of a
training query, look at the query's relevant products whose title lacks ``q`` (compared by
BM25's stem): the shopper's word and the shop's differ there. Skip ``q`` when the spelling
corrector would change it (a typo is the corrector's business). Then, in this order:

1. *glued*: ``q`` is unknown to the catalog and one of those titles spells it as two adjacent
   words ``a b`` (``rustoleum`` / "Rust-Oleum", ``snowblower``): ``q -> a b``.
2. *form variant*: a title word ``t`` (not in the query) is in at least :data:`MIN_PAIRS` of
   those titles and half of them, and is a form of ``q``: a spelling within two edits (both
   5+ letters: ``rigid -> ridgid``, ``moulding -> molding``), ``q`` a prefix of ``t`` (an
   abbreviation: ``vac -> vacuum``), or one inside the other (``lawnmower -> mower``,
   ``mail -> mailbox``). The most frequent such ``t``: ``q -> t``.
3. *co-occurrence* (the broad list only): a title word ``t`` in at least 5 of those titles and
   60% of them, 50 times likelier there than in the relevant titles overall (lift), where at
   least half of ``q``'s relevant titles lack ``q``; ``t`` of 4+ letters, no unit word and no
   word of a brand name (a brand co-occurs with a product type without meaning it):
   ``garbage -> trash``, ``fridge -> refrigerator``.

Rules 2 and 3 need ``q`` in at least two distinct training queries. Units and their
abbreviations (``in``/``inch``/``"``, ``ft``/``feet``, ``lb``/``pound``) need no synonyms: BM25's
tokenizer already gives them one token (:mod:`retrieval.lexical`).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.data import load_benchmark
from evaluation.metrics import evaluate, mean_scores
from evaluation.stats import paired_test
from research.bench_quality import _run_from, scored_queries
from retrieval.lexical import _UNIT_WORDS, STOPWORDS
from retrieval.retriever import Retriever
from retrieval.spelling import QueryCorrector, vocabulary_words
from retrieval.synonyms import SYNONYM_WEIGHT, SynonymMatcher, Synonyms

METRICS = ("ndcg@10", "recall@100")
#: Weights ``w`` tried on the validation split.
WEIGHTS = (0.25, 0.5, 1.0)
#: The lists measured: form variants (rules 1-2), and with co-occurrence (rules 1-3).
LISTS = ("form", "form+co-occurrence")
MIN_PAIRS = 3
REPORT = "synonyms"
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class MinedSynonym:
    """One mined line with its evidence."""

    line: str
    rule: str
    queries: int
    pairs: int


def _osa(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, as the corrector measures."""
    from symspellpy.editdistance import DistanceAlgorithm, EditDistance

    d = EditDistance(DistanceAlgorithm.DAMERAU_OSA).compare(a, b, 2)
    return 3 if d < 0 else d


def _form(q: str, t: str) -> bool:
    if min(len(q), len(t)) >= 5 and _osa(q, t) <= 2:
        return True
    if len(q) >= 3 and t.startswith(q):
        return True
    return (len(q) >= 4 and q in t) or (len(t) >= 4 and t in q)


def mine_synonyms(data: Any, corrector: QueryCorrector, split: str = "train") -> list[MinedSynonym]:
    """The synonyms the module's rule mines from one split (deterministic: sorted by word).

    Args:
        data: A loaded benchmark (``evaluation.data.load_benchmark``).
        corrector: The index's corrector (its vocabulary says what the catalog knows).
        split: The split to mine (the training split: never the one measured).
    """
    stem = corrector.stem
    ids, names = data.catalog["product_id"].to_list(), data.catalog["title"].to_list()
    titles = dict(zip(ids, names, strict=True))
    brand_words: set[str] = set()
    if "brand" in data.catalog.columns:
        for b in data.catalog["brand"].drop_nulls().to_list():
            brand_words.update(vocabulary_words(b))

    def content(text: str) -> list[str]:
        return [w for w in vocabulary_words(text) if w not in STOPWORDS and w not in _UNIT_WORDS]

    frame, qrels = data.split(split)
    queries: dict[str, set[str]] = defaultdict(set)
    pairs: Counter[str] = Counter()  # relevant (query, product) pairs of a word
    lacking: Counter[str] = Counter()  # ... whose title lacks it
    cooc: dict[str, Counter[str]] = defaultdict(Counter)  # word -> title stem -> pairs
    glued: dict[str, Counter[str]] = defaultdict(Counter)
    surface: dict[str, Counter[str]] = defaultdict(Counter)
    base: Counter[str] = Counter()
    n_pairs = 0
    for qid, query in zip(frame["query_id"].to_list(), frame["query"].to_list(), strict=True):
        relevant = sorted(p for p, g in qrels.get(qid, {}).items() if g >= data.threshold)
        words = sorted({w for w in content(query) if len(w) >= 3})
        stems = {stem(w) for w in words}
        for pid in relevant:
            n_pairs += 1
            title = titles.get(pid, "")
            spelled = vocabulary_words(title)
            apart = {a + b: f"{a} {b}" for a, b in zip(spelled, spelled[1:], strict=False)}
            title_stems: dict[str, str] = {}
            for t in content(title):
                title_stems.setdefault(stem(t), t)
                surface[stem(t)][t] += 1
            base.update(title_stems.keys())
            for w in words:
                queries[w].add(query.lower())
                pairs[w] += 1
                if stem(w) in title_stems:
                    continue
                lacking[w] += 1
                if w in apart and not corrector.knows(w):
                    glued[w][apart[w]] += 1
                for s in title_stems:
                    if s not in stems:
                        cooc[w][s] += 1
    out: list[MinedSynonym] = []
    for w in sorted(queries):
        if not corrector.knows(w) and corrector.suggest(w) is not None:
            continue  # a typo: the corrector's business
        if glued[w]:
            split_as, n = min(glued[w].items(), key=lambda kv: (-kv[1], kv[0]))
            out.append(MinedSynonym(f"{w} -> {split_as}", "glued", len(queries[w]), n))
            continue
        if len(queries[w]) < 2 or lacking[w] < MIN_PAIRS:
            continue
        ranked = sorted(cooc[w].items(), key=lambda kv: (-kv[1], kv[0]))
        found = False
        for s, n in ranked:
            if n < MIN_PAIRS or n / lacking[w] < 0.5:
                break
            t = min(surface[s].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            if _form(w, t):
                out.append(MinedSynonym(f"{w} -> {t}", "form", len(queries[w]), n))
                found = True
                break
        if not found:
            for s, n in ranked:
                if n < 5 or n / lacking[w] < 0.6:
                    break
                t = min(surface[s].items(), key=lambda kv: (-kv[1], kv[0]))[0]
                lift = (n / lacking[w]) / (base[s] / n_pairs)
                if (
                    lift >= 50
                    and lacking[w] / pairs[w] >= 0.5
                    and len(t) >= 4
                    and t not in _UNIT_WORDS
                    and t not in brand_words
                ):
                    out.append(MinedSynonym(f"{w} -> {t}", "co-occurrence", len(queries[w]), n))
                    break
    return out


def _as_list(mined: Sequence[MinedSynonym], rules: Sequence[str]) -> Synonyms:
    """The mined lines of these rules as a synonym list (a line that is not valid is skipped)."""
    from core.errors import ShopsearchError
    from retrieval.synonyms import parse_synonym

    out = Synonyms()
    for m in mined:
        if m.rule in rules:
            try:
                out = out.add(parse_synonym(m.line))
            except ShopsearchError:
                continue
    return out


@dataclass(frozen=True)
class SynonymRow:
    """One system on one query subset, without and with the synonyms (paired)."""

    system: str
    synonyms: str
    subset: str
    queries: int
    metric: str
    without: float
    with_synonyms: float
    relative_delta: float
    p_value: float


@dataclass(frozen=True)
class SynonymReport:
    """What ``shopsearch bench-synonyms`` measured."""

    data: str
    index: str
    machine: str
    seconds: float
    tuning: dict[str, Any]
    mined: dict[str, int]
    sample: list[str]
    validation: dict[str, float]
    chosen: dict[str, Any]
    applies: dict[str, int]
    rows: list[SynonymRow] = field(default_factory=list)

    def markdown(self) -> str:
        """The report's tables."""
        n_lines = sum(self.mined.values())
        lines = [
            f"Benchmark {self.data}, index {self.index} (hybrid: dense weight "
            f"{self.tuning['dense_weight']:g}, BM25 {self.tuning['sparse_weight']:g}; queries "
            f"corrected as a search does). Machine: {self.machine}.",
            "",
            f"Synonyms mined from the training split only (rule: `research/bench_synonyms.py`): "
            f"{n_lines} one-way lines, "
            + ", ".join(f"{n} {rule}" for rule, n in self.mined.items())
            + ". Sample: "
            + "; ".join(f"`{s}`" for s in self.sample)
            + ".",
            "",
            "Validation BM25 NDCG@10 by list and weight `w` (without synonyms: "
            f"{self.validation.get('none', float('nan')):.4f}): "
            + ", ".join(f"{k}: {v:.4f}" for k, v in self.validation.items() if k != "none"),
            "",
            f"Chosen on validation: list `{self.chosen['list']}`, w = {self.chosen['weight']:g}. "
            "Test queries a synonym applies to: "
            + ", ".join(f"{k} {v}" for k, v in self.applies.items())
            + ".",
            "",
            "| system | synonyms | subset | n | metric | without | with | rel. change | p |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            mark = " *" if r.p_value < 0.05 else ""
            lines.append(
                f"| {r.system} | {r.synonyms} | {r.subset} | {r.queries} | {r.metric} | "
                f"{r.without:.3f} | {r.with_synonyms:.3f} | {r.relative_delta:+.1%} | "
                f"{r.p_value:.4f}{mark} |"
            )
        lines += ["", "`*`: p < 0.05 (paired randomization test, 10,000 sign flips)."]
        return "\n".join(lines)


def run_synonym_benchmark(
    data_dir: str | Path,
    index: str | Path,
    workdir: str | Path,
    *,
    weights: Sequence[float] = WEIGHTS,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> SynonymReport:
    """Mines synonyms from the training split and measures them; writes ``synonyms.json``,
    ``synonyms.md`` and the mined list ``synonyms-mined.txt`` in ``workdir``.

    Args:
        data_dir: A benchmark folder (``catalog.parquet``, queries, qrels).
        index: An index of its catalog with a spelling vocabulary; its recorded fusion is used.
        workdir: Where the report goes.
        weights: The synonym weights tried on validation.
        device: Torch device of the query tower.
        log: Progress lines.

    Raises:
        ShopsearchError: The index has no spelling vocabulary (rebuild it), or does not open.
    """
    from core.errors import ShopsearchError
    from research.bench_speed import machine_description

    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_benchmark(data_dir)
    retriever = Retriever.open(index, device=device)
    if retriever.corrector is None:
        raise ShopsearchError(f"{index}: no spelling vocabulary: rebuild the index")
    mined = mine_synonyms(data, retriever.corrector, "train")
    (workdir / "synonyms-mined.txt").write_text(
        "".join(f"{m.line}  # {m.rule}, {m.queries} queries, {m.pairs} pairs\n" for m in mined)
    )
    lists = {"form": _as_list(mined, ("glued", "form"))}
    lists["form+co-occurrence"] = _as_list(mined, ("glued", "form", "co-occurrence"))
    log(f"mined {len(mined)} lines: " + ", ".join(f"{k} {len(v)}" for k, v in lists.items()))
    empty = Synonyms()

    def run(mode: str, ids: Sequence[str], texts: Sequence[str], synonyms: Synonyms, w: float):
        retriever.synonyms = lambda: synonyms
        retriever.synonym_weight = w
        batches = []
        for i in range(0, len(texts), 64):
            batches.extend(retriever.search_batch(list(texts[i : i + 64]), k=100, mode=mode))
        return _run_from(batches, list(ids))

    def score(r: Run, judged) -> dict[str, dict[str, float]]:
        return evaluate(
            judged, r, metrics=METRICS, threshold=data.threshold, gain_offset=data.gain_offset
        )

    vids, vtexts, vqrels, _ = scored_queries(data, "validation")
    validation = {
        "none": mean_scores(score(run("bm25", vids, vtexts, empty, 1.0), vqrels))["ndcg@10"]
    }
    for name, synonyms in lists.items():
        for w in weights:
            value = mean_scores(score(run("bm25", vids, vtexts, synonyms, w), vqrels))["ndcg@10"]
            validation[f"{name} w={w:g}"] = value
            log(f"validation bm25, {name}, w={w:g}: NDCG@10 {value:.4f}")
    best = max((k for k in validation if k != "none"), key=lambda k: (validation[k], k))
    chosen_list, _, w_text = best.rpartition(" w=")
    chosen = {"list": chosen_list, "weight": float(w_text), "default_weight": SYNONYM_WEIGHT}

    qids, texts, qrels, _ = scored_queries(data, "test")
    applies: dict[str, int] = {}
    rows: list[SynonymRow] = []
    baseline: dict[str, dict[str, dict[str, float]]] = {}
    for name in (chosen_list, *(n for n in LISTS if n != chosen_list)):
        synonyms = lists[name]
        matcher = SynonymMatcher(synonyms, retriever.lexical.tokenize)
        hit = [
            q
            for q, t in zip(qids, texts, strict=True)
            if matcher.expand(retriever.lexical.tokenize(t)).weights
        ]
        applies[name] = len(hit)
        for system in ("bm25", "hybrid"):
            log(f"test {system}, {name}, w={chosen['weight']:g}")
            if system not in baseline:
                baseline[system] = score(run(system, qids, texts, empty, 1.0), qrels)
            without = baseline[system]
            with_ = score(run(system, qids, texts, synonyms, chosen["weight"]), qrels)
            for subset, ids in (("all", qids), ("a synonym applies", hit)):
                for m in METRICS:
                    a = {q: without[m][q] for q in ids if q in without[m]}
                    b = {q: with_[m][q] for q in ids if q in with_[m]}
                    if not a:
                        continue
                    t = paired_test(a, b, method="randomization")
                    rows.append(
                        SynonymRow(
                            system,
                            name,
                            subset,
                            len(a),
                            m,
                            t.mean_a,
                            t.mean_b,
                            t.relative_delta,
                            t.p_value,
                        )
                    )
    tuning = retriever.tuning.as_dict()
    retriever.close()
    by_rule = Counter(m.rule for m in mined)
    sample = [m.line for m in mined if m.queries >= 3][:12]
    report = SynonymReport(
        data=str(data_dir),
        index=str(index),
        machine=machine_description(),
        seconds=time.perf_counter() - start,
        tuning=tuning,
        mined={r: by_rule.get(r, 0) for r in ("glued", "form", "co-occurrence")},
        sample=sample,
        validation=validation,
        chosen=chosen,
        applies=applies,
        rows=rows,
    )
    (workdir / f"{REPORT}.json").write_text(json.dumps(asdict(report), indent=1))
    (workdir / f"{REPORT}.md").write_text(report.markdown() + "\n")
    return report


__all__ = ["MinedSynonym", "SynonymReport", "mine_synonyms", "run_synonym_benchmark"]
