"""Data: GLUE TSV and hub loaders, the unlabeled corpus, tokenisation cached as Arrow, batching.

Every tokenised dataset is cached with `datasets.save_to_disk` under a key made of
everything that changes its contents (source files, tokenizer vocabulary, lengths,
limits), and written atomically (temp directory + rename).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import datasets
import numpy as np
import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from tinykd.choices import QA, TASK_SOURCES, TOKEN
from tinykd.losses import IGNORE
from tinykd.errors import TinyKDError
from tinykd.tasks import TaskSpec

datasets.disable_progress_bars()

MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
# what a training or inference batch holds: the model's inputs, the gold labels (per text, per token, or an
# answer's start and end), cached teacher outputs. Other columns (a token task's word ids, a QA window's
# offsets and context) stay in the dataset for scoring.
BATCH_COLUMNS = (*MODEL_INPUTS, "labels", "start_positions", "end_positions", "teacher_logits", "teacher_rep")


# ----------------------------------------------------------------------------- cache


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
    from tinykd.run import atomic_directory

    # another process may finish the same entry first: its copy is kept (the same rows)
    atomic_directory(final, lambda tmp: ds.save_to_disk(str(tmp)), if_exists="keep")
    return datasets.load_from_disk(str(final))


# ----------------------------------------------------------------------------- GLUE


def read_glue_tsv(path: Path, spec: TaskSpec, limit: Optional[int] = None) -> dict[str, list]:
    g = spec.glue
    """Parse one GLUE TSV file into columns text_a, text_b, label.

    GLUE files are tab-separated with no quoting (quotes are literal text), so they are
    split on tabs rather than read with a CSV dialect. Every problem names the file and line.
    """
    if not path.is_file():
        raise TinyKDError(
            f"Task {spec.name}: data file {path} not found.",
            "set task.data_dir=<dir holding the GLUE TSV files> (or TINYKD_DATA=<dir with glue/>).",
        )
    columns: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    need = max(c for c in (g.text_a, g.text_b, g.label) if c is not None)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise TinyKDError(f"{path} line {line} is not UTF-8 ({e.reason} at byte {e.start}).",
                          "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from e
    start = 1 if g.header else 0
    for lineno, line in enumerate(lines[start:], start=start + 1):
        if limit is not None and len(columns["label"]) >= limit:
            break
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) <= need or (g.label == -1 and len(fields) < 2):
            raise TinyKDError(
                f"{path} line {lineno}: {len(fields)} tab-separated columns, but task {spec.name} "
                f"reads column {need + 1}.",
                "check the file is the GLUE TSV for this task (task=<name>), unmodified.",
            )
        raw = fields[g.label].strip()
        if spec.is_regression:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not 0.0 <= value <= 5.0:
                raise TinyKDError(
                    f"{path} line {lineno}: score '{raw}' is not a number in [0, 5].",
                    "fix or remove that row.",
                )
            label = value
        else:
            if raw not in g.label_values:
                raise TinyKDError(
                    f"{path} line {lineno}: label '{raw}' is out of range for task {spec.name} "
                    f"(expected one of {list(g.label_values)}).",
                    "fix or remove that row, or check task=<name> matches the file.",
                )
            label = g.label_values.index(raw)
        columns["text_a"].append(fields[g.text_a].strip())
        columns["text_b"].append(fields[g.text_b].strip() if g.text_b is not None else None)
        columns["label"].append(label)
    if not columns["label"]:
        raise TinyKDError(f"{path} holds no examples.", "point task.data_dir at a non-empty GLUE TSV directory.")
    return columns


def load_glue_split(spec: TaskSpec, split: str, source: str, data_dir: str, limit: Optional[int]) -> datasets.Dataset:
    """Raw (untokenised) examples of one split, as a `datasets.Dataset`."""
    g = spec.glue
    if source == "tsv":
        fname = g.train_file if split == "train" else g.dev_file
        cols = read_glue_tsv(Path(data_dir) / fname, spec, limit)
        return datasets.Dataset.from_dict(cols)
    if source == "hub":
        hub_split = "train" if split == "train" else g.hub_dev_split
        try:
            ds = datasets.load_dataset("nyu-mll/glue", g.hub_name, split=hub_split)
        except Exception as e:  # offline, or the hub is unreachable
            raise TinyKDError(
                f"Could not load GLUE {g.hub_name} from the Hugging Face hub ({type(e).__name__}: {e}).",
                "connect to the internet (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), or use task.source=tsv "
                "with local GLUE files.",
            ) from e
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        a, b = g.hub_text_keys[0], (g.hub_text_keys[1] if len(g.hub_text_keys) > 1 else None)
        return datasets.Dataset.from_dict(
            {"text_a": ds[a], "text_b": ds[b] if b else [None] * len(ds), "label": ds["label"]}
        )
    raise TinyKDError(f"Unknown task.source '{source}'.", f"use task.source= one of: {', '.join(TASK_SOURCES)}.")


def row_features(spec: TaskSpec) -> datasets.Features:
    """The untokenised columns of a task's rows: text_a, text_b (None for single texts) and the label (a
    class id, a float for regression, a 0/1 float per class for multi-label). Also stage=augment's output."""
    if spec.is_multi_label:
        label = datasets.Sequence(datasets.Value("float32"))
    else:
        label = datasets.Value("float32" if spec.is_regression else "int64")
    return datasets.Features({"text_a": datasets.Value("string"), "text_b": datasets.Value("string"), "label": label})


