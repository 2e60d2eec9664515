"""The data wing: every task's data, from a file (or the hub) to featurised, cached splits.

One module per task type, each with the same functions, chosen here by `spec.type` and nowhere else:

    text.py     sequence classification (GLUE TSVs and the hub; your own files' labels and texts)
    tokens.py   token classification (a tag per word: CoNLL columns, or token and tag list columns)
    qa.py       extractive QA (SQuAD JSON, or one question per row)

    spec(task, metrics, raw_cache) -> TaskSpec         your own data's spec, its labels read from the training split
    read(task, spec, split, raw_cache, limit)           the split's first `limit` rows, checked -> (Dataset, counts)
    featurise(raw, tokenizer, task, split, max_len)     model inputs and labels -> (Dataset, counts)
    cache_parts(task, spec, split, tokenizer, max_len, limit)   what the featurised split depends on (its cache key)
    has_labels(task, split, raw_cache)                  whether a split carries labels (a test split may not)
    augmented_settings(task), AUGMENTED_KEY, AUGMENTED_COLUMNS   stage=augment's rows of that type, featurised
    read_transfer(task, spec, raw_cache, limit)         task.transfer's unlabeled inputs, placeholder labels
    input_texts(raw)                                    each row's input as one string (rows compared across splits)

Every function here takes the datasets cache directory (`paths.cache`/datasets); the raw files' own cache
(datasets' `load_dataset`) is its `raw/` (`raw_cache`), which the task types' functions are given.

Below them: `files.py` reads a user's file whatever its format (and names every problem's line), `cache.py` keeps
featurised splits as Arrow under keys, `batches.py` turns a featurised split into model inputs, `corpus.py` reads
the unlabeled corpus. A fourth task type is one new module beside text, tokens and qa, and one entry in `TYPES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

import datasets
from transformers import PreTrainedTokenizerBase

from tinykd.choices import OTHER_PARAGRAPHS, QA, SEQUENCE, TOKEN
from tinykd.data import qa, text, tokens
from tinykd.data.files import TRANSFER, origin
from tinykd.data.cache import cache_key, cached_dataset, describe, notes_of, tokenizer_fingerprint, with_notes
from tinykd.data.corpus import load_corpus
from tinykd.errors import TinyKDError
from tinykd.tasks import TaskSpec, check_settings, default_metrics, described_in_config, get_task

TYPES: dict[str, ModuleType] = {SEQUENCE: text, TOKEN: tokens, QA: qa}

__all__ = ["Split", "TRANSFER", "TYPES", "build_spec", "check_transfer", "describe", "example_count", "has_labels",
           "load_corpus", "load_split", "load_transfer", "mix", "read"]


@dataclass(frozen=True)
class Split:
    """A featurised split and what building it counted (windows, truncations, skipped answers; {} for texts)."""

    dataset: datasets.Dataset
    notes: dict


def raw_cache(cache_dir: str) -> str:
    """Where the raw files' own cache (datasets' load_dataset) lives under the datasets cache `cache_dir`."""
    return str(Path(cache_dir) / "raw")


def build_spec(task, cache_dir: str) -> TaskSpec:
    """The task's spec: a GLUE task's registry entry, or (your own data, described in task.*) one built from
    `task.*` and the training split (its class names or tags, unless `task.labels` fixes them)."""
    if not described_in_config(task):
        return get_task(task.name)
    check_settings(task)
    metrics = tuple(task.metrics) if task.metrics else default_metrics(task.type, task.problem_type, task.tag_scheme)
    return TYPES[task.type].spec(task, metrics, raw_cache(cache_dir))


def read(task, spec: TaskSpec, split: str, cache_dir: str, limit: Optional[int] = None) -> datasets.Dataset:
    """A split's rows before featurising (stage=augment's input): the first `limit`, each checked (your own data:
    every row of the file is checked first)."""
    return TYPES[spec.type].read(task, spec, split, raw_cache(cache_dir), limit)[0]


def has_labels(task, split: str, cache_dir: str) -> bool:
    """Whether `split` of your own data carries labels (a test split may not)."""
    return TYPES[task.type].has_labels(task, split, raw_cache(cache_dir))


def load_split(spec: TaskSpec, split: str, tokenizer: PreTrainedTokenizerBase, task, cache_dir: str, *,
               limit: Optional[int] = None, augmented: Optional[str] = None) -> Split:
    """A task split (train, dev or test), featurised and cached under `cache_dir`. `task` is the task's config node (`source` and `data_dir` for a GLUE task; `train`, `dev`, the columns
    and settings for your own data); `limit` keeps the first rows; `augmented`: stage=augment's output, read instead
    of the training split. Inputs are cut at `task.max_seq_len` tokens."""
    kind = TYPES[spec.type]
    if split == "train" and augmented:
        return _augmented(kind, spec, tokenizer, task, cache_dir, Path(augmented), limit)

    def build() -> tuple[datasets.Dataset, dict]:
        raw, read_counts = kind.read(task, spec, split, raw_cache(cache_dir), limit)
        ds, made = kind.featurise(raw, tokenizer, task, split, task.max_seq_len)
        return ds, read_counts | made

    key = cache_key(*kind.cache_parts(task, spec, split, tokenizer, task.max_seq_len, limit))
    return _cached(cache_dir, key, build, f"{spec.name} {split}")


def _cached(cache_dir: str, key: str, build, label: str) -> Split:
    """The featurised split under `key`, built (with what building it counted) when it is not cached yet."""

    def noted() -> datasets.Dataset:
        ds, counts = build()
        return with_notes(ds, counts) if counts else ds

    ds = cached_dataset(cache_dir, key, noted)
    notes = notes_of(ds)
    if notes:
        print(f"[tinykd] {label}: {describe(ds)}")
    return Split(ds, notes)


def _augmented(kind: ModuleType, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, task, cache_dir: str,
               aug: Path, limit: Optional[int]) -> Split:
    if not aug.exists():
        raise TinyKDError(f"Augmented dataset {aug} not found.", "run stage=augment first, or unset task.augmented.")
    src = datasets.load_from_disk(str(aug))
    missing = set(kind.AUGMENTED_COLUMNS) - set(src.column_names)
    if missing:
        raise TinyKDError(f"Augmented dataset {aug} lacks columns {sorted(missing)}.",
                          "write it with stage=augment (for this task).")
    if limit is not None:
        src = src.select(range(min(limit, len(src))))
    key = cache_key(kind.AUGMENTED_KEY, aug.resolve(), src._fingerprint, tokenizer_fingerprint(tokenizer),
                    task.max_seq_len, limit, *kind.augmented_settings(task))

    return _cached(cache_dir, key, lambda: kind.featurise(src, tokenizer, task, "train", task.max_seq_len),
                   f"{spec.name} train (augmented)")


def load_transfer(spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, task, cache_dir: str) -> Split:
    """task.transfer's rows (its first task.transfer_limit), featurised as training rows with placeholder labels and
    `transfer` = 1 (the teacher labels them; no gold-label loss reads them). A row whose input equals a dev (or test)
    example's, compared on lower-cased letters and digits, is dropped and counted: transfer data never holds what the
    student is scored on."""
    kind = TYPES[spec.type]
    pairs = task.transfer == OTHER_PARAGRAPHS  # made from the training file, not read from one
    source = (OTHER_PARAGRAPHS, origin(task, "train")) if pairs else origin(task, TRANSFER)
    scored = [s for s in ("dev", "test") if s == "dev" or (task.test and spec.glue is None and
                                                            has_labels(task, s, cache_dir))]

    def build() -> tuple[datasets.Dataset, dict]:
        raw, counts = kind.read_transfer(task, spec, raw_cache(cache_dir), task.transfer_limit)
        seen = {_compared(x) for s in scored for x in kind.input_texts(read(task, spec, s, cache_dir))}
        keep = [i for i, x in enumerate(kind.input_texts(raw)) if _compared(x) not in seen]
        if not keep:
            raise TinyKDError(f"task.transfer={task.transfer}: every one of its {len(raw)} rows equals a dev or test "
                              "example.", "give transfer data that is not what the student is scored on.")
        ds, made = kind.featurise(raw.select(keep), tokenizer, task, "train", task.max_seq_len)
        ds = ds.add_column(TRANSFER, [1] * len(ds))
        return ds, counts | {"equal_to_a_scored_example": len(raw) - len(keep)} | made

    key = cache_key(TRANSFER, source, task.transfer_limit, scored,
                    *[kind.cache_parts(task, spec, s, tokenizer, task.max_seq_len, None) for s in scored],
                    *kind.augmented_settings(task))
    return _cached(cache_dir, key, build, f"{spec.name} transfer")


def check_transfer(spec: TaskSpec, task, cache_dir: str) -> int:
    """Read task.transfer as load_transfer will (every problem a TinyKDError naming it), before any step runs;
    returns its row count."""
    return len(TYPES[spec.type].read_transfer(task, spec, raw_cache(cache_dir), task.transfer_limit)[0])


def _compared(text_: str) -> str:
    """What two inputs are compared on: their letters and digits, lower-cased."""
    return re.sub(r"[\W_]+", "", text_.lower())


def mix(train: datasets.Dataset, transfer: datasets.Dataset, share: Optional[float], seed: int) -> datasets.Dataset:
    """The rows task distillation draws from: every training row once (`transfer` = 0) and transfer rows (1), in the
    columns both hold (they are featurised alike: a token task's word ids among them). `share` None: every transfer
    row once; else round(share / (1 - share) x training rows) transfer rows, so that they are `share` of the rows:
    a seeded random subset of the transfer rows, or, when that is more than there are, all of them repeated in a
    seeded order until there are as many."""
    columns = [c for c in train.column_names if c in transfer.column_names and c != TRANSFER]
    ours = train.select_columns(columns)
    ours = ours.add_column(TRANSFER, [0] * len(ours))
    theirs = transfer.select_columns([*columns, TRANSFER])
    if share is not None:
        wanted = round(share / (1 - share) * len(ours))
        theirs = theirs.shuffle(seed=seed).select([i % len(theirs) for i in range(wanted)])
    return datasets.concatenate_datasets([ours, theirs.cast(ours.features)])


def example_count(ds: datasets.Dataset) -> int:
    """Examples in a split: sentences or questions for a token or QA split (whose rows are windows)."""
    for group in ("sentence", "example"):
        if group in ds.column_names:
            return len(set(ds[group]))
    return len(ds)
