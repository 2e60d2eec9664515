"""Dev-set evaluation of a sequence classifier: every example, logits in dataset order (computed in
batches of similar length)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from tinykd import models
from tinykd.data import length_sorted_batches
from tinykd.metrics import compute_metrics
from tinykd.tasks import TaskSpec


@torch.no_grad()
def predict_logits(model, ds, tokenizer, batch_size: int, device) -> np.ndarray:
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


def evaluate(model, ds, tokenizer, spec: TaskSpec, batch_size: int, device) -> dict[str, float]:
    logits = predict_logits(model, ds, tokenizer, batch_size, device)
    labels = np.asarray(ds["labels"])
    preds = logits[:, 0] if spec.is_regression else logits.argmax(-1)
    return compute_metrics(spec.metrics, preds, labels)


def keep_best(best: Optional[dict], metrics: dict[str, float], main_metric: str, *, step: int,
              phase: str) -> tuple[dict, bool]:
    """The best dev record so far ({dev, step, phase}) after `metrics`, and whether they are the new
    best (strictly better on `main_metric`: a tie keeps the earlier checkpoint)."""
    if best is None or metrics[main_metric] > best["dev"][main_metric]:
        return {"dev": metrics, "step": step, "phase": phase}, True
    return best, False
