"""The dataset cache: every tokenised split is saved with `datasets.save_to_disk` under a key made of everything
that changes its contents (source files, tokenizer vocabulary, lengths, limits, settings), written whole or not at
all (`tinykd.atomic`). What building a split counted (windows, truncations, skips) is kept with it (`with_notes`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from tinykd.atomic import atomic_directory

datasets.disable_progress_bars()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides token ids: the vocabulary and the normalisation."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "do_lower_case", None)).encode())
    return h.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:20]


def cached_dataset(cache_dir: str | os.PathLike, key: str, build) -> datasets.Dataset:
    """Load `<cache_dir>/<key>` or build it with `build()` and save it atomically."""
    final = Path(cache_dir) / key
    if final.exists():
        return datasets.load_from_disk(str(final))
    ds = build()
    # another process may finish the same entry first: its copy is kept (the same rows)
    atomic_directory(final, lambda tmp: ds.save_to_disk(str(tmp)), if_exists="keep")
    return datasets.load_from_disk(str(final))


def with_notes(ds: datasets.Dataset, notes: dict) -> datasets.Dataset:
    """`ds` carrying what its building counted (kept in its `info.description`, as JSON, through the cache)."""
    ds.info.description = json.dumps(notes)
    return ds


def notes_of(ds: datasets.Dataset) -> dict:
    """What building a split counted (`with_notes`: a token or QA split's windows, truncations, skips), or {}."""
    try:
        notes = json.loads(ds.info.description or "{}")
    except json.JSONDecodeError:
        return {}
    return notes if isinstance(notes, dict) else {}


def describe(ds: datasets.Dataset) -> str:
    """One line on what a split's building did, nothing left out: every nonzero count it made."""
    notes = notes_of(ds)
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in notes.items() if v) or f"{len(ds)} examples"
