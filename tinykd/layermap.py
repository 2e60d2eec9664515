"""Layer maps: which teacher layer each student layer learns from, as typed records.

Layers are numbered as in the TinyBERT paper: 0 is the embedding layer, 1..N the
Transformer layers. For student layer m (1..M) and a teacher of N layers:

- ``uniform``: g(m) = m·N/M (TinyBERT). When N/M is not an integer, g(m) = floor(m·N/M + 1/2)
  (round half up): the map stays strictly increasing and g(M) = N, so the last student
  layer always learns from the last teacher layer. Needs M ≤ N.
- ``last``: g(m) = N − M + m (the top M teacher layers).
- ``list``: g(m) = layers[m−1], given explicitly.
- ``kept``: g(m) = the teacher layer that student layer m was pruned from (``student.init=pruned``):
  each layer goes on learning from the layer whose weights it started with.

Embeddings always map 0 ↔ 0. Attention of student layer m matches the attention inside
teacher layer g(m); hidden states of layer m match the teacher's hidden states after g(m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from tinykd.choices import LAYER_MAPS
from tinykd.errors import TinyKDError

# The intermediate representations a student learns from its teacher (TinyBERT eqs. 7-9).
FEATURES = ("embedding", "attention", "hidden")


@dataclass(frozen=True)
class LayerMatch:
    feature: str  # one of FEATURES
    student_layer: int  # 0 = embeddings, 1..M
    teacher_layer: int  # 0 = embeddings, 1..N
    weight: float

    @property
    def loss(self) -> str:
        """Every intermediate match is an MSE (through a projection where widths differ), as in TinyBERT."""
        return "mse"


def teacher_layers(strategy: str, n_teacher: int, n_student: int, layers: Optional[Sequence[int]] = None) -> list[int]:
    """g(1..M) for a strategy, validated against both depths."""
    if strategy == "uniform":
        if n_student > n_teacher:
            raise TinyKDError(
                f"layer_map=uniform needs a student no deeper than its teacher (student {n_student} layers, "
                f"teacher {n_teacher}).",
                "use distill.layer_map=list with distill.layers=[...] (one teacher layer per student layer).",
            )
        return [math.floor(m * n_teacher / n_student + 0.5) for m in range(1, n_student + 1)]
    if strategy == "last":
        if n_student > n_teacher:
            raise TinyKDError(
                f"layer_map=last needs a student no deeper than its teacher ({n_student} > {n_teacher}).",
                "use distill.layer_map=list.",
            )
        return [n_teacher - n_student + m for m in range(1, n_student + 1)]
    if strategy == "list":
        return check_layer_list(layers, n_teacher, n_student, "distill.layers")
    if strategy == "kept":  # the pruned student's own layers (the stage passes them)
        return check_layer_list(layers, n_teacher, n_student, "the pruned student's layers")
    raise TinyKDError(f"Unknown layer map '{strategy}'.", f"use distill.layer_map= one of: {', '.join(LAYER_MAPS)}.")


def check_layer_list(layers: Optional[Sequence[int]], n_teacher: int, n_student: int, key: str) -> list[int]:
    """One teacher layer (1..n_teacher) per student layer, given by the config key `key`;
    a clear error naming `key` otherwise."""
    if layers is None or len(layers) != n_student:
        raise TinyKDError(
            f"{key} needs one teacher layer per student layer: got {None if layers is None else list(layers)} "
            f"for a {n_student}-layer student.",
            f"set {key}=[t1,...,t{n_student}] with values in 1..{n_teacher}.",
        )
    for m, t in enumerate(layers, start=1):
        if int(t) != t or not 1 <= int(t) <= n_teacher:
            raise TinyKDError(
                f"Layer map out of range ({key}): student layer {m} -> teacher layer {t}, but the teacher has layers "
                f"1..{n_teacher}.",
                f"set {key} to values in 1..{n_teacher} (0 is the embedding layer, always mapped to 0).",
            )
    return [int(t) for t in layers]


def resolve_matches(strategy: str, n_teacher: int, n_student: int, weights: dict[str, float],
                    layers: Optional[Sequence[int]] = None) -> list[LayerMatch]:
    """All intermediate matches; features with weight 0 are left out (their teacher outputs are never needed)."""
    g = teacher_layers(strategy, n_teacher, n_student, layers)
    matches = []
    if weights.get("embedding", 0):
        matches.append(LayerMatch("embedding", 0, 0, weights["embedding"]))
    for feature in FEATURES[1:]:  # attention, hidden: one match per student layer
        if weights.get(feature, 0):
            matches += [LayerMatch(feature, m, t, weights[feature]) for m, t in enumerate(g, start=1)]
    return matches


def format_table(matches: Sequence[LayerMatch]) -> str:
    rows = [("feature", "student", "teacher", "loss", "weight")]
    rows += [(m.feature, str(m.student_layer), str(m.teacher_layer), m.loss, f"{m.weight:g}") for m in matches]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