def tokenize_pairs(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int) -> datasets.Dataset:
    def encode(batch):
        b = batch["text_b"] if any(t is not None for t in batch["text_b"]) else None
        enc = tokenizer(batch["text_a"], b, truncation=True, max_length=max_len)
        out = {k: enc[k] for k in MODEL_INPUTS if k in enc}
        out["labels"] = batch["label"]
        return out

    return ds.map(encode, batched=True, remove_columns=ds.column_names)


def load_task_split(
    spec: TaskSpec,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    source: str,
    data_dir: str,
    max_len: int,
    limit: Optional[int],
    cache_dir: str,
    augmented: Optional[str] = None,
    task=None,
) -> datasets.Dataset:
    """Tokenised examples of a task split (columns: model inputs + `labels`), cached. `task`: the config
    node of a task described in task.* (your own data); None for a GLUE task (`spec.glue`)."""
    if split == "train" and augmented:
        aug = Path(augmented)
        if not aug.exists():
            raise TinyKDError(f"Augmented dataset {aug} not found.", "run stage=augment first, or unset task.augmented.")
        src = datasets.load_from_disk(str(aug))
        missing = ({"tokens", "tags"} if spec.type == TOKEN else {"text_a", "text_b", "label"}) - set(src.column_names)
        if missing:
            raise TinyKDError(f"Augmented dataset {aug} lacks columns {sorted(missing)}.",
                              "write it with stage=augment (for this task).")
        if limit is not None:
            src = src.select(range(min(limit, len(src))))
        if spec.type == TOKEN:
            from tinykd import tokendata

            key = cache_key("aug-token", aug.resolve(), src._fingerprint, tokenizer_fingerprint(tokenizer), max_len,
                            limit, task.label_all_subtokens, task.overflow)

            def build():
                ds, stats = tokendata.features(src, tokenizer, max_len, label_all_subtokens=task.label_all_subtokens,
                                               overflow=task.overflow)
                ds.info.description = json.dumps(stats)
                return ds
            ds = cached_dataset(cache_dir, key, build)
            print(f"[tinykd] {spec.name} train (augmented): {describe(ds)}")
            return ds
        key = cache_key("aug", aug.resolve(), src._fingerprint, tokenizer_fingerprint(tokenizer), max_len, limit)
        return cached_dataset(cache_dir, key, lambda: tokenize_pairs(src, tokenizer, max_len))

    if spec.type in (TOKEN, QA):  # a tag per word / an answer span: tinykd/tokendata.py, tinykd/qadata.py
        ds = _span_split(spec, split, tokenizer, task, max_len, limit, cache_dir)
        print(f"[tinykd] {spec.name} {split}: {describe(ds)}")
        return ds
    if task is not None:  # your own data, described in task.* (tinykd/userdata.py)
        from tinykd import userdata

        key = cache_key("custom", spec, userdata.origin(task, split), tokenizer_fingerprint(tokenizer), max_len, limit,
                        list(task.text_columns), task.label_column, task.label_columns)
        return cached_dataset(cache_dir, key, lambda: tokenize_pairs(
            userdata.load_split(task, spec, split, str(Path(cache_dir) / "raw"), limit), tokenizer, max_len))
    g = spec.glue
    if source == "tsv":
        fname = g.train_file if split == "train" else g.dev_file
        origin = file_fingerprint(Path(data_dir) / fname) if (Path(data_dir) / fname).is_file() else "missing"
    else:
        origin = f"hub:{g.hub_name}"
    if origin == "missing":  # raise the clear error before building a cache key
        read_glue_tsv(Path(data_dir) / fname, spec)
    key = cache_key("glue", spec.name, split, origin, tokenizer_fingerprint(tokenizer), max_len, limit)
    return cached_dataset(
        cache_dir,
        key,
        lambda: tokenize_pairs(load_glue_split(spec, split, source, data_dir, limit), tokenizer, max_len),
    )


