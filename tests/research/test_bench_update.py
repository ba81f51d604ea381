"""bench-update on a tiny catalog: the report has every figure, and the index is left as it was."""

from __future__ import annotations

import json

from research.bench_update import run_update_benchmark


def test_bench_update_reports_throughput_and_both_search_phases(tmp_path):
    report = run_update_benchmark(
        tmp_path, n=300, tiny=True, batches=(100,), stream_batch=50, seconds=1.0, queries=10
    )
    assert [b.batch for b in report.batches] == [100]
    assert report.batches[0].batches >= 3 and report.batches[0].products_per_s > 0
    assert [p.name for p in report.phases] == ["searches alone", "while updates stream"]
    assert all(p.searches > 0 for p in report.phases) and report.p99_ratio is not None
    saved = json.loads((tmp_path / "updates.json").read_text())
    assert saved["batches"][0]["products_per_s"] > 0
    assert "| 100 |" in (tmp_path / "updates.md").read_text()
    assert not (tmp_path / "scratch").exists()
