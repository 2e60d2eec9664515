"""SQuAD scoring (tinykd/squad.py) against values worked out by hand with the official scripts' rules, and the
n-best answer search on hand-built windows whose winner is known."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from tinykd import squad
from tinykd.squad import exact_match_score, f1_score, normalize_answer

# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("text, expected", [
    ("The Denver Broncos", "denver broncos"),
    ("theater another anthem", "theater another anthem"),  # articles only as whole words
    ("A the AN an", ""),
    ("U.S. Army", "us army"),  # punctuation inside a word goes, joining its pieces
    ("don't stop", "dont stop"),
    ("A.n apple", "apple"),  # punctuation first: "A.n" becomes the article "an", then goes
    ("the-end", "theend"),  # ... and "the-end" becomes one word, no article left
    ("  many \t spaces\n here ", "many spaces here"),
    ("“quoted” – text… ¿sí?", "“quoted” – text… ¿sí"),  # only ASCII punctuation (string.punctuation) is removed
    ("Ｔhe", "ｔhe"),  # a full-width letter is not the article
    ("", ""),
    ("...", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


# ----------------------------------------------------------------------------- exact match and F1


def test_exact_match_after_normalisation():
    assert exact_match_score("The  Broncos!", "broncos") == 1.0
    assert exact_match_score("Broncos", "Denver Broncos") == 0.0
    assert exact_match_score("", "") == 1.0


def test_f1_partial_overlap_and_multiplicity():
    # pred "cat sat on mat" (4 words), gold "cat on mat" (3): 3 shared, P = 3/4, R = 1, F1 = 2PR/(P+R) = 6/7
    assert f1_score("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
    # a repeated word counts as often as both sides have it: "paris paris" vs "paris" shares 1 (not 2, not a set's
    # 1-of-1): P = 1/2, R = 1, F1 = 2/3
    assert f1_score("Paris Paris", "Paris") == pytest.approx(2 / 3)
    # "new new york" vs "new york new york": shared new x2, york x1 = 3; P = 3/3, R = 3/4, F1 = 6/7
    assert f1_score("new new york", "new york new york") == pytest.approx(6 / 7)
    assert f1_score("red", "blue") == 0.0
    assert f1_score("Paris", "paris.") == 1.0


def test_f1_empty_answers_v1_and_v2():
    # v1.1: no shared word is 0, even for two empty answers (exact match still says 1)
    assert f1_score("", "") == 0.0 and f1_score("", "Paris") == 0.0 and f1_score("the", "") == 0.0
    # v2.0: an empty side scores 1 only against an empty side; "the" normalises to nothing
    assert f1_score("", "", version_2=True) == 1.0
    assert f1_score("the", "", version_2=True) == 1.0
    assert f1_score("", "Paris", version_2=True) == 0.0 and f1_score("Paris", "", version_2=True) == 0.0
    assert f1_score("the cat", "a cat", version_2=True) == 1.0  # non-empty sides: the v1.1 rule


def test_scores_max_over_references_and_missing_predictions():
    references = {"q1": ["Denver Broncos", "Broncos of Denver"], "q2": ["Paris"], "q3": ["blue whale"]}
    predictions = {"q1": "Broncos", "q2": "paris.", "q4": "not asked"}
    # q1: EM 0 against both; F1 vs "denver broncos" = 2*(1)(1/2)/(3/2) = 2/3, vs "broncos of denver" = 2*(1)(1/3)/(4/3)
    #     = 1/2; best 2/3.  q2: EM 1, F1 1.  q3: no prediction, 0 and 0.  q4 is not a reference: ignored.
    got = squad.scores(predictions, references)
    assert got["squad_em"] == pytest.approx(1 / 3)
    assert got["squad_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert squad.scores({"q2": ""}, {"q2": ["Paris"]}) == {"squad_f1": 0.0, "squad_em": 0.0}  # empty prediction


def test_scores_version_2_no_answer():
    references = {"a": [], "b": ["Paris"], "c": ["", "the"]}  # c's answers normalise to nothing: no answer
    predictions = {"a": "", "b": "", "c": "An"}  # "An" normalises to "": a correct abstention
    got = squad.scores(predictions, references, version_2=True)
    assert got == {"squad_em": pytest.approx(2 / 3), "squad_f1": pytest.approx(2 / 3)}
    assert squad.scores({"a": "Paris"}, {"a": []}, version_2=True) == {"squad_f1": 0.0, "squad_em": 0.0}
    # v2.0 drops a reference that normalises to nothing when the question has a real one: "" no longer matches "the"
    assert squad.scores({"d": ""}, {"d": ["the", "Paris"]}, version_2=True) == {"squad_f1": 0.0, "squad_em": 0.0}
    assert squad.scores({"d": ""}, {"d": ["the", "Paris"]}) == {"squad_f1": 0.0, "squad_em": 1.0}  # v1.1 keeps it
    with pytest.raises(ValueError, match="'a' has no reference"):  # v1.1 has no "no answer"
        squad.scores({"a": ""}, {"a": []})


# ----------------------------------------------------------------------------- the answer search

CONTEXT = "alpha beta gamma delta epsilon"  # alpha 0-5, beta 6-10, gamma 11-16, delta 17-22, epsilon 23-30
Q = [-1, -1]  # question and special tokens
WINDOW_1 = [Q, Q, Q, Q, [0, 5], [6, 10], [11, 16], Q]  # [CLS] q q [SEP] alpha beta gamma [SEP]
WINDOW_2 = [Q, Q, Q, Q, [11, 16], [17, 22], [23, 30], Q]  # [CLS] q q [SEP] gamma delta epsilon [SEP]
SHORT = "one two three"
WINDOW_3 = [Q, Q, Q, [0, 3], [4, 7], [8, 13], Q]  # [CLS] q [SEP] one two three [SEP]


def features() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"id": ["q1", "q1", "q2"], "context": [CONTEXT, CONTEXT, SHORT],
                                       "offset_mapping": [WINDOW_1, WINDOW_2, WINDOW_3],
                                       "answers": [["delta epsilon"], ["delta epsilon"], ["two"]]})


def logits() -> tuple[list[np.ndarray], list[np.ndarray]]:
    # window 1: a question token has the highest start and end (10 + 10) but is never an answer; the best context
    #   span is beta..beta = 2 + 2.5 = 4.5. [CLS] = 4 + 4 = 8.
    # window 2: delta..epsilon = 3 + 3 = 6 wins; delta..gamma (end 2.9 before start) is no span; delta..delta = 3 + 1.
    #   [CLS] = 3 + 3.5 = 6.5.
    # q2's window: the highest start (three, 5) lies after the highest end (one, 4).
    start = [np.array([4, 10, 0, 0, 0, 2, 0, 0.]), np.array([3, 0, 0, 0, 0, 3, 0, 0.]),
             np.array([0, 0, 0, 1, 2, 5, 0.])]
    end = [np.array([4, 10, 0, 0, 0, 2.5, 0, 0]), np.array([3.5, 0, 0, 0, 2.9, 1, 3, 0]),
           np.array([0, 0, 0, 4, 3.5, -1, 0])]
    return start, end


def search(**kwargs) -> dict[str, str]:
    settings = {"n_best": 20, "max_answer_len": 30} | kwargs
    return squad.best_answers(features(), *logits(), **settings)


def test_best_span_over_windows():
    # q1: window 2's delta..epsilon (6) beats window 1's beta (4.5).
    # q2: two..two = 2 + 3.5 = 5.5 beats one..one = 1 + 4 = 5, one..two = 4.5 and three..three = 5 - 1 = 4;
    # three..one (5 + 4 = 9) ends before it starts.
    assert search() == {"q1": "delta epsilon", "q2": "two"}


def test_max_answer_len_rejects_long_spans():
    # delta..epsilon has 2 tokens: with at most 1, window 1's beta (4.5) beats window 2's delta (4) and epsilon (3)
    assert search(max_answer_len=1)["q1"] == "beta"


def test_n_best_limits_the_candidates():
    # candidates are taken over the whole window, [CLS] and question tokens included, before any filtering.
    # n_best=1: q1's are a question token (window 1) and [CLS] (window 2, its tie with delta going to the earlier
    # position); q2's only start (three) lies after its only end (one). No valid span: no answer.
    assert search(n_best=1) == {"q1": "", "q2": ""}
    # n_best=2 adds delta and epsilon in window 2, and two as q2's second start and end
    assert search(n_best=2) == {"q1": "delta epsilon", "q2": "two"}


def test_version_2_null_answer():
    # null score: the lowest [CLS] score over q1's windows, 6.5 (not window 1's 8); 6.5 > 6 answers nothing
    assert search(version_2=True)["q1"] == ""
    # with a threshold of 1: 6.5 > 6 + 1 is false, the span stands (with the highest [CLS] score, 8, it would not)
    assert search(version_2=True, null_threshold=1.0)["q1"] == "delta epsilon"
    assert search(null_threshold=-5.0)["q1"] == "delta epsilon"  # v1: [CLS] never answers


def test_logits_must_match_the_tokens():
    start, end = logits()
    start[0] = np.append(start[0], 0.0)  # padded
    with pytest.raises(ValueError, match="feature 0 has 8 tokens but 9 start"):
        squad.best_answers(features(), start, end, n_best=20, max_answer_len=30)


def test_references_once_per_example():
    assert squad.references(features()) == {"q1": ["delta epsilon"], "q2": ["two"]}


# ----------------------------------------------------------------------------- the floor


def test_first_words_baseline():
    contexts = {"a": "Paris is the capital of France", "b": "The river Seine flows north",
                "c": "Rome was not built in a day"}
    references = {"a": ["Paris"], "b": ["river Seine", "Seine"], "c": ["not built in a day"]}
    # first answers' word counts 1, 2, 5: median 2, so predict two words.
    # a: "Paris is" vs "paris": P 1/2, R 1, F1 2/3.  b: "The river" -> "river" vs "river seine": P 1, R 1/2, F1 2/3
    # (vs "seine": 0).  c: "Rome was" shares nothing: 0.
    assert squad.first_words_baseline(contexts, references) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # counts 2 and 3: median 2.5 rounds half up, to 3 words (not to the even 2). a: "Paris is the" vs "capital of":
    # 0.  b: "The river Seine" -> "river seine" vs "river seine flows": P 1, R 2/3, F1 0.8 (two words: 0.5)
    two = {"a": ["capital of"], "b": ["river Seine flows"]}
    assert squad.first_words_baseline(contexts, two) == pytest.approx((0 + 0.8) / 2)


def test_first_words_baseline_on_unanswerable_questions():
    # a question without reference answers only exists in SQuAD 2.0 data: scored by v2.0's rules. N = 1.
    # a: "Nothing" vs no answer: 0.  b: "Paris" vs "Paris": 1.
    contexts = {"a": "Nothing here", "b": "Paris is big"}
    assert squad.first_words_baseline(contexts, {"a": [], "b": ["Paris"]}) == pytest.approx(0.5)
