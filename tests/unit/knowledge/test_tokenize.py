"""The BM25 tokenizer: words for European text, unigrams + bigrams for Chinese/Japanese."""

from __future__ import annotations

from proxy.knowledge.tokenize import stem, tokenize


def test_english_is_lowercased_stemmed_and_stopwords_go():
    assert tokenize("What are the Store's opening HOURS?") == ["store", "opening", "hour"]
    assert tokenize("Policies, boxes and classes; bus") == ["policy", "box", "class", "bus"]


def test_full_width_forms_are_normalised():
    assert tokenize("ＡＢＣ　１２３") == ["abc", "123"]


def test_chinese_runs_become_unigrams_and_bigrams():
    assert sorted(tokenize("退货政策")) == sorted(["退", "货", "政", "策", "退货", "货政", "政策"])


def test_mixed_scripts_split_at_script_boundaries_and_punctuation_goes():
    terms = tokenize("iPhone15的电池，能用多久？")
    assert "iphone15" in terms and "电池" in terms and "多久" in terms
    assert "的" not in terms  # a particle's unigram is dropped, its bigrams stay
    assert "的电" in terms
    assert not any(ch in "".join(terms) for ch in "，？")


def test_japanese_kana_and_kanji_are_both_indexed():
    terms = tokenize("営業時間はいつですか")
    assert {"営業", "時間", "いつ"} <= set(terms)


def test_european_accents_stay_part_of_words():
    assert tokenize("Rückgabe innerhalb 30 Tage, café") == [
        "rückgabe",
        "innerhalb",
        "30",
        "tage",
        "café",
    ]


def test_stem_keeps_short_words_and_numbers():
    assert [stem(w) for w in ("is", "gas", "1990s", "address", "status", "days")] == [
        "is",
        "gas",
        "1990",
        "address",
        "status",
        "day",
    ]
