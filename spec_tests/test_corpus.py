"""fdbert.compress.corpus's text handling: the pieces the training files are cut into (no download)."""

from fdbert.compress.corpus import LONG_WORDS, long_passages, passages, sentences


def _words(n, tag):
    return " ".join(f"{tag}{i}" for i in range(n - 1)) + f" {tag}end."


def test_long_passages_are_consecutive_runs_within_the_word_bounds():
    lengths = [30, 45, 12, 80, 60, 7, 25, 210, 40, 40, 40, 5, 90, 90, 30]
    sents = [_words(n, f"s{j}w") for j, n in enumerate(lengths)]
    got = long_passages(sents)
    assert got, "no passage"
    lo, hi = LONG_WORDS
    used = []
    for p in got:
        assert lo <= len(p.split()) <= hi, p
        parts = [s for s in sents if s in p]
        assert " ".join(parts) == p                       # whole sentences, in order, nothing else
        idx = [sents.index(s) for s in parts]
        assert idx == list(range(idx[0], idx[-1] + 1))    # consecutive
        used += idx
    assert len(used) == len(set(used))                    # non-overlapping
    assert 7 not in used                                  # a sentence longer than the bound is dropped
    # hand-counted: 30+45+12+80 -> 167; 60+7+25 = 92 then 210 breaks the run (dropped, as is 92);
    # 40+40+40 -> 120; 5+90 -> 95, +90 -> 185; 30 is left over
    assert [len(p.split()) for p in got] == [167, 120, 185]


def test_short_passages_cycle_two_three_four_sentences():
    sents = [f"Sentence number {i} is here." for i in range(12)]
    got = passages(sents)
    assert [p.count("Sentence") for p in got] == [2, 3, 4, 2]
    assert sentences(" ".join(sents)) == sents
