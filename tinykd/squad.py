"""SQuAD scoring and the answer search: what an extractive QA model's logits mean as text, and how that text is scored.

Scoring follows the official `evaluate-v1.1.py` (and, with `version_2=True`, `evaluate-v2.0.py`) rule for rule: answers
are compared after `normalize_answer`; exact match is string equality; F1 is the overlap of the two bags of words; each
question takes its best score over its reference answers, and the split's score is the mean over its questions. The
official scripts print percentages; here every score is a fraction in [0, 1], as the project's other metrics are.

The answer search (`best_answers`) is the one Hugging Face's `run_qa` post-processing does: over every window of an
example, the `n_best` highest start and end logits are paired, impossible pairs are dropped, and the highest
start + end logit wins; SQuAD 2.0 models may instead answer nothing when the [CLS] position scores higher.
"""

from __future__ import annotations

import math
import re
import statistics
import string
from collections import Counter
from typing import Optional, Sequence

import numpy as np

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only: the official script keeps "’", "–", "«" and the like
_ARTICLES = re.compile(r"\b(a|an|the)\b")
NO_OFFSET = (-1, -1)  # tinykd.data.qa.eval_features' offset for every token that is not context


# ----------------------------------------------------------------------------- the official rules


def normalize_answer(s: str) -> str:
    """Lower case, ASCII punctuation removed, the articles a/an/the removed as words, whitespace collapsed.

    The order is the official one and matters: punctuation goes before articles, so "the-end" becomes "theend"
    (no article left), and "U.S." becomes "us".
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when both normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str, *, version_2: bool = False) -> float:
    """F1 of the two bags of normalised words (a word repeated counts as often as it occurs on both sides).

    v1.1: 0.0 when no word is shared, so two empty answers score 0. v2.0: when either side has no words, 1.0 if both
    have none (a correct "no answer") else 0.0.
    """
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(ground_truth).split()
    if version_2 and (not pred or not gold):
        return float(pred == gold)
    shared = sum((Counter(pred) & Counter(gold)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(gold)
    return 2 * precision * recall / (precision + recall)


def _gold(answers: Sequence[str], version_2: bool) -> list[str]:
    """The answers a question is scored against. v2.0 drops those that normalise to nothing; none left is [""]."""
    if not version_2:
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def scores(predictions: dict[str, str], references: dict[str, list[str]], *,
           version_2: bool = False) -> dict[str, float]:
    """{"squad_f1", "squad_em"}: means over every question of `references` (id -> answer texts), as fractions.

    Each question scores its best over its reference answers; a question without a prediction scores 0 (the v1.1
    script's rule; the project always predicts every question, so v2.0's "skip it" never applies). Predictions for
    ids not in `references` are ignored. A v1 question needs at least one reference; in v2 an empty list means
    "no answer", which only the empty prediction matches.
    """
    if not references:
        raise ValueError("scores: no reference questions to score.")
    em = f1 = 0.0
    for qid, answers in references.items():
        gold = _gold(answers, version_2)
        if not gold:
            raise ValueError(f"scores: question {qid!r} has no reference answer (v1 scoring needs one).")
        if qid not in predictions:
            continue
        pred = predictions[qid]
        em += max(exact_match_score(pred, g) for g in gold)
        f1 += max(f1_score(pred, g, version_2=version_2) for g in gold)
    n = len(references)
    return {"squad_f1": f1 / n, "squad_em": em / n}


# ----------------------------------------------------------------------------- from logits to answers


def _top(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n highest logits, highest first (ties: the earlier position first)."""
    return np.argsort(-logits, kind="stable")[:n]


def best_span(start: np.ndarray, end: np.ndarray, is_context: np.ndarray, *, n_best: int,
              max_answer_len: int) -> Optional[tuple[float, int, int]]:
    """The best (score, start token, end token) of one window, or None when no candidate pair is a valid span.

    start, end, is_context: (tokens,). Candidates are the `n_best` highest start and end positions over the whole
    window (as Hugging Face's post-processing picks them, before any filtering); a pair is valid when both ends are
    context tokens, end >= start and the span has at most `max_answer_len` tokens. Score: start + end logit.
    """
    s, e = _top(start, n_best), _top(end, n_best)
    score = start[s][:, None] + end[e][None, :]  # (n_best, n_best): start candidate x end candidate
    length = e[None, :] - s[:, None] + 1
    valid = is_context[s][:, None] & is_context[e][None, :] & (length >= 1) & (length <= max_answer_len)
    if not valid.any():
        return None
    score = np.where(valid, score, -np.inf)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)  # row-major: ties go to the higher start logit
    return float(score[i, j]), int(s[i]), int(e[j])