def _span_split(spec: TaskSpec, split: str, tokenizer: PreTrainedTokenizerBase, task, max_len: int,
                limit: Optional[int], cache_dir: str) -> datasets.Dataset:
    """A token-classification or QA split as features (sub-word labels; windows of a long sentence or
    context), cached. What the building counted (windows, truncations, skips) is kept in the dataset's
    `info.description` (JSON), for `describe`."""
    from tinykd import userdata

    raw_cache = str(Path(cache_dir) / "raw")
    if spec.type == TOKEN:
        from tinykd import tokendata

        overflow = task.overflow if split == "train" else "window"  # dev and test score every word
        settings = (task.tokens_column, task.tags_column, task.conll_token_column, task.conll_tag_column,
                    task.tag_scheme, task.label_all_subtokens, overflow)

        def build():
            raw = tokendata.load_split(task, spec.label_names, split, raw_cache, limit)
            return tokendata.features(raw, tokenizer, max_len, label_all_subtokens=task.label_all_subtokens,
                                      overflow=overflow)
    else:
        from tinykd import qadata

        settings = (task.id_column, task.question_column, task.context_column, task.answers_column,
                    task.version_2_with_negative, task.doc_stride, task.max_question_len)

        def build():
            raw, read = qadata.load_split(task, split, raw_cache, limit)
            make = qadata.train_features if split == "train" else qadata.eval_features
            ds, made = make(raw, tokenizer, max_len=max_len, doc_stride=task.doc_stride,
                            max_question_len=task.max_question_len)
            return ds, read | made

    def build_and_note():
        ds, stats = build()
        ds.info.description = json.dumps(stats)
        return ds

    key = cache_key(spec.type, spec, split, userdata.origin(task, split), tokenizer_fingerprint(tokenizer), max_len,
                    limit, task.format, *settings)
    return cached_dataset(cache_dir, key, build_and_note)


def build_notes(ds: datasets.Dataset) -> dict:
    """What building a token or QA split counted (tinykd/tokendata.py, tinykd/qadata.py), or {}."""
    try:
        return json.loads(ds.info.description or "{}")
    except json.JSONDecodeError:
        return {}


def describe(ds: datasets.Dataset) -> str:
    """One line on what a split's building did, nothing left out: every nonzero count it made."""
    notes = build_notes(ds)
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in notes.items() if v) or f"{len(ds)} examples"


def example_count(ds: datasets.Dataset) -> int:
    """Examples in a split: sentences or questions for a token or QA split (whose rows are windows)."""
    for group in ("sentence", "example"):
        if group in ds.column_names:
            return len(set(ds[group]))
    return len(ds)


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


def gold_labels(batch: dict, task_type: str) -> torch.Tensor:
    """A batch's gold labels as `losses.task_loss` takes them: QA's start and end positions as (B, 2)."""
    if task_type == QA:
        return torch.stack((batch["start_positions"], batch["end_positions"]), dim=-1)
    return batch["labels"]


def prediction_mask(batch: dict, task_type: str) -> Optional[torch.Tensor]:
    """Where `losses.prediction_loss` compares teacher and student: a token task's labelled tokens,
    a QA window's real tokens; None for a text task (one prediction per example)."""
    if task_type == TOKEN:
        return batch["labels"] != IGNORE
    if task_type == QA:
        return batch["attention_mask"].bool()
    return None


# ----------------------------------------------------------------------------- corpus


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


# ----------------------------------------------------------------------------- batching


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[list[int]]:
    """Index lists for one pass; the order depends only on (seed, epoch), so a resumed run
    sees the same batches. The last, shorter batch is kept."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


class Batcher:
    """Micro-batches for a training loop counted in steps: `micro_step` k of the run is
    always the same batch, whatever process or resume produced it.

    With several ranks (a DeepSpeed job) each global batch holds `batch_size` x ranks examples
    and rank r takes the r-th consecutive slice of it: together the ranks see exactly the batches
    one process with `batch_size` x ranks would, none twice and none lost. The last, shorter batch
    of an epoch is filled from the epoch's first examples so every rank gets a full slice."""

    def __init__(self, ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, seed: int,
                 rank: Optional[int] = None, world_size: Optional[int] = None):
        from tinykd import distributed

        if len(ds) == 0:
            raise TinyKDError("The training set is empty.", "check the data files and task.train_limit.")
        self.ds = batch_view(ds)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        self.collate = collator(ds, tokenizer)
        self.batches_per_epoch = math.ceil(len(ds) / (batch_size * self.world_size))

    def global_batches(self, epoch: int) -> list[list[int]]:
        size = self.batch_size * self.world_size
        batches = epoch_batches(len(self.ds), size, self.seed, epoch, True)
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

