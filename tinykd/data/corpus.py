"""The unlabeled corpus for general distillation (and augmentation's sources): text files, one paragraph per line,
tokenised and packed into blocks of `max_len` tokens, cached."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Optional, Sequence

import datasets
from transformers import PreTrainedTokenizerBase

from tinykd.data.cache import cache_key, cached_dataset, file_fingerprint, tokenizer_fingerprint
from tinykd.errors import TinyKDError


def corpus_files(corpus_dir: str, patterns: Sequence[str], exclude: Sequence[str]) -> list[Path]:
    root = Path(corpus_dir)
    if not root.is_dir():
        raise TinyKDError(
            f"Corpus directory {root} not found.",
            "set paths.corpus_dir=<dir of .txt files, one paragraph per line> (or TINYKD_DATA).",
        )
    files = sorted(
        {p for pat in patterns for p in root.glob(pat) if p.is_file()
         and not any(fnmatch.fnmatch(p.name, x) for x in exclude)}
    )
    if not files:
        raise TinyKDError(
            f"No corpus files match {list(patterns)} in {root}.",
            "set corpus.files=[<glob>, ...] or paths.corpus_dir.",
        )
    return files


def _read_lines(path: Path, max_lines: Optional[int]) -> list[str]:
    lines = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    lines.append(line)
                    if max_lines is not None and len(lines) >= max_lines:
                        break
    except UnicodeDecodeError as e:
        raise TinyKDError(f"Corpus file {path} is not UTF-8 ({e}).", "re-encode it as UTF-8.") from e
    return lines


def pack_blocks(token_lists: list[list[int]], block_len: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Concatenate token lists and cut them into `[CLS] ... [SEP]` blocks of at most `block_len`.

    The last, shorter block is kept: no text is dropped.
    """
    body = block_len - 2
    stream = [t for toks in token_lists for t in toks]
    return [[cls_id, *stream[i : i + body], sep_id] for i in range(0, len(stream), body)]


def load_corpus(
    tokenizer: PreTrainedTokenizerBase,
    *,
    corpus_dir: str,
    patterns: Sequence[str],
    exclude: Sequence[str],
    max_lines: Optional[int],
    max_len: int,
    cache_dir: str,
) -> datasets.Dataset:
    """Unlabeled text → token blocks of `max_len` (one file's lines concatenated in order), cached."""
    files = corpus_files(corpus_dir, patterns, exclude)
    key = cache_key("corpus", [file_fingerprint(f) for f in files], tokenizer_fingerprint(tokenizer), max_lines, max_len)

    def build():
        blocks: list[list[int]] = []
        for f in files:
            lines = _read_lines(f, max_lines)
            if not lines:
                continue
            ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
            blocks.extend(pack_blocks(ids, max_len, tokenizer.cls_token_id, tokenizer.sep_token_id))
        if not blocks:
            raise TinyKDError(f"Corpus files {[str(f) for f in files]} hold no text.", "point paths.corpus_dir at text.")
        return datasets.Dataset.from_dict(
            {
                "input_ids": blocks,
                "token_type_ids": [[0] * len(b) for b in blocks],
                "attention_mask": [[1] * len(b) for b in blocks],
            }
        )

    return cached_dataset(cache_dir, key, build)