def best_answers(features, start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray], *, n_best: int,
                 max_answer_len: int, version_2: bool = False, null_threshold: float = 0.0) -> dict[str, str]:
    """Each example's answer text (id -> text), from its windows' logits.

    features: tinykd.data.qa.eval_features' Dataset (columns `id`, `context`, `offset_mapping`: [start, end] characters of
    each context token, [-1, -1] for every other token). start_logits[i], end_logits[i]: (tokens of feature i,), no
    padding. The best span over all of an example's windows wins, and its text is cut from the context by its
    offsets; an example with no valid span answers "". version_2: the null score is the lowest [CLS] score
    (start_logits[0] + end_logits[0]) over the example's windows, and the answer is "" when it beats the best span's
    score by more than `null_threshold` (run_qa's rule).
    """
    ids, contexts, offsets = (list(features[c]) for c in ("id", "context", "offset_mapping"))
    if not len(ids) == len(start_logits) == len(end_logits):
        raise ValueError(f"best_answers: {len(ids)} features but {len(start_logits)} start and {len(end_logits)} "
                         "end logit arrays.")
    best: dict[str, tuple[float, str]] = {}
    null: dict[str, float] = {}
    for i, qid in enumerate(ids):
        start, end = np.asarray(start_logits[i], dtype=np.float64), np.asarray(end_logits[i], dtype=np.float64)
        spans = np.asarray(offsets[i], dtype=np.int64).reshape(-1, 2)
        if not len(start) == len(end) == len(spans):
            raise ValueError(f"best_answers: feature {i} has {len(spans)} tokens but {len(start)} start and "
                             f"{len(end)} end logits (cut the padding off first).")
        null[qid] = min(null.get(qid, math.inf), float(start[0] + end[0]))
        found = best_span(start, end, spans[:, 0] >= 0, n_best=n_best, max_answer_len=max_answer_len)
        if found is not None and (qid not in best or found[0] > best[qid][0]):
            score, s, e = found
            best[qid] = (score, contexts[i][spans[s, 0]:spans[e, 1]])
        best.setdefault(qid, (-math.inf, ""))
    if not version_2:
        return {qid: text for qid, (_, text) in best.items()}
    return {qid: "" if null[qid] > score + null_threshold else text for qid, (score, text) in best.items()}


def references(features) -> dict[str, list[str]]:
    """id -> its reference answer texts, once per example (its windows repeat them), in the features' order."""
    out: dict[str, list[str]] = {}
    for qid, answers in zip(features["id"], features["answers"]):
        out.setdefault(qid, list(answers))
    return out


# ----------------------------------------------------------------------------- the floor


def first_words_baseline(contexts: dict[str, str], references: dict[str, list[str]], *,
                         version_2: Optional[bool] = None) -> float:
    """squad_f1 of answering every question with the first N words of its context (contexts: id -> context).

    N is the median word count of the questions' first reference answers (rounded half up, at least 1). This needs
    no model, reads no question, and still scores above zero because answers share words with any span of their
    paragraph: it is the floor a real QA model must beat, and one that does not has learnt nothing about where
    answers are. version_2 None: the v2.0 rules when some question has no reference answer (only SQuAD 2.0 data has
    such questions, and v1.1 scoring cannot score them).
    """
    lengths = [len(answers[0].split()) for answers in references.values() if answers]
    n = max(1, math.floor(statistics.median(lengths) + 0.5)) if lengths else 1
    if version_2 is None:
        version_2 = len(lengths) < len(references)
    predictions = {qid: " ".join(contexts[qid].split()[:n]) for qid in references}
    return scores(predictions, references, version_2=version_2)["squad_f1"]
