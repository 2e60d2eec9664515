"""Your own teacher: an already fine-tuned Hugging Face sequence classifier of any BERT-like
architecture, checked and aligned with the task before distillation.

- `is_finetuned_classifier`: the checkpoint already has this task's head, so teacher fine-tuning
  can be skipped.
- `label_permutation` / `reorder_classifier` (both: `align_labels`): the teacher's classes are
  matched to the task's *by name*, and its output rows reordered so that logit i is task class i.
  A teacher whose class 0 means "positive" where the task's means "negative" would otherwise teach
  the student the opposite of every label, with nothing in the losses to show it.
- `attention_capture_problem`: whether TinyBERT's attention loss can read this model's attention
  maps (tinykd/attention.py captures them through transformers' `AttentionInterface`).
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from tinykd import attention
from tinykd.errors import TinyKDError

_GENERIC = re.compile(r"label_\d+")  # what transformers names classes nobody named


HEAD_SUFFIXES = {"sequence_classification": "ForSequenceClassification",
                 "token_classification": "ForTokenClassification", "question_answering": "ForQuestionAnswering"}


def is_finetuned_classifier(config, num_labels: int, task_type: str = "sequence_classification") -> bool:
    """Whether the model `config` (a transformers `PretrainedConfig`) describes already has the task
    type's head (sequence or token classification, QA spans) with `num_labels` outputs:
    `config.architectures` names a `...ForSequenceClassification` (`...ForTokenClassification`,
    `...ForQuestionAnswering`) class and `config.num_labels == num_labels`. A bare encoder or masked LM
    (whose head would be new and random) is not."""
    archs = getattr(config, "architectures", None) or []
    suffix = HEAD_SUFFIXES[task_type]
    return any(a.endswith(suffix) for a in archs) and config.num_labels == num_labels


def _norm(name) -> str:
    return str(name).strip().lower()


def _ordered_names(id2label: Mapping, source: str) -> list[str]:
    """id2label's names in class-id order; its keys may be ints or strings (as JSON gives them)."""
    by_id = {int(k): str(v) for k, v in id2label.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise TinyKDError(
            f"The teacher at {source} has class ids {sorted(by_id)} in its id2label: not 0..{len(by_id) - 1}.",
            "fix the teacher's config.json so that id2label numbers its classes 0, 1, ...",
        )
    return [by_id[i] for i in range(len(by_id))]


def label_permutation(teacher_id2label: Mapping, task_label_names: Optional[Sequence[str]], *,
                      source: str) -> Optional[list[int]]:
    """How the teacher's classes map onto the task's, matched by name (case-insensitive, surrounding
    whitespace ignored).

    Returns None when nothing needs reordering: the names already come in the task's order, or the
    teacher's names are all transformers' generic ``LABEL_<i>`` (nothing to match on: the order is
    kept), or the task is a regression (`task_label_names` None) and the teacher has one output.
    Otherwise `perm` with ``perm[task_id] = teacher_id``, for `reorder_classifier`.

    Raises TinyKDError when the class counts differ, or when the names differ (it lists the task's
    names the teacher lacks and the teacher's the task lacks). `source` names the teacher in messages.
    """
    teacher = _ordered_names(teacher_id2label, source)
    task = [str(n) for n in task_label_names] if task_label_names else []
    n_task = len(task) or 1  # a regression task has one output and no class names
    if len(teacher) != n_task:
        raise TinyKDError(
            f"The teacher at {source} has {len(teacher)} classes {teacher}, the task has {n_task} "
            f"{task or '(a regression output)'}.",
            "use a teacher fine-tuned on this task's labels, or set task.labels to the teacher's classes.",
        )
    if all(_GENERIC.fullmatch(_norm(n)) for n in teacher) or not task:
        return None
    t_norm, k_norm = [_norm(n) for n in teacher], [_norm(n) for n in task]
    if len(set(t_norm)) != len(t_norm):
        raise TinyKDError(
            f"The teacher at {source} gives two classes the same name {teacher}: its outputs cannot be matched "
            f"to the task's classes {task} by name.",
            "fix the teacher's config.json id2label (one distinct name per class).",
        )
    if set(t_norm) != set(k_norm):
        lacks = [n for n, k in zip(task, k_norm) if k not in set(t_norm)]
        extra = [n for n, t in zip(teacher, t_norm) if t not in set(k_norm)]
        raise TinyKDError(
            f"The teacher at {source} has classes {teacher}, the task {task}: the teacher lacks {lacks} and the "
            f"task lacks {extra}, so the teacher's outputs cannot be matched to the task's classes by name.",
            "rename the task's labels (task.labels / task.label_names) or fix the teacher's config.json id2label "
            "so that the names agree. distill.allow_weak_teacher is no escape here: a teacher whose outputs "
            "mean other classes would teach the student wrong labels.",
        )
    perm = [t_norm.index(k) for k in k_norm]
    return None if perm == list(range(len(perm))) else perm


def output_layer(model: nn.Module) -> nn.Linear:
    """The classifier's final projection: the last `nn.Linear` outside the encoder with
    `config.num_labels` outputs (BERT, DeBERTa-v2: `classifier`; RoBERTa, XLM-R, ELECTRA, MPNet:
    `classifier.out_proj`)."""
    n = model.config.num_labels
    base = model.base_model
    encoder = set() if base is model else {id(m) for m in base.modules()}
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in encoder and m.out_features == n]
    if not found:
        raise TinyKDError(
            f"{type(model).__name__} has no classifier output layer (an nn.Linear with {n} outputs outside its "
            "encoder): its classes cannot be reordered.",
            "use an AutoModelForSequenceClassification checkpoint whose classifier ends in a linear layer.",
        )
    return found[-1]


