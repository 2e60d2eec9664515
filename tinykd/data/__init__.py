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
    augmented_settings(task), AUGMENTED_KEY             stage=augment's rows of that type, featurised (None: none)

Every function here takes the datasets cache directory (`paths.cache`/datasets); the raw files' own cache
(datasets' `load_dataset`) is its `raw/` (`raw_cache`), which the task types' functions are given.

Below them: `files.py` reads a user's file whatever its format (and names every problem's line), `cache.py` keeps
featurised splits as Arrow under keys, `batches.py` turns a featurised split into model inputs, `corpus.py` reads
the unlabeled corpus. A fourth task type is one new module beside text, tokens and qa, and one entry in `TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

import datasets
from transformers import PreTrainedTokenizerBase

from tinykd.choices import QA, SEQUENCE, TOKEN
from tinykd.data import qa, text, tokens
from tinykd.data.cache import cache_key, cached_dataset, describe, notes_of, tokenizer_fingerprint, with_notes
from tinykd.data.corpus import load_corpus
from tinykd.errors import TinyKDError
from tinykd.tasks import TaskSpec, check_settings, default_metrics, described_in_config, get_task

TYPES: dict[str, ModuleType] = {SEQUENCE: text, TOKEN: tokens, QA: qa}

__all__ = ["Split", "TYPES", "build_spec", "describe", "example_count", "has_labels", "load_corpus", "load_split",
           "read"]


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
    if kind.AUGMENTED_KEY is None:
        raise TinyKDError(f"task.augmented={aug}, but a {spec.type.replace('_', ' ')} task takes no augmented rows "
                          "(stage=augment refuses it).", "unset task.augmented.")
    if not aug.exists():
        raise TinyKDError(f"Augmented dataset {aug} not found.", "run stage=augment first, or unset task.augmented.")
    src = datasets.load_from_disk(str(aug))
    missing = ({"tokens", "tags"} if spec.type == TOKEN else {"text_a", "text_b", "label"}) - set(src.column_names)
    if missing:
        raise TinyKDError(f"Augmented dataset {aug} lacks columns {sorted(missing)}.",
                          "write it with stage=augment (for this task).")
    if limit is not None:
        src = src.select(range(min(limit, len(src))))
    key = cache_key(kind.AUGMENTED_KEY, aug.resolve(), src._fingerprint, tokenizer_fingerprint(tokenizer),
                    task.max_seq_len, limit, *kind.augmented_settings(task))

    return _cached(cache_dir, key, lambda: kind.featurise(src, tokenizer, task, "train", task.max_seq_len),
                   f"{spec.name} train (augmented)")


def example_count(ds: datasets.Dataset) -> int:
    """Examples in a split: sentences or questions for a token or QA split (whose rows are windows)."""
    for group in ("sentence", "example"):
        if group in ds.column_names:
            return len(set(ds[group]))
    return len(ds)
