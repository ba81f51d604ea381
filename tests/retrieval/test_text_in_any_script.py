"""Query and product text in any script: a query without letters or digits is empty, every
script reaches BM25, and Latin text tokenises as in tokeniser version 1."""

from __future__ import annotations

import pytest

from core.errors import ShopsearchError

# ---------------------------------------------------------------- queries without words


@pytest.mark.parametrize("query", ["", "   ", "???", "🔥🔥", "- / * !", "\u00a0\u2014"])
def test_query_without_letters_or_digits_is_empty(query: str) -> None:
    from retrieval.retriever import check_query

    with pytest.raises(ShopsearchError, match="query is empty"):
        check_query(query)


@pytest.mark.parametrize("query", [" drill ", "рулетка", "2x4", "½", "電動ドリル"])
def test_query_with_a_word_in_any_script_is_kept(query: str) -> None:
    from retrieval.retriever import check_query

    assert check_query(query) == query.strip()


# ---------------------------------------------------------------- text in any script for BM25

# Expected tokens written down from tokeniser version 1: Latin text must not change.
LATIN_V1 = [
    (
        'Crème brûlée 1/2 in. Straße Ærø façade ½" pipe',
        ["creme", "brule", "0.5", "in", "strae", "r", "facad", "0.5", "in", "pipe"],
    ),
    (
        "DeWalt 20-Volt MAX™ 2x4 µF 90å¡ elbow",
        ["dewalt", "20", "v", "max", "2", "4", "f", "90", "deg", "elbow"],
    ),
    ("Ｆｕｌｌｗｉｄｔｈ №5 ① ²", ["fullwidth", "no5", "1", "2"]),
    ("naïve Zoë “quoted” 3' 8’", ["naiv", "zoe", "quot", "3", "8"]),
    ("Black &amp; Decker &#39;s 5 gal. bucket", ["black", "decker", "s", "5", "gal", "bucket"]),
]


@pytest.mark.parametrize(("text", "tokens"), LATIN_V1)
def test_latin_text_tokenises_as_in_version_1(text: str, tokens: list[str]) -> None:
    from retrieval.lexical import LexicalEncoder

    assert LexicalEncoder().tokenize(text) == tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Рулетка измерительная 5 м", ["рулетк", "измерительн", "5", "м"]),
        ("рулетка", ["рулетк"]),
        ("Дрель 18В", ["дрел", "18", "в"]),
        ("Ёлка", ["елк"]),
        ("Ελληνικά τρυπάνι", ["ελλην", "τρυπαν"]),
        ("電動ドリル 18V", ["電動", "動ド", "ドリ", "リル", "18", "v"]),
        ("سلم ٣ متر", ["سلم", "3", "متر"]),
        ("Drill дрель", ["drill", "дрел"]),
    ],
)
def test_other_scripts_reach_bm25(text: str, tokens: list[str]) -> None:
    from retrieval.lexical import LexicalEncoder

    assert LexicalEncoder().tokenize(text) == tokens


def test_version_1_indexes_are_still_read() -> None:
    from retrieval.lexical import TOKENIZER_VERSION, LexicalEncoder

    config = LexicalEncoder(avg_doc_len=5.0).config()
    assert config["tokenizer_version"] == TOKENIZER_VERSION == 2
    assert LexicalEncoder.from_config({**config, "tokenizer_version": 1}).avg_doc_len == 5.0
