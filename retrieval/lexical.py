"""Lexical BM25 encoder whose vectors Qdrant scores with its IDF modifier.

BM25 is split between us and Qdrant. A sparse vector collection created with the IDF
modifier (``EdgeSparseVectorParams(modifier=Modifier.Idf)`` in qdrant-edge,
``SparseVectorParams(modifier=Modifier.IDF)`` in qdrant-client) multiplies every query
value by ``idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))``, computed over the points in
the collection at query time, so the score of a document is ``sum_t idf(t) * q_t * d_t``.
This module supplies the two other factors:

* document value ``d_t = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``, the
  Lucene BM25 term-frequency part (``avgdl`` is fixed at index time);
* query value ``q_t = 1.0`` for every distinct query term. Lucene builds one clause per
  query token occurrence, so a repeated token counts twice there; we count it once, as
  Qdrant's own ``Bm25.embed_query`` and bm25s do. Product queries rarely repeat words,
  and a measurement such as ``2 in. x 4 in.`` would otherwise weigh the unit double.
  ``scripts/bm25_experiment.py`` measured both: the difference is in the noise
  (NDCG@10 0.3964 distinct vs 0.3968 counted, 1,200 Home Depot queries).

Tokens: lowercase, HTML entities decoded, accents folded to ASCII, a small stopword list,
English Snowball stems (PyStemmer). Words in other scripts are kept (see
:func:`_other_script_tokens`): lowercased, stemmed by the Snowball stemmer of the script's
main language where one exists (Cyrillic: Russian, Greek, Arabic, Armenian, Devanagari:
Hindi, Tamil), and split into overlapping character pairs in scripts written without
spaces (Chinese, Japanese, Thai, ...). Text in the Latin script goes through exactly the
same steps as before (tokeniser version 1), so English results do not change. With ``keep_sizes`` a measurement becomes a
canonical number and a canonical unit: ``1/2 in.``, ``1/2 inch`` and ``1/2"`` all give
``0.5 in``; ``1-1/2 in.`` and ``1 1/2 inch`` give ``1.5 in``; ``20-Volt`` and ``20v``
give ``20 v``; ``2x4`` gives ``2 4``. Emitting the glued token (``0.5in``) as well or
instead scored lower on the Home Depot data (NDCG@10 over all 11,795 queries: 0.3798
stemming only, 0.3886 number + unit, 0.3865 number + glued, 0.3672 glued only).

A token becomes a sparse index through CRC-32 of its UTF-8 bytes masked to 31 bits:
stable across processes and machines (unlike ``hash()``) and below ``2**31`` so that it
fits both backends. Two distinct tokens may collide (about one pair in a 50k-word
vocabulary); they then count as one term, identically at index and query time.

Why not qdrant-edge's own ``Bm25`` class: its tokeniser splits ``1/2`` into ``1`` and
``2``, drops ``in`` as a stopword and keeps ``inch`` as a word, so ``1/2 in.`` and
``1/2 inch`` do not share a size token, and it does not fold accents by default. Sizes
matter for hardware search, hence the tokeniser below.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import Stemmer

from core.errors import ShopsearchError

__all__ = ["Bm25Params", "LexicalEncoder", "idf", "token_id"]

CONFIG_KIND = "bm25-sparse-idf"
#: Bump whenever tokenisation or hashing changes: vectors indexed with another
#: version must be rebuilt.
TOKENIZER_VERSION = 2
#: Older versions whose indexes this code still reads. Version 1 dropped every letter
#: outside the Latin script and is otherwise identical: a version-1 index answers as it
#: did (non-Latin query words find nothing there); rebuild it to make such text searchable.
COMPATIBLE_VERSIONS = frozenset({1, TOKENIZER_VERSION})
_INDEX_MASK = 0x7FFFFFFF

# Small stopword list. ``in`` is only dropped as a word: after a number it is a unit and
# becomes part of a size token before stopwords are looked at. ``x`` separates
# dimensions (``2 in. x 4 in.``) and ``w`` is the ``w/`` of "with".
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "the",
        "this",
        "that",
        "to",
        "with",
        "x",
        "w",
    }
)

# Canonical unit -> spellings (regex fragments) that follow a number. Longest first
# inside the alternation is ensured by sorting below.
_UNITS: dict[str, tuple[str, ...]] = {
    "sqft": (r"sq\.?\s*ft\.?", r"sq\.?\s*feet", r"square\s+f(?:ee|oo)t", r"sqft"),
    "cuft": (r"cu\.?\s*ft\.?", r"cubic\s+f(?:ee|oo)t", r"cuft"),
    "in": (r"inch(?:es)?", r"in\.?", r'"', r"''"),
    "ft": (r"f(?:ee|oo)t", r"ft\.?"),
    "gal": (r"gallons?", r"gal\.?"),
    "lb": (r"pounds?", r"lbs?\.?"),
    "oz": (r"fl\.?\s*oz\.?", r"ounces?", r"oz\.?"),
    "v": (r"volts?", r"vac", r"vdc", r"v"),
    "amp": (r"amperes?", r"amps?"),
    "ah": (r"amp\s*hours?", r"ah"),
    "mah": (r"mah",),
    "w": (r"watts?", r"w"),
    "kw": (r"kilowatts?", r"kw"),
    "mm": (r"millimeters?", r"mm\.?"),
    "cm": (r"centimeters?", r"cm\.?"),
    "ml": (r"milliliters?", r"ml\.?"),
    "l": (r"liters?", r"litres?"),
    "qt": (r"quarts?", r"qt\.?"),
    "pt": (r"pints?", r"pt\.?"),
    "yd": (r"yards?", r"yds?\.?"),
    "hp": (r"horsepower", r"hp"),
    "btu": (r"btus?",),
    "gpm": (r"gpm",),
    "gpf": (r"gpf",),
    "psi": (r"psi",),
    "rpm": (r"rpm",),
    "cfm": (r"cfm",),
    "cc": (r"cc",),
    "deg": (r"degrees?", r"deg\.?"),
    "ga": (r"gauge", r"ga\.?"),
    "awg": (r"awg",),
    "mil": (r"mils?",),
    "ton": (r"tons?",),
    "pk": (r"packs?", r"pk"),
    "pc": (r"pieces?", r"pcs?\.?"),
    "ct": (r"count", r"ct\.?"),
    "light": (r"lights?",),
    "gang": (r"gang",),
    "tier": (r"tiers?",),
    "shelf": (r"shel(?:f|ves)",),
    "drawer": (r"drawers?",),
    "door": (r"doors?",),
    "burner": (r"burners?",),
    "outlet": (r"outlets?",),
    "pole": (r"poles?",),
    "way": (r"way",),
    "speed": (r"speeds?",),
    "grit": (r"grit",),
}
# Unit words that stand alone (no number before them) are normalised too, so that the
# query "gallon bucket" meets the title "5 gal. Bucket".
_UNIT_WORDS = {
    "inch": "in",
    "inches": "in",
    "feet": "ft",
    "foot": "ft",
    "gallon": "gal",
    "gallons": "gal",
    "pound": "lb",
    "pounds": "lb",
    "lbs": "lb",
    "ounce": "oz",
    "ounces": "oz",
    "volt": "v",
    "volts": "v",
    "watt": "w",
    "watts": "w",
    "amps": "amp",
    "ampere": "amp",
    "amperes": "amp",
    "quart": "qt",
    "quarts": "qt",
    "yard": "yd",
    "yards": "yd",
}

_NUM = r"\d+-\d+/\d+|\d+/\d+|\d+(?:\.\d+)?|\.\d+"
_UNIT_ALTS: list[tuple[str, str]] = sorted(
    ((alt, unit) for unit, alts in _UNITS.items() for alt in alts),
    key=lambda pair: -len(pair[0]),
)
# Group per unit so the replacement knows which one matched.
_MEASURE_RE = re.compile(
    rf"(?<![a-z0-9.])({_NUM})\s*-?\s*(?:"
    + "|".join(f"(?P<u{i}>{alt})" for i, (alt, _) in enumerate(_UNIT_ALTS))
    + r")(?![a-z0-9])"
)
_UNIT_BY_GROUP = {f"u{i}": unit for i, (_, unit) in enumerate(_UNIT_ALTS)}
# A number followed by a single quote: shoppers type it for inches as often as for
# feet ("3/4' bolt", "8' ladder"); keep the number, drop the ambiguous unit.
_QUOTE_RE = re.compile(rf"(?<![a-z0-9.])({_NUM})\s*'(?!')")
_MIXED_FRACTION_RE = re.compile(r"(?<![\d./-])(\d+)\s+(\d+/\d+)")
_DIMENSION_X_RE = re.compile(r"(?<=\d)\s*(?:x|by)\s*(?=[\d.])")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_APOSTROPHE_RE = re.compile(r"(?<=[a-z])'(?=[a-z])")
_TOKEN_RE = re.compile(r"\d[0-9.]*_[a-z]+|\d+-\d+/\d+|\d+/\d+|\d*\.\d+|[a-z0-9]+")
_PLAIN_TOKEN_RE = re.compile(r"[a-z0-9]+")

_PRE_FOLD = str.maketrans({"\u2122": " ", "\u00ae": " ", "\u00a9": " ", "\u00b0": " deg "})
_POST_FOLD = str.maketrans(
    {
        "\u2044": "/",  # fraction slash, from NFKD of "½"
        "\u2215": "/",
        "\u201c": '"',
        "\u201d": '"',
        "\u2033": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u2032": "'",
        "\u00d7": "x",
        "\u2013": "-",
        "\u2014": "-",
    }
)


def token_id(token: str) -> int:
    """Sparse vector index of a token: CRC-32 of its UTF-8 bytes, masked below 2**31."""
    return zlib.crc32(token.encode("utf-8")) & _INDEX_MASK


def _fold(text: str) -> str:
    """Fold a non-ASCII string to ASCII (accents dropped, fractions and quotes mapped)."""
    # "å¡" is how the Home Depot data spells a degree sign ("90å¡ Elbow").
    text = text.replace("\u00e5\u00a1", " deg ").translate(_PRE_FOLD)
    text = unicodedata.normalize("NFKD", text).translate(_POST_FOLD)
    return text.encode("ascii", "ignore").decode("ascii")


#: Snowball stemmer (PyStemmer name) for the main language of a script.
SCRIPT_STEMMERS = {
    "CYRILLIC": "russian",
    "GREEK": "greek",
    "ARABIC": "arabic",
    "ARMENIAN": "armenian",
    "DEVANAGARI": "hindi",
    "TAMIL": "tamil",
}
#: Scripts written without spaces between words: indexed as overlapping character pairs.
UNSPACED_SCRIPTS = frozenset(
    {"CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}
)


@lru_cache(maxsize=8192)
def _script(char: str) -> str | None:
    """The script of a letter, digit or mark outside the Latin script; None for the rest.

    None covers ASCII, Latin letters (accented ones fold to ASCII), and characters whose
    compatibility form starts with ASCII (fullwidth letters, "½", "№"): the Latin steps
    handle those as they always did. Everything but letters, digits and marks is None too.
    """
    if char.isascii() or ord(char) < 0x370:
        return None
    if unicodedata.category(char)[0] not in "LNM":
        return None
    if unicodedata.normalize("NFKD", char)[:1].isascii():
        return None
    name = unicodedata.name(char, "")
    if not name or "LATIN" in name:
        return None
    return name.split(" ", 1)[0]


def _has_other_script(text: str) -> bool:
    return any(not c.isascii() and _script(c) is not None for c in text)


def _other_script_tokens(run: str, script: str, stemmers: dict[str, Any] | None) -> list[str]:
    """Tokens of one run of letters (and their marks) of a non-Latin script."""
    word = run.lower()
    if script == "CYRILLIC":
        word = word.replace("\u0451", "\u0435")  # ё -> е, as Russian search does
    elif script == "GREEK":  # accents are optional in Greek: drop them, and the final sigma
        decomposed = unicodedata.normalize("NFD", word)
        word = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        word = unicodedata.normalize("NFC", word).replace("\u03c2", "\u03c3")
    if script in UNSPACED_SCRIPTS:
        if len(word) < 2:
            return [word]
        return [word[i : i + 2] for i in range(len(word) - 1)]
    if stemmers is not None:
        language = SCRIPT_STEMMERS.get(script)
        if language is not None:
            stemmer = stemmers.get(language)
            if stemmer is None:
                stemmer = stemmers[language] = Stemmer.Stemmer(language)
            word = stemmer.stemWord(word) or word
    return [word]


@lru_cache(maxsize=65536)
def _canonical_number(num: str) -> str:
    """Write a fraction or decimal in one canonical form ("1-1/2" and "1.50" -> "1.5")."""
    if "/" not in num and "." not in num:
        return num
    try:
        if "/" in num:
            whole, _, frac = num.rpartition("-")
            top, _, bottom = frac.partition("/")
            value = (int(whole) if whole else 0) + int(top) / int(bottom)
        else:
            value = float(num)
    except (ValueError, ZeroDivisionError):
        return num
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def _measure_repl(match: re.Match[str]) -> str:
    unit = _UNIT_BY_GROUP[match.lastgroup or ""]
    return f" {_canonical_number(match.group(1))}_{unit} "


@dataclass(frozen=True)
class Bm25Params:
    """BM25 and tokeniser settings.

    Attributes:
        k1: Term-frequency saturation.
        b: Document length normalisation (0 = none, 1 = full).
        stem: Apply the English Snowball stemmer to words.
        keep_sizes: Keep measurements ("1/2 in.", "20-Volt", "2x4") as normalised tokens.
    """

    k1: float = 1.2
    b: float = 0.75
    stem: bool = True
    keep_sizes: bool = True


class _Tokenizer:
    """Text -> tokens.

    ``size_mode`` picks what a measurement ``0.5_in`` emits: ``num+unit`` (``0.5``,
    ``in``; the default, best measured), ``glued`` (``0.5in``), ``num+glued``
    (``0.5``, ``0.5in``) or ``num+unit+glued``. The other modes are kept for
    ``scripts/bm25_experiment.py``.
    """

    def __init__(self, stem: bool, keep_sizes: bool, size_mode: str = "num+unit") -> None:
        if size_mode not in ("num+unit", "glued", "num+glued", "num+unit+glued"):
            raise ValueError(f"unknown size_mode {size_mode!r}")
        self.stem = stem
        self.keep_sizes = keep_sizes
        self.size_mode = size_mode
        self._stemmer = Stemmer.Stemmer("english") if stem else None
        self._other_stemmers: dict[str, Any] | None = {} if stem else None
        self._word_cache: dict[str, str | None] = {}

    def _word(self, word: str) -> str | None:
        """Normalise one alphanumeric token: None for a stopword."""
        if word in STOPWORDS:
            return None
        unit = _UNIT_WORDS.get(word) if self.keep_sizes else None
        if unit is not None:
            return unit
        if self._stemmer is not None and word.isalpha():
            return self._stemmer.stemWord(word)
        return word

    def _emit(self, token: str, out: list[str]) -> None:
        number, _, unit = token.partition("_")
        mode = self.size_mode
        if mode != "glued":
            out.append(number)
        if mode in ("num+unit", "num+unit+glued"):
            out.append(unit)
        if mode != "num+unit":
            out.append(number + unit)

    def __call__(self, text: str) -> list[str]:
        if not text:
            return []
        if "&" in text:
            text = html.unescape(text)
        if not text.isascii() and _has_other_script(text):
            return self._mixed(text)
        return self._latin(text)

    def _mixed(self, text: str) -> list[str]:
        """Text with letters of other scripts: their runs apart, the rest as Latin text."""
        text = unicodedata.normalize("NFC", text)
        out: list[str] = []
        rest: list[str] = []
        run: list[str] = []
        run_script = ""

        def flush_run() -> None:
            if run:
                out.extend(_other_script_tokens("".join(run), run_script, self._other_stemmers))
                run.clear()

        for char in text:
            script = None if char.isascii() else _script(char)
            if script is not None and unicodedata.category(char) == "Nd":
                char, script = str(unicodedata.decimal(char)), None  # "٣" -> "3"
            if script is None:
                flush_run()
                rest.append(char)
                continue
            if not run and unicodedata.category(char)[0] == "M":
                continue  # a mark with no letter of its script before it
            if rest:
                out.extend(self._latin("".join(rest)))
                rest.clear()
            if not run:
                run_script = script
            run.append(char)
        flush_run()
        if rest:
            out.extend(self._latin("".join(rest)))
        return out

    def _latin(self, text: str) -> list[str]:
        """The version-1 steps: fold to ASCII, sizes, words, stopwords, English stems."""
        if not text.isascii():
            text = _fold(text)
        text = text.lower()
        if "'" in text:
            text = _APOSTROPHE_RE.sub("", text)
        if not self.keep_sizes:
            raw = _PLAIN_TOKEN_RE.findall(text)
        else:
            if "," in text:
                text = _THOUSANDS_RE.sub("", text)
            if "/" in text:
                text = _MIXED_FRACTION_RE.sub(r"\1-\2", text)
            text = _DIMENSION_X_RE.sub(" x ", text)
            text = _MEASURE_RE.sub(_measure_repl, text)
            if "'" in text:
                text = _QUOTE_RE.sub(r" \1 ", text)
            raw = _TOKEN_RE.findall(text)
        out: list[str] = []
        cache = self._word_cache
        for tok in raw:
            if "_" in tok:
                self._emit(tok, out)
                continue
            if "/" in tok or "." in tok:
                out.append(_canonical_number(tok))
                continue
            word = cache.get(tok, "")
            if word == "":
                word = self._word(tok)
                if len(cache) < 500_000:
                    cache[tok] = word
            if word is not None:
                out.append(word)
        return out


class LexicalEncoder:
    """Encode documents and queries as BM25 sparse vectors for a Qdrant IDF collection.

    Args:
        params: BM25 and tokeniser settings; defaults when None.
        avg_doc_len: Mean document length in tokens over the catalog; required by
            ``encode_documents``, set by ``fit_avg_len`` or from a stored config.
    """

    def __init__(self, params: Bm25Params | None = None, avg_doc_len: float | None = None):
        self.params = params or Bm25Params()
        if avg_doc_len is not None and not avg_doc_len > 0:
            raise ValueError(f"avg_doc_len must be positive, got {avg_doc_len}")
        self.avg_doc_len = avg_doc_len
        self._tokenizer = _Tokenizer(self.params.stem, self.params.keep_sizes)

    def tokenize(self, text: str) -> list[str]:
        """Split text into normalised tokens (lowercased, folded, sizes kept, stemmed)."""
        return self._tokenizer(text)

    def fit_avg_len(self, texts: Iterable[str]) -> float:
        """Compute the mean token count of ``texts`` and store it as ``avg_doc_len``.

        Raises:
            ValueError: If there are no texts or none of them has a token.
        """
        total = count = 0
        for text in texts:
            total += len(self._tokenizer(text))
            count += 1
        if count == 0 or total == 0:
            raise ValueError("cannot fit the average document length: no tokens")
        self.avg_doc_len = total / count
        return self.avg_doc_len

    def encode_documents(self, texts: Sequence[str]) -> list[tuple[list[int], list[float]]]:
        """Encode documents as (indices, values) with BM25 term-frequency weights.

        Raises:
            ValueError: If ``avg_doc_len`` is unknown.
        """
        if self.avg_doc_len is None:
            raise ValueError("avg_doc_len unknown: call fit_avg_len() or pass it in")
        k1, b = self.params.k1, self.params.b
        norm_base = k1 * (1.0 - b)
        norm_len = k1 * b / self.avg_doc_len
        out: list[tuple[list[int], list[float]]] = []
        for text in texts:
            tokens = self._tokenizer(text)
            counts = Counter(token_id(tok) for tok in tokens)
            norm = norm_base + norm_len * len(tokens)
            indices = sorted(counts)
            values = [counts[i] * (k1 + 1.0) / (counts[i] + norm) for i in indices]
            out.append((indices, values))
        return out

    def encode_query(
        self, text: str, extra: Mapping[str, float] | None = None
    ) -> tuple[list[int], list[float]]:
        """Encode a query: weight 1.0 per distinct token; empty lists when it has none.

        Args:
            text: The query.
            extra: Token -> weight of tokens to add (a synonym's,
                :meth:`retrieval.synonyms.SynonymMatcher.expand`); a token the text holds
                keeps 1.0.
        """
        weights = dict.fromkeys((token_id(tok) for tok in self._tokenizer(text)), 1.0)
        for tok, w in (extra or {}).items():
            i = token_id(tok)
            if i not in weights and w > 0:
                weights[i] = float(w)
        indices = sorted(weights)
        return indices, [weights[i] for i in indices]

    def config(self) -> dict[str, Any]:
        """JSON-able description of the encoder, to store in the index manifest."""
        return {
            "kind": CONFIG_KIND,
            "tokenizer_version": TOKENIZER_VERSION,
            "hash": "crc32-utf8-mask31",
            "query_weight": "distinct",
            "avg_doc_len": self.avg_doc_len,
            **asdict(self.params),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LexicalEncoder:
        """Rebuild an encoder from ``config()`` output.

        Raises:
            ShopsearchError: The config is of another kind or tokeniser version (rebuild
                the index).
        """
        if config.get("kind") != CONFIG_KIND:
            raise ShopsearchError(
                f"not a {CONFIG_KIND} config: {config.get('kind')!r}: rebuild the index"
            )
        if config.get("tokenizer_version") not in COMPATIBLE_VERSIONS:
            raise ShopsearchError(
                f"index built with tokenizer version {config.get('tokenizer_version')}, "
                f"this code is version {TOKENIZER_VERSION}: rebuild the index"
            )
        params = Bm25Params(
            k1=float(config["k1"]),
            b=float(config["b"]),
            stem=bool(config["stem"]),
            keep_sizes=bool(config["keep_sizes"]),
        )
        avg = config.get("avg_doc_len")
        return cls(params, avg_doc_len=None if avg is None else float(avg))


def idf(doc_freq: int, n_docs: int) -> float:
    """Qdrant's IDF modifier: ``ln(1 + (N - n + 0.5) / (n + 0.5))``."""
    return math.log(1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
