"""A seeded typing-noise model: what a shopper's fingers do to a query.

Used to train robust models (``shopsearch train retriever|reranker --typo-rate``) and to
measure robustness (``shopsearch bench``): one model for both, so training and measurement
agree on what a typo is.

Each letter of the words of a text is perturbed with probability ``rate``, by one of three edits drawn
uniformly: a swap with the next letter, a drop, or a substitution by a neighbouring key on a
QWERTY keyboard. Tokens with a digit, spaces and punctuation are never touched (sizes and
model numbers stay as typed, as the corrector leaves them).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ShopsearchError

__all__ = ["EDITS", "Perturbation", "TypoNoise", "perturb"]

EDITS = ("swap", "drop", "neighbour")
_WORD_RE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]+(?![A-Za-z0-9])")
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
#: Letter -> the letters next to it on a QWERTY keyboard (same row and the rows above/below).
NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_ROWS):
    for _c, _ch in enumerate(_row):
        near = []
        for dr in (-1, 0, 1):
            rr = _r + dr
            if not 0 <= rr < len(_ROWS):
                continue
            for dc in (-1, 0, 1):
                cc = _c + dc
                if (dr, dc) != (0, 0) and 0 <= cc < len(_ROWS[rr]):
                    near.append(_ROWS[rr][cc])
        NEIGHBOURS[_ch] = "".join(near)


@dataclass(frozen=True)
class Perturbation:
    """What :func:`perturb` did.

    Attributes:
        text: The perturbed text.
        edits: Letters edited.
        letters: Letters that could have been edited (ASCII letters of the input).
    """

    text: str
    edits: int
    letters: int


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ShopsearchError(f"typo rate must be between 0 and 1 (a share of letters), got {rate}")


def _noisy_word(word: str, rate: float, rng: random.Random) -> tuple[str, int]:
    out: list[str] = []
    edits = i = 0
    while i < len(word):
        c = word[i]
        if rng.random() >= rate:
            out.append(c)
            i += 1
            continue
        edits += 1
        edit = EDITS[rng.randrange(len(EDITS))]
        nxt = word[i + 1] if i + 1 < len(word) else ""
        if edit == "swap" and nxt and nxt != c:
            out += [nxt, c]
            i += 2
            continue
        i += 1
        if edit == "neighbour":
            near = NEIGHBOURS[c.lower()]
            sub = near[rng.randrange(len(near))]
            out.append(sub.upper() if c.isupper() else sub)
        # a drop, or a swap with nothing to swap with, drops the letter
    return "".join(out), edits


def perturb(text: str, rate: float, rng: random.Random) -> Perturbation:
    """Perturbs each letter of the words of ``text`` with probability ``rate``.

    Only words of ASCII letters are touched; a token with a digit (``dcd790``, ``3/4``,
    ``2x4``) is kept as it is, like the spaces and punctuation.

    Args:
        text: The query.
        rate: Share of letters to edit, in [0, 1].
        rng: The random source (seed it for reproducible noise).

    Returns:
        :class:`Perturbation`: the new text, edits made, letters eligible.

    Raises:
        ShopsearchError: ``rate`` outside [0, 1].
    """
    _check_rate(rate)
    words = list(_WORD_RE.finditer(text))
    letters = sum(m.end() - m.start() for m in words)
    if rate == 0 or not letters:
        return Perturbation(text, 0, letters)
    pieces: list[str] = []
    at = edits = 0
    for m in words:
        new, n = _noisy_word(m.group(0), rate, rng)
        pieces += [text[at : m.start()], new]
        at = m.end()
        edits += n
    pieces.append(text[at:])
    return Perturbation("".join(pieces), edits, letters)


class TypoNoise:
    """Seeded noise for many texts: the same (seed, key) always gives the same typos.

    Args:
        rate: Share of letters edited, in [0, 1].
        seed: Base seed.

    Raises:
        ShopsearchError: ``rate`` outside [0, 1].
    """

    def __init__(self, rate: float, seed: int = 0) -> None:
        _check_rate(rate)
        self.rate = rate
        self.seed = seed

    def __call__(self, text: str, key: str | int = "") -> str:
        """``text`` with typos; ``key`` (e.g. a query id) picks the noise independently of the
        order texts are seen in."""
        rng = random.Random(zlib.crc32(f"{self.seed}\x00{key}\x00{text}".encode()))
        return perturb(text, self.rate, rng).text

    def many(self, texts: Sequence[str], keys: Sequence[str | int] | None = None) -> list[str]:
        """:meth:`__call__` over texts (keys default to the positions)."""
        keys = keys if keys is not None else range(len(texts))
        return [self(t, k) for t, k in zip(texts, keys, strict=True)]
