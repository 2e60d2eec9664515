"""The teacher sanity gate: task distillation refuses a teacher that was never fine-tuned on the
task, or whose classes are in another order.

Both mistakes train without any error and give a student that is no better than chance; TinyBERT's
scripts accept them silently. Before the first distillation step the fine-tuned teacher's saved
`id2label` is compared with the task's class names, and the teacher is scored on the first
`distill.gate_examples` dev examples: its accuracy must beat the majority class of that sample by
`distill.gate_margin` (regression: its Pearson correlation must exceed the margin; multi-label: its
micro-F1 must beat the better of two constant predictors, every label or each label's majority value,
by the margin; token classification: its entity F1 must exceed the margin (tagging every word O, the
commonest tag, finds no entity), or with tag_scheme=none its word accuracy must beat the commonest
tag's share; extractive QA: its SQuAD F1 must beat, by the margin, answering every question with the
context's first words (`squad.first_words_baseline`)).
`distill.allow_weak_teacher=true` turns both refusals into warnings.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from tinykd.errors import TinyKDError
from tinykd.evaluate import gold, predict_logits, predictions, qa_answers, token_predictions
from tinykd.metrics import compute_metrics
from tinykd.tasks import TaskSpec

GENERIC_LABEL = re.compile(r"LABEL_\d+")


def label_order_problem(teacher_config, spec: TaskSpec) -> str | None:
    """What is wrong with the saved `id2label`, or None. Generic names (LABEL_0, ...) say nothing
    about the order and pass (the score check still catches a swapped head)."""
    if spec.is_regression or spec.is_qa or not spec.label_names:
        return None
    saved = {int(k): v for k, v in (getattr(teacher_config, "id2label", None) or {}).items()}
    names = [saved.get(i) for i in range(len(saved))]
    if len(saved) != spec.num_labels:
        return f"the teacher has {len(saved)} classes ({names}); task {spec.name} has {spec.num_labels}"
    if all(n is not None and GENERIC_LABEL.fullmatch(n) for n in names):
        return None
    if [str(n).lower() for n in names] != [n.lower() for n in spec.label_names]:
        return f"the teacher's id2label is {names}; task {spec.name}'s classes, in id order, are {list(spec.label_names)}"
    return None


def first_examples(ds, n: int, spec: TaskSpec):
    """The first `n` examples of a split: rows, or for a token or QA split (whose rows are windows)
    every window of its first `n` sentences or questions."""
    group = {"token_classification": "sentence", "question_answering": "example"}.get(spec.type)
    if group is None:
        return ds.select(range(min(n, len(ds))))
    ids, seen, end = ds[group], 0, 0
    while end < len(ids) and (seen < n or ids[end] == ids[end - 1]):
        seen += end == 0 or ids[end] != ids[end - 1]
        end += 1
    return ds.select(range(end))


def teacher_score(teacher, dev_ds, tokenizer, spec: TaskSpec, examples: int, batch_size: int, device) -> dict:
    """The gate's figures on the first `examples` dev examples: the teacher's score, chance and the metric's name."""
    sample = first_examples(dev_ds, examples, spec)
    if spec.is_token:
        from tinykd.data import tokens

        predicted, gold_tags = token_predictions(teacher, sample, tokenizer, batch_size, device)
        metric = spec.main_metric
        score = tokens.scores(predicted, gold_tags, spec.label_names, (metric,))[metric]
        words = np.concatenate([np.asarray(g) for g in gold_tags])
        chance = 0.0 if metric != "token_accuracy" else float(np.bincount(words).max() / len(words))
        return {"metric": metric, "score": float(score), "chance": chance, "examples": len(gold_tags)}
    if spec.is_qa:
        from tinykd import squad

        answers = qa_answers(teacher, sample, tokenizer, batch_size, device, spec)
        references = squad.references(sample)
        score = squad.scores(answers, references, version_2=spec.answer_search.version_2)["squad_f1"]
        contexts = dict(zip(sample["id"], sample["context"]))
        chance = squad.first_words_baseline(contexts, references)
        return {"metric": "squad_f1", "score": float(score), "chance": float(chance), "examples": len(references)}
    logits = predict_logits(teacher, sample, tokenizer, batch_size, device)
    labels = gold(sample, spec)
    if spec.is_multi_label:
        # chance: the better of two constant predictors, every label on every row or each label's majority value
        score = compute_metrics(("micro_f1",), predictions(logits, spec), labels)["micro_f1"]
        constants = (np.ones_like(labels), np.broadcast_to(labels.mean(0) > 0.5, labels.shape).astype(np.int64))
        chance = max(compute_metrics(("micro_f1",), c, labels)["micro_f1"] for c in constants)
        return {"metric": "micro_f1", "score": float(score), "chance": float(chance), "examples": len(sample)}
    if spec.is_regression:
        score = compute_metrics(("pearson",), logits[:, 0], labels)["pearson"]
        return {"metric": "pearson", "score": float(score), "chance": 0.0, "examples": len(sample)}
    score = float((logits.argmax(-1) == labels).mean())
    chance = float(np.bincount(labels.astype(int), minlength=spec.num_labels).max() / len(labels))
    return {"metric": "accuracy", "score": score, "chance": chance, "examples": len(sample)}


def check_teacher(teacher, teacher_dir: str, dev_ds, tokenizer, spec: TaskSpec, *, examples: int, margin: float,
                  allow_weak: bool, batch_size: int, device) -> dict:
    """Refuse (TinyKDError) a teacher with a label-order mismatch or a dev score not above chance + margin;
    with `allow_weak` only warn. Returns the figures (recorded in the task run's results)."""
    override = "distill.allow_weak_teacher=true distills from it anyway (with a warning)."
    problems = []
    order = label_order_problem(teacher.config, spec)  # as loaded (and aligned by name: build.finetuned_teacher)
    if order:
        problems.append((f"The teacher at {teacher_dir} does not label task {spec.name}'s classes in its order: {order}.",
                         "fine-tune the teacher on this task with tinykd (`stage=teacher`), or fix its config's "
                         f"id2label/label2id if only the names are wrong. {override}"))
    figures = teacher_score(teacher, dev_ds, tokenizer, spec, examples, batch_size, device)
    threshold = figures["chance"] + margin
    figures |= {"threshold": threshold, "passed": figures["score"] > threshold and not order}
    if figures["score"] <= threshold:
        problems.append((
            f"The teacher at {teacher_dir} scores {figures['metric']} {figures['score']:.4f} on the first "
            f"{figures['examples']} {spec.name} dev examples, not above chance ({figures['chance']:.4f}) + "
            f"distill.gate_margin ({margin}) = {threshold:.4f}: it looks never fine-tuned on {spec.name}"
            + ("." if spec.is_qa else ", or its classes are in another order."),
            f"fine-tune it first (`python -m tinykd stage=teacher task={spec.name}`) and point stage.teacher_dir at "
            f"the export, or lower distill.gate_margin. {override}"))
    for message, fix in problems:
        if not allow_weak:
            raise TinyKDError(message, fix)
        print(f"[tinykd] teacher gate: WARNING {message} Distilling anyway (distill.allow_weak_teacher=true).",
              file=sys.stderr)
    if not problems:
        print(f"[tinykd] teacher gate: {figures['metric']} {figures['score']:.4f} on {figures['examples']} dev examples "
              f"(chance {figures['chance']:.4f}, threshold {threshold:.4f}); id2label matches")
    return figures
