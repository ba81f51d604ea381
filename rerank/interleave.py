"""Team-draft interleaving: one list made of two rankers' picks, and who gets each click.

    team_draft(a, b, k, rng) -> Interleaved(ids, teams)
    interleave_seed(pseudonym, query, day, experiment) -> int
    in_experiment(pseudonym, experiment, share) -> bool
    credit(teams, clicked) -> "A" | "B" | None

Team-draft interleaving (Radlinski, Kurup and Joachims, "How does clickthrough data reflect
retrieval quality?", CIKM 2008, Algorithm 2): like captains picking teams, the two rankings
take turns; whichever team has picked fewer products picks next, a coin decides when they have
picked as many, and a team's pick is its own ranking's best product not yet in the list. Each
shown product belongs to the team that picked it; a click credits that team, and the team
with more clicks in a search wins it (equal counts tie). Chapelle, Joachims, Radlinski and Yue
("Large-scale validation and analysis of interleaved search evaluation", TOIS 2012) found it
agrees with offline judgments and needs one to two orders of magnitude fewer queries than an
A/B test of the same rankers.

Everything here is pure: the coin comes from the ``rng`` given, and the service seeds it with
:func:`interleave_seed` (the shopper's pseudonym, the query, the UTC day and the experiment),
so the second page of a search merges the same two rankings into the same list as the first.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Team = Literal["A", "B"]

__all__ = ["Interleaved", "Team", "credit", "in_experiment", "interleave_seed", "team_draft"]


@dataclass(frozen=True)
class Interleaved:
    """A merged list: ``ids[i]`` was picked by team ``teams[i]`` ("A" or "B")."""

    ids: tuple[str, ...]
    teams: tuple[Team, ...]


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random) -> Interleaved:
    """Team-draft interleaving of two rankings (Radlinski et al., CIKM 2008, Algorithm 2).

    Each round, the team with fewer picks picks next (a coin from ``rng`` when equal); a pick
    is that team's highest-ranked product not already in the list. The paper stops when either
    ranking runs out; here the other one then fills the list with its remaining products (its
    team's picks), so the list is as long as the shopper asked for whenever the two rankings
    hold enough products between them.

    Args:
        a: Ranking A, product ids best first (no repeats).
        b: Ranking B, product ids best first (no repeats).
        k: Length of the merged list (>= 0).
        rng: The coin: ``random.Random`` (one ``getrandbits(1)`` per tied round).

    Returns:
        ``Interleaved`` of length ``min(k, |a ∪ b|)``, no product twice; the products of each
        team appear in the order of its own ranking.

    Raises:
        ValueError: ``k`` is negative.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids: list[str] = []
    teams: list[Team] = []
    seen: set[str] = set()
    at = {"A": 0, "B": 0}  # next position to look at in each ranking
    picks = {"A": 0, "B": 0}
    lists = {"A": a, "B": b}

    def next_of(team: Team) -> str | None:
        ranking, i = lists[team], at[team]
        while i < len(ranking) and ranking[i] in seen:
            i += 1
        at[team] = i
        return ranking[i] if i < len(ranking) else None

    while len(ids) < k:
        head_a, head_b = next_of("A"), next_of("B")
        if head_a is None and head_b is None:
            break
        if head_b is None:
            team: Team = "A"
        elif head_a is None:
            team = "B"
        elif picks["A"] < picks["B"] or (picks["A"] == picks["B"] and rng.getrandbits(1)):
            team = "A"
        else:
            team = "B"
        pick = head_a if team == "A" else head_b
        assert pick is not None
        ids.append(pick)
        teams.append(team)
        seen.add(pick)
        picks[team] += 1
    return Interleaved(tuple(ids), tuple(teams))


def interleave_seed(pseudonym: str | None, query: str, day: int, experiment: str) -> int:
    """The coin's seed of one shopper's query on one UTC day in one experiment.

    The query is lower-cased with its whitespace collapsed, so "Drill " and "drill" merge alike;
    the day is ``int(epoch_seconds // 86400)``. Every page of that search, on that day, gets the
    same coins, hence the same merged list (when the two rankings are the same).

    Returns:
        A 64-bit integer (BLAKE2b of the parts).
    """
    text = " ".join(query.lower().split())
    parts = "\x1f".join((experiment, pseudonym or "", text, str(int(day))))
    digest = hashlib.blake2b(parts.encode("utf-8"), digest_size=8).digest()
    return struct.unpack(">Q", digest)[0]


def in_experiment(pseudonym: str, experiment: str, share: float) -> bool:
    """Whether a shopper is in an experiment: ``hash(pseudonym, experiment)`` in [0, 1) below
    ``share``, so a shopper stays in (or out) for the whole experiment, and another experiment
    draws its shoppers afresh.

    Args:
        pseudonym: The shopper's pseudonym (never the raw id).
        experiment: The experiment's name.
        share: The share of shoppers in it, 0..1.
    """
    if share <= 0.0:
        return False
    digest = hashlib.blake2b(
        f"{experiment}\x1f{pseudonym}".encode(), digest_size=8, person=b"interleave"
    ).digest()
    return struct.unpack(">Q", digest)[0] / 2.0**64 < share


def credit(teams: Sequence[str | None], clicked: Iterable[int]) -> Team | None:
    """Team-draft credit of one search: the team whose picks got more clicks.

    Args:
        teams: The team of each shown product, in shown order ("A", "B"; None for a product
            neither team picked, such as a pinned one: its clicks count for nobody).
        clicked: 0-based indices into ``teams`` of the clicked products (a product clicked
            twice counts once).

    Returns:
        "A" or "B" for the winner; None for a tie (no click, or as many clicks each).
    """
    counts = {"A": 0, "B": 0}
    for i in set(clicked):
        if 0 <= i < len(teams) and teams[i] in counts:
            counts[teams[i]] += 1  # type: ignore[index]
    if counts["A"] == counts["B"]:
        return None
    return "A" if counts["A"] > counts["B"] else "B"
