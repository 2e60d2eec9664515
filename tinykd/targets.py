"""Teacher outputs over a fixed dataset, computed once and cached as Arrow.

Transfer-data distillation (the BiLSTM recipe) reads the same teacher outputs for every
example in every epoch and phase: the teacher runs once, under `no_grad`, in order, and its
logits and sentence representation (the last layer's [CLS] vector, what its classifier reads)
are stored beside the tokenised inputs. The cache key holds the teacher's files, the data and
the tokenizer, so a change in any of them computes the outputs again.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from tinykd import models
from tinykd.data import cache_key, cached_dataset, eval_batches, tokenizer_fingerprint


def model_fingerprint(model_dir: str) -> list[str]:
    """Name, size and mtime of every file of a model directory."""
    root = Path(model_dir)
    return sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in root.iterdir() if p.is_file())


@torch.no_grad()
def _compute(teacher, ds: datasets.Dataset, tokenizer, batch_size: int, device, progress: bool) -> datasets.Dataset:
    teacher.eval()
    logits, reps = [], []
    batches = eval_batches(ds, tokenizer, batch_size)
    for batch in tqdm(batches, total=-(-len(ds) // batch_size), desc="teacher outputs", disable=not progress):
        inputs = {k: v.to(device) for k, v in models.model_inputs(teacher, batch).items()}
        out = teacher(**inputs, output_hidden_states=True)
        logits.append(out.logits.float().cpu())
        reps.append(out.hidden_states[-1][:, 0].float().cpu())
    return ds.add_column("teacher_logits", torch.cat(logits).tolist()).add_column(
        "teacher_rep", torch.cat(reps).tolist())


def with_teacher_outputs(teacher, teacher_dir: str, ds: datasets.Dataset, tokenizer, *, batch_size: int, device,
                         cache_dir: str, progress: bool = True) -> datasets.Dataset:
    """`ds` (tokenised) with two more columns: `teacher_logits` (C floats) and `teacher_rep`
    (D floats), cached under `cache_dir`."""
    key = cache_key("teacher_outputs", model_fingerprint(teacher_dir), ds._fingerprint, tokenizer_fingerprint(tokenizer))
    return cached_dataset(cache_dir, key, lambda: _compute(teacher, ds, tokenizer, batch_size, device, progress))
