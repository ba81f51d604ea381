"""Team-draft interleaving: hand-worked merges, the invariants, seeds and credit."""

from __future__ import annotations

import random

import pytest

from rerank.interleave import credit, in_experiment, interleave_seed, team_draft


class Coins(random.Random):
    """A coin that answers a fixed sequence (1 = team A picks first in a tied round)."""

    def __init__(self, flips):
        super().__init__(0)
        self.flips = list(flips)

    def getrandbits(self, k):
        return self.flips.pop(0)


def test_hand_worked_merge_follows_the_coins():
    a = ["a1", "a2", "a3", "s"]
    b = ["s", "b1", "b2", "b3"]
    # round 1: coin 1 -> A picks a1, B picks s; round 2: coin 0 -> B picks b1, A a2
    got = team_draft(a, b, 4, Coins([1, 0]))
    assert got.ids == ("a1", "s", "b1", "a2")
    assert got.teams == ("A", "B", "B", "A")
    # coin 0 first: B picks s, then A's best not taken is a1
    got = team_draft(a, b, 3, Coins([0, 1]))
    assert got.ids == ("s", "a1", "a2") and got.teams == ("B", "A", "A")


def test_identical_lists_keep_their_order_and_split_the_picks():
    ranking = [f"p{i}" for i in range(10)]
    for seed in range(20):
        got = team_draft(ranking, ranking, 10, random.Random(seed))
        assert list(got.ids) == ranking
        assert abs(got.teams.count("A") - got.teams.count("B")) <= 1
        # each round of two picks has one of each team
        assert all({got.teams[i], got.teams[i + 1]} == {"A", "B"} for i in range(0, 10, 2))


def test_disjoint_lists_alternate_teams_and_keep_each_order():
    a = [f"a{i}" for i in range(6)]
    b = [f"b{i}" for i in range(6)]
    got = team_draft(a, b, 8, random.Random(3))
    assert len(got.ids) == 8 and len(set(got.ids)) == 8
    assert [i for i, t in zip(got.ids, got.teams, strict=True) if t == "A"] == a[:4]
    assert [i for i, t in zip(got.ids, got.teams, strict=True) if t == "B"] == b[:4]
    assert all(i.startswith(t.lower()) for i, t in zip(got.ids, got.teams, strict=True))


@pytest.mark.parametrize("seed", range(30))
def test_invariants_on_overlapping_lists(seed):
    rng = random.Random(seed)
    pool = [f"p{i}" for i in range(15)]
    a = rng.sample(pool, 10)
    b = rng.sample(pool, 10)
    got = team_draft(a, b, 10, random.Random(seed))
    assert len(got.ids) == 10 and len(set(got.ids)) == 10
    for team, ranking in (("A", a), ("B", b)):
        mine = [i for i, t in zip(got.ids, got.teams, strict=True) if t == team]
        assert mine == sorted(mine, key=ranking.index)  # in its own ranking's order
        # a pick is the team's best product not already shown
        for pos, (pid, t) in enumerate(zip(got.ids, got.teams, strict=True)):
            if t == team:
                before = set(got.ids[:pos])
                assert pid == next(x for x in ranking if x not in before)
    # teams never lead each other by more than one pick while both lists last
    for n in range(1, 11):
        assert abs(got.teams[:n].count("A") - got.teams[:n].count("B")) <= 1


def test_a_short_list_is_filled_by_the_other_and_k_bounds_the_length():
    got = team_draft(["x"], ["y1", "y2", "y3"], 4, random.Random(0))
    assert sorted(got.ids) == ["x", "y1", "y2", "y3"]
    assert got.teams[got.ids.index("x")] == "A" and got.teams.count("B") == 3
    assert team_draft(["x"], ["x"], 5, random.Random(0)).ids == ("x",)
    assert team_draft([], [], 5, random.Random(0)).ids == ()
    assert team_draft(["a", "b"], ["c"], 0, random.Random(0)).ids == ()
    with pytest.raises(ValueError, match="k must be"):
        team_draft(["a"], ["b"], -1, random.Random(0))


def test_same_seed_same_list_so_page_two_agrees_with_page_one():
    a = [f"a{i}" for i in range(20)]
    b = [f"b{i}" for i in range(20)]
    seed = interleave_seed("u-1", "cordless drill", 20_000, "exp")
    first = team_draft(a, b, 20, random.Random(seed))
    assert team_draft(a, b, 20, random.Random(seed)) == first
    assert team_draft(a, b, 10, random.Random(seed)).ids == first.ids[:10]
    assert interleave_seed("u-1", "  Cordless   DRILL ", 20_000, "exp") == seed
    others = {
        interleave_seed("u-2", "cordless drill", 20_000, "exp"),
        interleave_seed("u-1", "cordless drills", 20_000, "exp"),
        interleave_seed("u-1", "cordless drill", 20_001, "exp"),
        interleave_seed("u-1", "cordless drill", 20_000, "exp2"),
        interleave_seed(None, "cordless drill", 20_000, "exp"),
    }
    assert seed not in others and len(others) == 5


def test_in_experiment_is_a_stable_share_of_shoppers():
    names = [f"pseudo-{i}" for i in range(4000)]
    half = [n for n in names if in_experiment(n, "exp", 0.5)]
    assert 0.45 < len(half) / len(names) < 0.55
    assert half == [n for n in names if in_experiment(n, "exp", 0.5)]  # stable
    # a bigger share keeps everyone already in; another experiment draws afresh
    assert set(half) <= {n for n in names if in_experiment(n, "exp", 0.8)}
    other = {n for n in names if in_experiment(n, "exp-2", 0.5)}
    assert 0.4 < len(other & set(half)) / len(half) < 0.6
    assert not any(in_experiment(n, "exp", 0.0) for n in names)
    assert all(in_experiment(n, "exp", 1.0) for n in names)


def test_credit_counts_clicks_per_team():
    teams = ["A", "B", "A", "B", None]
    assert credit(teams, []) is None
    assert credit(teams, [0]) == "A"
    assert credit(teams, [1, 3, 0]) == "B"
    assert credit(teams, [0, 1]) is None
    assert credit(teams, [0, 0, 0, 1, 3]) == "B"  # a repeated click counts once
    assert credit(teams, [4]) is None  # nobody's pick (a pinned product)
    assert credit(teams, [9]) is None  # outside the list
