"""From a tokenised split to model inputs: the columns a batch holds, collators (per-token labels and cached
per-token teacher logits padded), the `Batcher` of a training loop counted in steps (the same batch at the same
step, whatever process or resume made it, sliced across ranks), and evaluation batches in order or sorted by length.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import datasets
import numpy as np
import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from tinykd import distributed
from tinykd.errors import TinyKDError

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
# what a training or inference batch holds: the model's inputs, the gold labels (per text, per token, or an
# answer's start and end), cached teacher outputs, whether a row is teacher-labelled transfer data. Other columns (a token task's word ids, a QA window's
# offsets and context) stay in the dataset for scoring.
BATCH_COLUMNS = (*MODEL_INPUTS, "labels", "start_positions", "end_positions", "teacher_logits", "teacher_rep",
                 "transfer")


def token_task(ds: datasets.Dataset) -> bool:
    """A token-classification split (its labels are per token, padded with IGNORE, not per text)."""
    return "word_ids" in ds.column_names


def collator(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase):
    """Pads a batch: per-token labels with -100 (ignored by the losses) for token classification; a token
    or QA task's cached teacher logits (`TokenLogitsPadding`)."""
    if token_task(ds):
        base = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    else:
        base = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    per_token = token_task(ds) or "start_positions" in ds.column_names
    return TokenLogitsPadding(base) if per_token and "teacher_logits" in ds.column_names else base


class TokenLogitsPadding:
    """A collator for rows whose cached teacher logits are per token (tinykd/teacher_outputs.py stores an
    example's L x K logits flat): the rest collated by `base`, the logits as (B, L, K), zero at padding
    (which no loss reads: the prediction mask leaves it out). Padding is on the right, as BERT-like
    tokenizers pad."""

    def __init__(self, base):
        self.base = base

    def __call__(self, rows: list[dict]) -> dict:
        flat = [r.pop("teacher_logits") for r in rows]
        batch = self.base(rows)
        lengths = [len(r["input_ids"]) for r in rows]
        k = len(flat[0]) // lengths[0]
        out = torch.zeros(len(rows), batch["input_ids"].size(1), k)
        for i, (values, n) in enumerate(zip(flat, lengths)):
            out[i, :n] = torch.tensor(values, dtype=torch.float32).view(n, k)
        batch["teacher_logits"] = out
        return batch


def batch_view(ds: datasets.Dataset) -> datasets.Dataset:
    """The columns a batch is made of (BATCH_COLUMNS), as plain Python rows."""
    return ds.with_format(None).select_columns([c for c in ds.column_names if c in BATCH_COLUMNS])


GROUP = 50  # group_by_length: batches per group sorted by length (Hugging Face's LengthGroupedSampler's mega-batch)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool,
                  lengths: Optional[np.ndarray] = None) -> list[list[int]]:
    """Index lists for one pass; the order depends only on (seed, epoch), so a resumed run
    sees the same batches. The last, shorter batch is kept. With `lengths` (group_by_length): the
    shuffled rows cut into groups of GROUP batches, each group sorted by length (longest first), and
    the full batches of the whole pass shuffled: every row once, each batch of similar lengths."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    group = batch_size * GROUP
    grouped = [i for k in range(0, n, group) for i in sorted(order[k : k + group], key=lambda i: -lengths[i])]
    batches = [grouped[i : i + batch_size] for i in range(0, n, batch_size)]
    full = n // batch_size  # the shorter batch, if any, stays last (Batcher fills it across ranks)
    g = torch.Generator().manual_seed(seed * 100_003 + epoch + 7_919)
    return [batches[i] for i in torch.randperm(full, generator=g).tolist()] + batches[full:]


class Batcher:
    """Micro-batches for a training loop counted in steps: `micro_step` k of the run is
    always the same batch, whatever process or resume produced it.

    With several ranks (a DeepSpeed job) each global batch holds `batch_size` x ranks examples
    and rank r takes the r-th consecutive slice of it: together the ranks see exactly the batches
    one process with `batch_size` x ranks would, none twice and none lost. The last, shorter batch
    of an epoch is filled from the epoch's first examples so every rank gets a full slice."""

    def __init__(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, seed: int,
                 rank: Optional[int] = None, world_size: Optional[int] = None, group_by_length: bool = False):
        if len(ds) == 0:
            raise TinyKDError("The training set is empty.", "check the data files and task.train_limit.")
        self.ds = batch_view(ds)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        self.collate = collator(ds, tokenizer)
        self.batches_per_epoch = math.ceil(len(ds) / (batch_size * self.world_size))
        self.lengths = (np.fromiter((len(x) for x in self.ds["input_ids"]), dtype=np.int64, count=len(self.ds))
                        if group_by_length else None)

    def global_batches(self, epoch: int) -> list[list[int]]:
        size = self.batch_size * self.world_size
        batches = epoch_batches(len(self.ds), size, self.seed, epoch, True, self.lengths)
        if self.world_size > 1 and len(batches[-1]) < size:
            order = [i for b in batches for i in b]
            need = size - len(batches[-1])
            batches[-1] = batches[-1] + (order * (need // len(order) + 1))[:need]
        return batches

    def iterate(self, start_micro_step: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        epoch, offset = divmod(start_micro_step, self.batches_per_epoch)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        while True:
            for idx in self.global_batches(epoch)[offset:]:
                yield self.collate(self.ds.select(idx[lo:hi] if self.world_size > 1 else idx).to_list())
            epoch, offset = epoch + 1, 0


def eval_batches(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int):
    """All examples in order, in batches (the last one shorter): nothing is skipped."""
    collate = collator(ds, tokenizer)
    ds = batch_view(ds)
    for idx in epoch_batches(len(ds), batch_size, 0, 0, False):
        yield collate(ds.select(idx).to_list())


def length_sorted_batches(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int):
    """Every example once, in batches of similar length (shortest first), as (positions, batch):
    inference pads each batch only to its own longest example. Callers put the outputs back in
    dataset order with the positions."""
    collate = collator(ds, tokenizer)
    ds = batch_view(ds)
    lengths = np.fromiter((len(x) for x in ds["input_ids"]), dtype=np.int64, count=len(ds))
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(ds), batch_size):
        idx = order[i : i + batch_size].tolist()
        yield idx, collate(ds.select(idx).to_list())

