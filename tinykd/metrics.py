"""Task metrics, by their official definitions (scikit-learn / scipy).

Single-label: accuracy; f1 (the positive class's, class id 1: GLUE's MRPC/QQP F1); macro_f1 (the
unweighted mean of every class's F1); matthews (Matthews correlation). Multi-label, over a
(N, C) 0/1 matrix: micro_f1 (F1 over every (example, label) decision pooled), macro_f1 (the mean
of the per-label F1s; a label never predicted nor present scores 0, scikit-learn's
zero_division=0), exact_match (the share of examples whose whole label set is right: subset
accuracy). Regression: pearson, spearman. Every one is better higher.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from typing import Optional

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def compute_metrics(names: tuple[str, ...], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`predictions` are class ids (single-label), a 0/1 matrix (multi-label) or scores (regression)."""
    out = {}
    multi = np.ndim(labels) == 2
    for name in names:
        if name == "accuracy":
            out[name] = float(accuracy_score(labels, predictions))
        elif name == "f1":
            out[name] = float(f1_score(labels, predictions))
        elif name == "macro_f1":
            out[name] = float(f1_score(labels, predictions, average="macro", zero_division=0))
        elif name == "micro_f1":
            out[name] = float(f1_score(labels, predictions, average="micro", zero_division=0))
        elif name == "exact_match":  # on a label matrix scikit-learn's accuracy is subset accuracy
            if not multi:
                raise ValueError("exact_match scores a multi-label (N, C) matrix")
            out[name] = float(accuracy_score(labels, predictions))
        elif name == "matthews":
            out[name] = float(matthews_corrcoef(labels, predictions))
        elif name == "pearson":
            out[name] = float(pearsonr(predictions, labels)[0])
        elif name == "spearman":
            out[name] = float(spearmanr(predictions, labels)[0])
        else:
            raise ValueError(f"unknown metric {name}")
    return out



def retention(dev: dict[str, float], teacher_dev: Optional[dict[str, float]], metric: str) -> Optional[float]:
    """The share of the teacher's dev `metric` the student keeps; None without a teacher score, or when the
    teacher scores 0 (a smoke teacher on NER can: a ratio to 0 means nothing)."""
    if not teacher_dev or not teacher_dev.get(metric):
        return None
    return dev[metric] / teacher_dev[metric]
