"""Metrics against values worked out by hand from their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from tinykd.metrics import compute_metrics, retention

# 3 examples x 3 labels
GOLD = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
PRED = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])


def test_multi_label_metrics_by_hand():
    out = compute_metrics(("micro_f1", "macro_f1", "exact_match"), PRED, GOLD)
    # pooled: TP = 3 (e1l1, e2l2, e3l1), FP = 1 (e3l3), FN = 2 (e1l3, e3l2) -> 2*3 / (2*3 + 1 + 2) = 6/9
    assert out["micro_f1"] == pytest.approx(6 / 9)
    # label 1: TP 2 -> F1 1; label 2: TP 1, FN 1 -> 2/3; label 3: TP 0, FP 1, FN 1 -> 0
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["exact_match"] == pytest.approx(1 / 3)  # only example 2 has its whole set right


def test_single_label_macro_f1_by_hand():
    gold, pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    # class 0: P 1 R 1/2 -> 2/3; class 1: P 1/2 R 1 -> 2/3; class 2: 1
    assert compute_metrics(("macro_f1",), pred, gold)["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_exact_match_needs_a_label_matrix():
    with pytest.raises(ValueError, match="multi-label"):
        compute_metrics(("exact_match",), np.array([0, 1]), np.array([0, 1]))


def test_retention_is_the_student_s_share_of_the_teacher_s_score_and_none_against_a_zero_teacher():
    assert retention({"entity_f1": 0.45}, {"entity_f1": 0.5}, "entity_f1") == pytest.approx(0.9)
    assert retention({"entity_f1": 0.2}, {"entity_f1": 0.0}, "entity_f1") is None  # a smoke NER teacher scores 0
    assert retention({"accuracy": 0.8}, None, "accuracy") is None  # the baseline never runs the teacher
