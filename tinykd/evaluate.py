"""Dev-set evaluation: every example, logits in dataset order (computed in batches of similar length),
scored by the task's metrics: per text (tinykd/metrics.py), per word with its tag (tinykd/data/tokens.py,
windows joined back into sentences), or per question (tinykd/squad.py, windows merged by an n-best
answer search)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tinykd import data, models
from tinykd.data.batches import length_sorted_batches
from tinykd.metrics import compute_metrics
from tinykd.tasks import TaskSpec


@torch.no_grad()
def predict_logits(model, ds, tokenizer, batch_size: int, device) -> np.ndarray:
    """(N, C) logits of a text classifier, in dataset order."""
    was_training = model.training
    model.eval()
    out, positions = [], []
    for idx, batch in length_sorted_batches(ds, tokenizer, batch_size):
        inputs = {k: v.to(device) for k, v in models.model_inputs(model, batch).items()}
        out.append(model(**inputs).logits.float().cpu())
        positions.extend(idx)
    model.train(was_training)
    computed = torch.cat(out)
    logits = torch.empty_like(computed)
    logits[torch.tensor(positions)] = computed  # back in dataset order
    return logits.numpy()


@torch.no_grad()
def predict_token_logits(model, ds, tokenizer, batch_size: int, device) -> list[np.ndarray]:
    """Per example, in dataset order, its (L_i, K) scores without padding: a token classifier's
    tag logits (K = tags), or a QA model's start and end logits (K = 2)."""
    was_training = model.training
    model.eval()
    out: list = [None] * len(ds)
    for idx, batch in length_sorted_batches(ds, tokenizer, batch_size):
        inputs = {k: v.to(device) for k, v in models.model_inputs(model, batch).items()}
        logits = models.head_logits(model(**inputs)).float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()  # padding is on the right
        for row, (i, n) in enumerate(zip(idx, lengths)):
            out[i] = logits[row, :n]
    model.train(was_training)
    return out


def token_predictions(model, ds, tokenizer, batch_size: int, device) -> tuple[list[list[int]], list[list[int]]]:
    """A token task's (predicted, gold) tag ids per word of every sentence, windows joined."""
    from tinykd.data import tokens

    logits = predict_token_logits(model, ds, tokenizer, batch_size, device)
    return tokens.word_predictions(ds, [x.argmax(-1) for x in logits]), tokens.word_gold(ds)


def qa_answers(model, ds, tokenizer, batch_size: int, device, spec: TaskSpec) -> dict[str, str]:
    """A QA model's answer to every question in `ds` (evaluation features): the best span over its
    windows, searched as `spec.answer_search` says (tinykd/squad.py)."""
    from dataclasses import asdict

    from tinykd import squad

    search = asdict(spec.answer_search)
    logits = predict_token_logits(model, ds, tokenizer, batch_size, device)
    return squad.best_answers(ds, [x[:, 0] for x in logits], [x[:, 1] for x in logits], **search)


def predictions(logits: np.ndarray, spec: TaskSpec) -> np.ndarray:
    """What the model predicts from its logits: the score (regression), the argmax class (single-label),
    or every label whose sigmoid exceeds 1/2, i.e. whose logit exceeds 0 (multi-label, a (N, C) 0/1 matrix)."""
    if spec.is_regression:
        return logits[:, 0]
    if spec.is_multi_label:
        return (logits > 0).astype(np.int64)
    return logits.argmax(-1)


def gold(ds, spec: TaskSpec) -> np.ndarray:
    """The split's labels as the metrics take them (multi-label: a (N, C) 0/1 integer matrix)."""
    labels = np.asarray(ds["labels"])
    return labels.round().astype(np.int64) if spec.is_multi_label else labels


def evaluate(model, ds, tokenizer, spec: TaskSpec, batch_size: int, device) -> dict[str, float]:
    """The model's scores on `ds` by every metric of the task (its main one first)."""
    if spec.is_token:
        from tinykd.data import tokens

        return tokens.scores(*token_predictions(model, ds, tokenizer, batch_size, device), spec.label_names,
                                spec.metrics)
    if spec.is_qa:
        from tinykd import squad

        answers = qa_answers(model, ds, tokenizer, batch_size, device, spec)
        scores = squad.scores(answers, squad.references(ds), version_2=spec.answer_search.version_2)
        return {m: scores[m] for m in spec.metrics}
    logits = predict_logits(model, ds, tokenizer, batch_size, device)
    return compute_metrics(spec.metrics, predictions(logits, spec), gold(ds, spec))


def evaluate_and_keep_best(loop, model, ds, tokenizer, spec: TaskSpec, best: Optional[dict],
                           export_dir: Path) -> dict:
    """A training loop's dev evaluation: score `model` on `ds` (in batches of the phase's
    eval_batch_size), log it at the loop's step, and when it beats `best` on the task's main metric
    (strictly: a tie keeps the earlier checkpoint) export it to `export_dir`. Returns the best
    record ({dev, step, phase})."""
    metrics = evaluate(model, ds, tokenizer, spec, loop.hp.eval_batch_size, loop.engine.device)
    better = best is None or metrics[spec.main_metric] > best["dev"][spec.main_metric]
    loop.log_eval("dev", metrics, " (best so far: exported)" if better else f" (best: step {best['step']})")
    if not better:
        return best
    with loop.engine.gathered():  # ZeRO-3: the full weights for rank 0 to write
        models.export(model, tokenizer, export_dir)
    return {"dev": metrics, "step": loop.step, "phase": loop.name}


def test_score(model, spec: TaskSpec, tokenizer, task, cache_dir: str, batch_size: int, device) -> Optional[dict]:
    """The model's scores on `task.test` (your own data), when it is set and labelled; else None. Only models
    already selected on dev are scored here: nothing is chosen by it. `cache_dir`: the datasets cache."""
    if spec.glue is not None or not task.test or not data.has_labels(task, "test", cache_dir):
        return None
    test = data.load_split(spec, "test", tokenizer, task, cache_dir).dataset
    scores = evaluate(model, test, tokenizer, spec, batch_size, device)
    print("[tinykd] test: " + ", ".join(f"{k} = {v:.4f}" for k, v in scores.items()) + f" ({len(test)} examples)")
    return scores
