"""The fault benchmark, reduced: one kill during a build, the damage cases of one segment file.

research/bench_faults.py kills builds with SIGKILL and measures processes' memory: the tests
that run it start processes and take a minute or more, so they are marked ``integration`` and
``slow``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ShopsearchError
from research.bench_faults import SCENARIOS, run_fault_benchmark


@pytest.mark.integration
@pytest.mark.slow
def test_reduced_fault_benchmark(tmp_path, tiny_model):
    report = run_fault_benchmark(
        tmp_path / "faults",
        n_products=40,
        seed=1,
        model=str(tiny_model),
        kills=1,
        segment_files=1,
        scenarios=("kill_build", "damage"),
        log=lambda m: None,
    )
    saved = json.loads((tmp_path / "faults" / "faults.json").read_text())
    assert saved == json.loads(json.dumps(report.as_dict()))
    assert set(saved["scenarios"]) == {"kill_build", "damage"}
    assert "| kill_build | yes |" in (tmp_path / "faults" / "faults.md").read_text()
    assert not (tmp_path / "faults" / "scratch").exists(), "cleans up after itself"

    kill = saved["scenarios"]["kill_build"]
    assert kill["kills_total"] == 1 and len(kill["kills"]) == 1
    assert kill["searches_ok"] == kill["searches"] > 0
    assert kill["searches_wrong"] == kill["searches_error"] == 0
    assert kill["next_build_exit"] == 0 and kill["leftover_entries_after_next_build"] == 0

    damage = saved["scenarios"]["damage"]
    # one segment file, the manifest, the seal and CURRENT: each truncated, then garbled
    assert damage["total"] == len(damage["cases"]) == 8
    assert damage["detected"] == damage["total"], damage["cases"]
    assert damage["silent"] == damage["crash"] == 0
    assert damage["cli_exit"] == 2 and damage["cli_error_lines"] == 1
    assert {c["damage"] for c in damage["cases"]} == {"truncate", "garble"}
    assert report.passed() == {"kill_build": True, "damage": True}


def test_unknown_scenario_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown scenarios"):
        run_fault_benchmark(tmp_path, scenarios=("no_such",))
    assert len(SCENARIOS) == 8


@pytest.mark.integration
@pytest.mark.slow
def test_memory_scenario_measures_both_layouts(tmp_path, tiny_model):
    report = run_fault_benchmark(
        tmp_path / "faults",
        seed=1,
        model=str(tiny_model),
        memory_sizes=(1000, 2500),
        memory_segment=1000,
        scenarios=("memory",),
        log=lambda m: None,
    )
    mem = report.scenarios["memory"]
    assert [(r["products"], r["layout"]) for r in mem["runs"]] == [
        (1000, "segments"), (1000, "one segment"), (2500, "segments"), (2500, "one segment"),
    ]  # fmt: skip
    assert all(r["exit"] == 0 and r["peak_rss_mb"] > r["peak_anon_mb"] > 0 for r in mem["runs"])
    # an upsert that changes nothing copies the build sparsely: about the build's own size
    assert 0.5 <= mem["upsert_disk_ratio_max"] <= 1.5
    assert (
        mem["peak_rss_mb_per_1k_products_segments"] == mem["peak_rss_mb_per_1k_products_segments"]
    )


def test_memory_sizes_are_checked(tmp_path):
    with pytest.raises(ShopsearchError, match="memory sizes"):
        run_fault_benchmark(tmp_path, memory_sizes=(10,), scenarios=("memory",))


def test_command_is_registered_with_help():
    from research.cli import COMMANDS, bench_faults_cmd

    assert bench_faults_cmd in COMMANDS
    assert all(p.help for p in bench_faults_cmd.params if p.name != "help")
    project = (Path(__file__).parents[2] / "research" / "pyproject.toml").read_text()
    assert 'bench-faults = "research.cli:bench_faults_cmd"' in project
