"""bench-interleave on a tiny benchmark: verdicts follow the NDCG difference, the report and page."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from research.bench_interleave import PATTERNS, _Coins, _interleavings, grid, run
from research.cli import bench_interleave_cmd


def test_every_coin_pattern_is_a_team_draft_merge():
    a = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    b = np.array([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    ids, team_a = _interleavings(a, b)
    assert ids.shape == (1, PATTERNS, 10)
    merges = {tuple(ids[0, p]) for p in range(PATTERNS)}
    assert len(merges) == PATTERNS  # five tied rounds: every pattern a different list
    for p in range(PATTERNS):
        assert sorted(ids[0, p]) == list(range(10))
        assert team_a[0, p].sum() == 5
        assert bool(team_a[0, p, 0]) == bool(_Coins(p).getrandbits(1))


def test_grid_is_ascending_and_ends_at_the_largest():
    sizes = grid(1000)
    assert sizes[0] == 10 and sizes[-1] == 1000 and np.all(np.diff(sizes) > 0)


def test_verdicts_agree_with_the_offline_difference(tiny_bench):
    bench = run(tiny_bench, changes=(-0.9, 2.0), reference=0.6, max_searches=3000, runs=4)
    better, worse = bench.pairs
    assert better.ndcg_b > better.ndcg_a and worse.ndcg_b < worse.ndcg_a
    assert better.delta < 0 < worse.delta
    for pair in bench.pairs:
        assert pair.interleaving_agree == 1.0 and pair.interleaving_median is not None
        assert pair.interleaving_median <= 3000
    same = run(tiny_bench, changes=(0.0,), reference=0.6, max_searches=200, runs=2, seed=1)
    assert same.pairs[0].ndcg_a == same.pairs[0].ndcg_b  # no change: the same ranker
    assert same.pairs[0].runs == 2 and same.queries == bench.queries == 30


def test_command_prints_and_publishes(tiny_bench, tmp_path):
    page = tmp_path / "interleaving.md"
    page.write_text("# Interleaving\n")
    runner = CliRunner()
    args = [str(tiny_bench), "--change", "1.5", "--max-searches", "500", "--runs", "2"]
    result = runner.invoke(bench_interleave_cmd, [*args, "--docs", str(page)])
    assert result.exit_code == 0, result.output
    assert "| +1.5 |" in result.output
    text = page.read_text()
    assert "<!-- end written: interleaving -->" in text and "| +1.5 |" in text
    got = runner.invoke(bench_interleave_cmd, [*args, "--json"])
    assert json.loads(got.output)["pairs"][0]["change"] == 1.5