@torch.no_grad()
def reorder_classifier(model: nn.Module, perm: Sequence[int]) -> None:
    """Reorder the classifier's outputs in place: output i becomes the old output perm[i] (weight rows
    and bias of `output_layer`), and `config.id2label` / `label2id` follow."""
    n = model.config.num_labels
    if sorted(perm) != list(range(n)):
        raise ValueError(f"perm {list(perm)} is not a permutation of 0..{n - 1}")
    layer = output_layer(model)
    index = torch.as_tensor(list(perm), device=layer.weight.device)
    layer.weight.copy_(layer.weight[index])
    if layer.bias is not None:
        layer.bias.copy_(layer.bias[index])
    old = {int(k): v for k, v in model.config.id2label.items()}
    model.config.id2label = {i: old[p] for i, p in enumerate(perm)}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}


def align_labels(model: nn.Module, task_label_names: Optional[Sequence[str]], *, source: str) -> Optional[list[int]]:
    """`label_permutation` for the model's id2label, then `reorder_classifier` when the order differs.
    Returns the permutation applied (None: none was needed)."""
    perm = label_permutation(model.config.id2label, task_label_names, source=source)
    if perm is not None:
        reorder_classifier(model, perm)
    return perm


def attention_capture_problem(model: nn.Module) -> Optional[str]:
    """None when tinykd can capture `model`'s attention maps (every layer's attention calls
    transformers' `AttentionInterface`, so `tinykd_scores`/`tinykd_probs` compute them); else a
    sentence saying why not.

    Found by running the model once on a 4-token example (`attention.dispatching_modules`), not from
    a list of names. In transformers 5.24, BERT, RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT
    dispatch; DeBERTa-v2 (`DisentangledSelfAttention`, which adds its relative-position terms inline)
    and MPNet (`MPNetSelfAttention`, which adds its relative-position bias inline) do not.
    """
    n = model.config.num_hidden_layers
    seen = attention.dispatching_modules(model)
    if len(seen) >= n:
        return None
    return (f"{type(model).__name__} computes its attention without transformers' AttentionInterface "
            f"({len(seen)} of its {n} layers dispatch through it), so tinykd cannot capture its attention maps: "
            "its output_attentions would be the model's own post-softmax probabilities, not the maps tinykd's "
            "attention functions return.")
