"""Teacher outputs over a fixed dataset, computed once and cached as Arrow.

The prediction-layer phase of task distillation, sweeps of it, and transfer-data distillation
(the BiLSTM recipe) read the same teacher outputs for every example in every epoch, phase and
trial: the teacher runs once, under `no_grad`, in batches of similar length, and its logits (and, when asked, its
sentence representation: the last layer's [CLS] vector, what its classifier reads) are stored
beside the tokenised inputs, in fp32 or fp16. The cache key holds the teacher's files, the
tokenised data (its fingerprint covers the source, the tokenizer and the maximum length), the
tokenizer and the precision, so a change in any of them computes the outputs again.

Cost on disk: C numbers per example for the logits (2 bytes each in fp16: 4 bytes an SST-2
example; a token or QA task's L x K, its tokens' tag or start/end logits, stored flat and padded
back by `tinykd.data.batches.collator`), D more for the representation (768 bytes an example at D=384 in fp16). Intermediate
features (every layer's hidden states and attention maps, L x D and H x L x L numbers per layer)
would take megabytes per example and are not cached.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from tinykd import models
from tinykd.choices import CACHE_PRECISIONS
from tinykd.data.batches import length_sorted_batches
from tinykd.data.cache import cache_key, cached_dataset, tokenizer_fingerprint


def model_fingerprint(model_dir: str) -> list[str]:
    """Name, size and mtime of every file of a model directory."""
    root = Path(model_dir)
    return sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in root.iterdir() if p.is_file())


DTYPES = {"fp32": "float32", "fp16": "float16"}  # choices.CACHE_PRECISIONS -> the stored dtype


@torch.no_grad()
def _compute(teacher, ds: datasets.Dataset, tokenizer, batch_size: int, device, progress: bool, precision: str,
             representations: bool) -> datasets.Dataset:
    teacher.eval()
    logits, reps, positions = [], [], []
    # batches of similar length (each padded only to its own longest), put back in dataset order below
    batches = length_sorted_batches(ds, tokenizer, batch_size)
    for idx, batch in tqdm(batches, total=-(-len(ds) // batch_size), desc="teacher outputs", disable=not progress):
        inputs = {k: v.to(device) for k, v in models.model_inputs(teacher, batch).items()}
        out = teacher(**inputs, output_hidden_states=representations)
        scores = models.head_logits(out).float().cpu()
        if scores.dim() == 3:  # per token (B, L, K): each example's real tokens (padding is on the right), flat
            lengths = batch["attention_mask"].sum(1).tolist()
            logits.extend(scores[i, :n].reshape(-1) for i, n in enumerate(lengths))
        else:
            logits.extend(scores)
        if representations:
            reps.append(out.hidden_states[-1][:, 0].float().cpu())
        positions.extend(idx)
    order = sorted(range(len(positions)), key=positions.__getitem__)  # back in dataset order
    kind = datasets.Sequence(datasets.Value(DTYPES[precision]))
    ds = ds.add_column("teacher_logits", [logits[i].numpy().tolist() for i in order], feature=kind)
    back = torch.tensor(order)
    if representations:
        ds = ds.add_column("teacher_rep", torch.cat(reps)[back].numpy().tolist(), feature=kind)
    return ds


def with_teacher_outputs(teacher, teacher_dir: str, ds: datasets.Dataset, tokenizer, *, batch_size: int, device,
                         cache_dir: str, progress: bool = True, precision: str = "fp32",
                         representations: bool = True) -> datasets.Dataset:
    """`ds` (tokenised) with `teacher_logits` (C numbers an example) and, with `representations`,
    `teacher_rep` (D numbers), stored in `precision` (fp32 or fp16) and cached under `cache_dir`."""
    if precision not in CACHE_PRECISIONS:
        raise ValueError(f"unknown precision {precision}")
    key = cache_key("teacher_outputs", model_fingerprint(teacher_dir), ds._fingerprint, tokenizer_fingerprint(tokenizer),
                    precision, representations)
    return cached_dataset(cache_dir, key, lambda: _compute(teacher, ds, tokenizer, batch_size, device, progress,
                                                           precision, representations))
