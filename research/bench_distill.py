"""``shopsearch bench-distill``: bi-encoders trained by different recipes, on the test split.

Each model (a sentence-transformers folder, e.g. one trained with in-batch negatives and one
distilled from the cross-encoder with MarginMSE, :mod:`training.retriever`) gets an index of the
catalog (built once in ``WORKDIR``, reused), and its dense and hybrid results are scored on the
test split's scored queries: NDCG@10 and Recall@100, with paired randomization tests
(:func:`evaluation.stats.paired_test`, 10,000 sign flips) of every model against the first one
(the baseline). Beside them, from each model's ``train_report.json``: the loss, pairs trained,
training seconds and, for a distilled model, the teacher's labelling (pairs scored, seconds),
counted apart from training.

    run(data_dir, {"MNRL": folder, "MarginMSE": folder}, workdir) -> DistillReport
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: The report's name: its block in the docs page (research.docs.publish).
REPORT_KEY = "distillation"
MODES = ("dense", "hybrid")
METRICS = ("ndcg@10", "recall@100")


@dataclass(frozen=True)
class DistillReport:
    """The figures of one ``bench-distill`` run.

    Attributes:
        queries: Scored test queries.
        baseline: The model the others are tested against.
        systems: ``"{model}, {mode}"`` -> metric -> mean.
        tests: ``"{model}, {mode}"`` -> ``{metric}_delta``, ``{metric}_rel``, ``{metric}_p``
            against the baseline's same mode.
        training: model -> what its ``train_report.json`` says (loss, pairs, seconds).
    """

    queries: int
    baseline: str
    systems: dict[str, dict[str, float]]
    tests: dict[str, dict[str, float]]
    training: dict[str, dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The report as the docs page shows it."""
        lines = [
            f"Test split: {self.queries} scored queries, whole catalog. p: paired randomization "
            f"test (10,000 sign flips) against {self.baseline} in the same mode.",
            "",
            "| model, mode | NDCG@10 | Recall@100 | NDCG@10 vs baseline | p | Recall@100 vs "
            "baseline | p |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in self.systems.items():
            t = self.tests.get(name)
            cells = ["", "", "", ""]
            if t:
                cells = [
                    f"{t['ndcg@10_delta']:+.4f} ({t['ndcg@10_rel']:+.1%})",
                    f"{t['ndcg@10_p']:.4f}",
                    f"{t['recall@100_delta']:+.4f} ({t['recall@100_rel']:+.1%})",
                    f"{t['recall@100_p']:.4f}",
                ]
            lines.append(
                f"| {name} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
        lines += ["", "Training (from each model's `train_report.json`):", ""]
        for model, t in self.training.items():
            if not t:
                lines.append(f"- {model}: no `train_report.json` (a model not trained here)")
                continue
            line = (
                f"- {model}: {t.get('loss', '?')}, {t.get('pairs_trained', 0):,} pairs in "
                f"{t.get('train_seconds', 0):.0f} s of training ({t.get('pairs_per_s', 0):.1f} "
                f"pairs/s), stopped by {t.get('stopped_by', '?')}; validation Recall@100 "
                f"{t.get('baseline_metric', float('nan')):.4f} -> {t.get('best_metric', float('nan')):.4f}"
            )
            if t.get("best_metric", 0.0) <= t.get("baseline_metric", 0.0):
                line += " (never above the start: the folder holds the starting model)"
            if t.get("teacher_pairs"):
                line += (
                    f"; labelling apart: {int(t['teacher_pairs']):,} (query, product) pairs "
                    f"scored by the teacher in {t['label_seconds']:.0f} s, mining and labelling "
                    f"{t.get('prep_seconds', 0):.0f} s"
                )
            if t.get("margin_scale"):
                line += f"; student score {t['margin_scale']:.2f} x cosine"
            lines.append(line)
        return "\n".join(lines) + "\n"


def training_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """What a model folder's ``train_report.json`` says of its training ({} when it has none)."""
    path = Path(folder) / "train_report.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    details = report.get("details") or {}
    keys = ("pairs_trained", "train_seconds", "pairs_per_s", "stopped_by", "steps")
    keys += ("baseline_metric", "best_metric")
    out = {k: report[k] for k in keys if k in report}
    out["loss"] = details.get("loss", "MNRL")
    for k in (
        "teacher",
        "teacher_pairs",
        "label_seconds",
        "prep_seconds",
        "hard_negatives",
        "margin_scale",
    ):
        if details.get(k) is not None:
            out[k] = details[k]
    return out


def compare(
    per_query: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str
) -> dict[str, dict[str, float]]:
    """Paired tests of each ``"{model}, {mode}"`` against ``"{baseline}, {mode}"``.

    Args:
        per_query: system -> metric -> query_id -> value (each system's
            :func:`evaluation.metrics.evaluate`).
        baseline: The baseline model's name.
    """
    from evaluation.stats import paired_test

    tests: dict[str, dict[str, float]] = {}
    for name, values in per_query.items():
        model, mode = name.rsplit(", ", 1)
        base = per_query.get(f"{baseline}, {mode}")
        if model == baseline or base is None:
            continue
        t: dict[str, float] = {}
        for metric in METRICS:
            pt = paired_test(base[metric], values[metric])
            t[f"{metric}_delta"], t[f"{metric}_rel"], t[f"{metric}_p"] = (
                pt.delta,
                pt.relative_delta,
                pt.p_value,
            )
        tests[name] = t
    return tests


def run(
    data_dir: str | os.PathLike[str],
    models: Mapping[str, str | os.PathLike[str]],
    workdir: str | os.PathLike[str] = "runs/distill",
    log: Callable[[str], None] = print,
) -> DistillReport:
    """Indexes the catalog with each model and scores dense and hybrid on the test split.

    Args:
        data_dir: A benchmark directory (``evaluation.data``), e.g. ``runs/hd``.
        models: name -> bi-encoder folder; the first is the baseline.
        workdir: Where the indexes (one per model, reused) and report.md/json go.
        log: Progress messages.

    Raises:
        ShopsearchError: No model given, or a folder that is not a bi-encoder.
    """
    from core.errors import ShopsearchError
    from evaluation.data import load_benchmark
    from evaluation.metrics import evaluate, mean_scores
    from research.bench_quality import _index_for, _run_from, scored_queries
    from retrieval.encoder import BiEncoder
    from retrieval.retriever import Retriever

    if not models:
        raise ShopsearchError("bench-distill needs at least one --model NAME=FOLDER")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = load_benchmark(data_dir)
    qids, texts, qrels, _ = scored_queries(data, "test")
    catalog = Path(data_dir) / "catalog.parquet"
    per_query: dict[str, dict[str, dict[str, float]]] = {}
    training: dict[str, dict[str, Any]] = {}
    for name, folder in models.items():
        encoder = BiEncoder(folder)
        training[name] = training_summary(folder)
        with Retriever.open(_index_for(encoder, catalog, work, log), encoder=encoder) as r:
            for mode in MODES:
                log(f"{name}: {mode} for {len(qids)} test queries")
                batches: list[Any] = []
                for at in range(0, len(texts), 64):
                    batches.extend(r.search_batch(texts[at : at + 64], k=100, mode=mode))
                per_query[f"{name}, {mode}"] = evaluate(
                    qrels, _run_from(batches, qids), METRICS, data.threshold, data.gain_offset
                )
    baseline = next(iter(models))
    report = DistillReport(
        queries=len(qids),
        baseline=baseline,
        systems={name: mean_scores(pq) for name, pq in per_query.items()},
        tests=compare(per_query, baseline),
        training=training,
    )
    (work / "report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    (work / "report.md").write_text(report.markdown())
    return report
