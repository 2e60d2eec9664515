"""Token classification data: a tag per word (named entities, part of speech), from your own files.

Reading. A split is a list of sentences, each a list of words and a list of string tags, from a CoNLL
column file (`.conll`: a token per line, sentences separated by a blank or whitespace-only line;
`.conllu`: CoNLL-U, FORM and UPOS by default) or from any file `tinykd.data.files` reads (two list
columns, `task.tokens_column` and `task.tags_column`: JSON Lines, Parquet, a save_to_disk directory, a hub
dataset). Integer tags are indices into `task.labels` when it is set, else into the names of the
column's `ClassLabel` (hub datasets), else they stand for themselves ("0", "1", ...). Every problem is
a `TinyKDError` naming the file and the line (column files) or row, and the fix.

Tags. The tag set is `task.labels` (its order gives the ids), else every tag of the training split,
sorted (numerically when every tag is an integer, as `tinykd.data.text` does for class labels). With
`task.tag_scheme=iob2` every tag must be `O`, `B-<type>` or `I-<type>`. An `I-X` that follows neither
`B-X` nor `I-X` is accepted: seqeval and conlleval read it as the start of an entity (`ill_formed_count`
counts them, for the caller to report).

Features. Words are split into sub-tokens; a word's first sub-token carries its tag and the others are
ignored (-100) unless `label_all_subtokens`. A sentence longer than the model's input is cut into
consecutive, non-overlapping windows of whole words (every word scored exactly once), or truncated,
and what was cut is counted, never dropped silently. `word_predictions` / `word_gold` turn per-token
outputs back into one tag per word of every sentence, and `scores` scores them at the word level
(seqeval's conlleval-compatible entity scores; word accuracy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import datasets
import numpy as np
from seqeval.metrics import f1_score, precision_score, recall_score

from tinykd.choices import OVERFLOWS, TOKEN, TOKEN_METRICS
from tinykd.data.cache import tokenizer_fingerprint
from tinykd.data.files import (TRANSFER, Rows, data_format, origin, read_rows, read_utf8, require_columns,
                               sorted_labels, split_source, transfer_lines)
from tinykd.errors import TinyKDError
from tinykd.losses import IGNORE
from tinykd.tasks import TaskSpec

AUGMENTED_KEY = "aug-token"  # the cache key's first part for stage=augment's rows of this type
AUGMENTED_COLUMNS = ("tokens", "tags")  # what stage=augment's rows of this type hold

NO_WORD = -1  # word_ids of a special token ([CLS], [SEP])
COLUMN_FORMATS = ("conll", "conllu")
CONLLU_FORM, CONLLU_UPOS = 1, 3
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document separator: not a sentence
NOT_BIO_FIX = ("set task.tag_scheme=none for a tag set that is not BIO, e.g. part-of-speech tags; with integer tags, "
               "set task.labels to the tag names in id order; or fix the tag.")
COLUMNS_FIX = ("give every token line its token and its tag (separated by a tab, or by spaces), a blank line between "
               "sentences; or set task.conll_token_column / task.conll_tag_column (0-based) to the file's columns.")


# ----------------------------------------------------------------------------- the task type's functions


def spec(task, metrics: tuple[str, ...], raw_cache: str) -> TaskSpec:
    """The task's spec: its tags (`tag_names`) in id order."""
    return TaskSpec(task.name, task.problem_type, tag_names(task, raw_cache), metrics, type=TOKEN)


def read(task, spec: TaskSpec, split: str, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """The split as `tokens` and `tags` (`load_sentences`); nothing is counted until the words are featurised."""
    return load_sentences(task, spec.label_names, split, raw_cache, limit), {}


def featurise(raw: datasets.Dataset, tokenizer, task, split: str, max_len: int) -> tuple[datasets.Dataset, dict]:
    """`features` with the task's settings."""
    return features(raw, tokenizer, max_len, label_all_subtokens=task.label_all_subtokens,
                    overflow=_overflow(task, split))


def _overflow(task, split: str) -> str:
    """What a sentence longer than a window becomes: task.overflow in training; dev and test score every word."""
    return task.overflow if split == "train" else "window"


def augmented_settings(task) -> tuple:
    """What, beside the rows, changes stage=augment's featurised rows (a training split's)."""
    return (task.label_all_subtokens, task.overflow)


def cache_parts(task, spec: TaskSpec, split: str, tokenizer, max_len: int, limit: Optional[int]) -> tuple:
    """Everything a featurised split depends on, for its cache key."""
    settings = (task.tokens_column, task.tags_column, task.conll_token_column, task.conll_tag_column,
                task.tag_scheme, task.label_all_subtokens, _overflow(task, split))
    return (TOKEN, spec, split, origin(task, split), tokenizer_fingerprint(tokenizer), max_len, limit, task.format,
            *settings)


def has_labels(task, split: str, raw_cache: str) -> bool:
    """Whether `split` carries tags: CoNLL column files always do; a table, when it has the tags column."""
    if not task.hub and data_format(Path(split_source(task, split)).expanduser(), task.format) in COLUMN_FORMATS:
        return True
    return task.tags_column in read_rows(task, split, raw_cache).ds.column_names


def read_transfer(task, spec: TaskSpec, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """task.transfer's sentences as `tokens` and placeholder `tags` (the first tag; never read: the teacher tags the
    words): a .txt file's lines split on whitespace, else a table's `task.tokens_column` (a list of words a row)."""
    lines = transfer_lines(task)
    if lines is not None:
        words = [line.split() for line in lines]
    else:
        rows = read_rows(task, TRANSFER, raw_cache)
        require_columns(rows, [task.tokens_column], "task.tokens_column")
        words = []
        for i, value in enumerate(rows.ds[task.tokens_column]):
            if not isinstance(value, list) or not value or not all(isinstance(w, str) and w.strip() for w in value):
                raise TinyKDError(f"{rows.at(i)}: '{task.tokens_column}' holds {str(value)[:80]}, not a list of words.",
                                  "give each row a non-empty list of words (or use a .txt file: a sentence a line).")
            words.append(value)
    n = len(words) if limit is None else min(limit, len(words))
    raw = datasets.Dataset.from_dict({"tokens": words[:n], "tags": [[0] * len(w) for w in words[:n]]},
                                     features=raw_features(spec.label_names))
    return raw, {"transfer_rows": n}


def input_texts(raw: datasets.Dataset) -> list[str]:
    """Each sentence's words as one string, to compare rows across splits."""
    return [" ".join(words) for words in raw["tokens"]]


# ----------------------------------------------------------------------------- where a sentence came from


@dataclass(frozen=True)
class Where:
    """How to name a sentence, or one of its words, in an error: a column file's line, or a table's row."""

    source: str  # the file, or the hub split
    lines: Optional[list[list[int]]] = None  # column files: the line of each word of each sentence
    rows: Optional[Rows] = None  # files read by tinykd.data.files: its row (and line) naming

    def at(self, i: int, j: Optional[int] = None) -> str:
        """Sentence i (0-based): its first line or its row; with j, word j's line (or the row and the word)."""
        if self.lines is not None:
            return f"{self.source} line {self.lines[i][0 if j is None else j]}"
        row = self.rows.at(i) if self.rows is not None else f"{self.source} row {i + 1}"
        return row if j is None else f"{row}, word {j + 1}"


# ----------------------------------------------------------------------------- reading


def read_sentences(task, split: str, cache_dir: str) -> tuple[list[list[str]], list[list[str]], Where]:
    """The split's sentences as words and string tags, and where each came from (for errors).

    `.conll` (or task.format=conll): a token per line, fields split on tabs when the line has one, else on
    spaces; the token in column task.conll_token_column (default 0), the tag in task.conll_tag_column (default
    the last field); a blank or whitespace-only line ends a sentence; `-DOCSTART-` lines are skipped.
    `.conllu`: comments, multiword-token ranges (3-4) and empty nodes (8.1) skipped; FORM and UPOS by default.
    Anything else is read by tinykd.data.files: list columns task.tokens_column and task.tags_column.
    """
    source = split_source(task, split)
    if source is None:
        raise TinyKDError(f"task.{split} is not set.", f"set task.{split} to your {split} file.")
    path = Path(source).expanduser()
    kind = None if task.hub or not path.is_file() else data_format(path, task.format)
    if kind in COLUMN_FORMATS:
        words, tags, where = _read_columns(path, kind, task.conll_token_column, task.conll_tag_column)
    else:  # everything else (and a missing file, which read_rows names) goes through tinykd.data.files
        words, tags, where = _read_table(task, split, cache_dir)
    if not words:
        raise TinyKDError(f"{where.source} holds no sentences.", f"point task.{split} at a file with sentences.")
    return words, tags, where


def _read_columns(path: Path, kind: str, token_col: Optional[int],
                  tag_col: Optional[int]) -> tuple[list[list[str]], list[list[str]], Where]:
    """A CoNLL / CoNLL-U file, with each word's line kept so that errors can name it."""
    conllu = kind == "conllu"
    token_col = (CONLLU_FORM if conllu else 0) if token_col is None else token_col
    default_tag = CONLLU_UPOS if conllu else None  # None: the line's last field
    tag_col = default_tag if tag_col is None else tag_col
    blocks: list[list[tuple[str, str, int]]] = [[]]  # each sentence's (token, tag, line)
    # split on "\n" only: str.splitlines would also break at characters a tweet may hold (U+2028, U+0085)
    for n, raw in enumerate(read_utf8(path).split("\n"), start=1):
        line = raw.rstrip("\r")
        fields = _fields(line, conllu)
        if fields is None or (not conllu and fields[0] == DOCSTART):
            if blocks[-1]:  # a sentence ends at a blank line (and at a document separator)
                blocks.append([])
            continue
        if not fields:  # a CoNLL-U comment, multiword token or empty node: not a word of the sentence
            continue
        tag_at = len(fields) - 1 if tag_col is None else tag_col
        if token_col >= len(fields) or tag_at >= len(fields) or tag_at == token_col:
            tag_desc = f"column {tag_col}" if tag_col is not None else "the last field"
            raise TinyKDError(
                f"{path} line {n}: {len(fields)} field(s) ({line[:80]!r}), but the token is column {token_col} "
                f"and the tag {tag_desc} (0-based; {'tab-separated' if conllu else 'tabs, else spaces'}).",
                COLUMNS_FIX if not conllu else
                "give every word line CoNLL-U's 10 tab-separated columns, or set task.conll_token_column / "
                "task.conll_tag_column to the file's columns.")
        token, tag = fields[token_col].strip(), fields[tag_at].strip()
        if not token or not tag:
            raise TinyKDError(f"{path} line {n}: the {'token' if not token else 'tag'} is empty ({line[:80]!r}).",
                              "give every word a token and a tag, or remove the line.")
        blocks[-1].append((token, tag, n))
    blocks = [b for b in blocks if b]
    sentences = [[token for token, _, _ in b] for b in blocks]
    tags = [[tag for _, tag, _ in b] for b in blocks]
    return sentences, tags, Where(str(path), lines=[[n for _, _, n in b] for b in blocks])


def _fields(line: str, conllu: bool) -> Optional[list[str]]:
    """A line's fields; None for a sentence break (a blank line), [] for a line that holds no word."""
    if not line.strip():
        return None
    if not conllu:
        # tabs when the line has them (a token may then hold spaces), else any run of whitespace
        return line.split("\t") if "\t" in line else line.split()
    if line.startswith("#"):
        return []
    fields = line.split("\t")
    word_id = fields[0]
    return [] if "-" in word_id or "." in word_id else fields  # 3-4: a multiword token; 8.1: an empty node


def _read_table(task, split: str, cache_dir: str) -> tuple[list[list[str]], list[list[str]], Where]:
    """Two list columns of a file tinykd.data.files reads (JSON Lines, Parquet, a datasets directory, a hub split)."""
    rows = read_rows(task, split, cache_dir)
    require_columns(rows, [task.tokens_column], "task.tokens_column")
    require_columns(rows, [task.tags_column], "task.tags_column")
    names = _int_tag_names(task, rows)
    where = Where(rows.where, rows=rows)
    sentences, tags = [], []
    for i, (words, values) in enumerate(zip(rows.ds[task.tokens_column], rows.ds[task.tags_column])):
        for column, value in ((task.tokens_column, words), (task.tags_column, values)):
            if not isinstance(value, list):
                raise TinyKDError(f"{where.at(i)}: '{column}' holds {value!r}, not a list.",
                                  "give each row a list of tokens and a list of tags (JSON Lines, Parquet), or use "
                                  "a .conll file (a token and its tag per line).")
        if not words:
            raise TinyKDError(f"{where.at(i)}: '{task.tokens_column}' is an empty list.",
                              "remove the row, or give it its tokens and tags.")
        if len(words) != len(values):
            raise TinyKDError(f"{where.at(i)}: {len(words)} tokens ('{task.tokens_column}') but {len(values)} tags "
                              f"('{task.tags_column}').", "give every token exactly one tag.")
        for j, word in enumerate(words):
            if not isinstance(word, str) or not word.strip():
                raise TinyKDError(f"{where.at(i, j)}: the token is {word!r}, not a non-empty string.",
                                  "remove the token (and its tag), or give it text.")
        sentences.append(words)
        tags.append([_tag_name(v, names, where, i, j) for j, v in enumerate(values)])
    return sentences, tags, where


def _int_tag_names(task, rows: Rows) -> Optional[list[str]]:
    """What integer tags stand for: task.labels, else the column's ClassLabel names (hub datasets), else nothing."""
    if task.labels:
        return [str(x).strip() for x in task.labels]
    feature = getattr(rows.ds.features[task.tags_column], "feature", None)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _tag_name(value, names: Optional[list[str]], where: Where, i: int, j: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if names is None:
            return str(value)
        if 0 <= value < len(names):
            return names[value]
        raise TinyKDError(f"{where.at(i, j)}: tag {value} is not an index into the {len(names)} tag names "
                          f"{names}.", "fix the tag, or list every tag name in task.labels, in id order.")
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise TinyKDError(f"{where.at(i, j)}: the tag is {value!r}, not a tag name or a tag id.",
                      "give every token a tag: a string, or an integer (an index into task.labels).")


# ----------------------------------------------------------------------------- tags


def tag_names(task, cache_dir: str) -> tuple[str, ...]:
    """The tags in id order: task.labels, else the training split's tags sorted (numerically when all are
    integers), checked against task.tag_scheme."""
    if task.labels:
        names = tuple(str(x).strip() for x in task.labels)
        if len(set(names)) != len(names):
            raise TinyKDError(f"task.labels={list(names)} names a tag twice.", "list each tag once.")
        if task.tag_scheme == "iob2":
            bad = [t for t in names if not _is_iob2(t)]
            if bad:
                raise TinyKDError(f"task.labels: tag {bad[0]!r} is not BIO (task.tag_scheme=iob2 takes O, B-<type> "
                                  "and I-<type>).", NOT_BIO_FIX)
        return names
    _, tags, where = read_sentences(task, "train", cache_dir)
    if task.tag_scheme == "iob2":
        _check_iob2(tags, where)
    keys = {t for sentence in tags for t in sentence}
    if len(keys) < 2:
        raise TinyKDError(f"{where.source}: every word has the tag {next(iter(keys))!r}: one tag cannot be learnt.",
                          "check the tag column (task.conll_tag_column / task.tags_column), or give the training "
                          "data at least two tags.")
    # integer tags (ids without names) in numeric order, so that "10" follows "9" and ids keep their order
    numeric = all(re.fullmatch(r"-?\d+", k) for k in keys)
    return tuple(sorted_labels(keys, numeric))


def _is_iob2(tag: str) -> bool:
    return tag == "O" or (tag[:2] in ("B-", "I-") and bool(tag[2:].strip()))


def _check_iob2(tags: list[list[str]], where: Where) -> None:
    for i, sentence in enumerate(tags):
        for j, tag in enumerate(sentence):
            if not _is_iob2(tag):
                typeless = " (a B-/I- tag needs a type, e.g. B-person)" if tag in ("B-", "I-", "B", "I") else ""
                raise TinyKDError(f"{where.at(i, j)}: tag {tag!r} is not BIO: task.tag_scheme=iob2 takes O, "
                                  f"B-<type> and I-<type>{typeless}.", NOT_BIO_FIX)


def ill_formed_count(tags: Sequence[Sequence[int]], names: Sequence[str]) -> int:
    """How many I-X tags follow neither B-X nor I-X (or open a sentence). Accepted, not errors: seqeval and
    conlleval read such a tag as the start of an entity; a caller reports the count so that it is seen."""
    count = 0
    for sentence in tags:
        previous = "O"
        for t in sentence:
            tag = names[t]
            count += tag.startswith("I-") and previous not in ("B-" + tag[2:], tag)
            previous = tag
    return count


def raw_features(names: Sequence[str]) -> datasets.Features:
    """The columns of a loaded split: the words, and their tags as ids into `names`."""
    return datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                              "tags": datasets.List(datasets.ClassLabel(names=list(names)))})


def load_sentences(task, names: tuple[str, ...], split: str, cache_dir: str,
               limit: Optional[int] = None) -> datasets.Dataset:
    """The split as `tokens` and `tags` (ids into `names`), every sentence checked, then the first `limit` kept."""
    words, tags, where = read_sentences(task, split, cache_dir)
    if task.tag_scheme == "iob2":
        _check_iob2(tags, where)
    index = {name: k for k, name in enumerate(names)}
    ids = []
    for i, sentence in enumerate(tags):
        row = []
        for j, tag in enumerate(sentence):
            if tag not in index:
                fix = ("add it to task.labels (every tag, in id order), or fix the line or row." if task.labels else
                       "a tag the training split never uses cannot be learnt: fix the line or row, or add the tag "
                       "to the training data (or list every tag in task.labels, in id order).")
                raise TinyKDError(f"{where.at(i, j)}: tag {tag!r} is not one of the task's tags ({list(names)}).",
                                  fix)
            row.append(index[tag])
        ids.append(row)
    n = len(words) if limit is None else min(limit, len(words))
    return datasets.Dataset.from_dict({"tokens": words[:n], "tags": ids[:n]}, features=raw_features(names))


# ----------------------------------------------------------------------------- sub-tokens and windows


def _windows(counts: Sequence[int], room: int) -> list[tuple[int, int]]:
    """Consecutive word spans [start, end) whose sub-tokens fit in `room`, each as long as fits. A word
    longer than `room` gets a window of its own (to be cut to its first sub-tokens)."""
    spans, start, used = [], 0, 0
    for j, count in enumerate(counts):
        if j > start and used + count > room:
            spans.append((start, j))
            start, used = j, 0
        used += count
    spans.append((start, len(counts)))
    return spans


def _word_labels(word_ids: Sequence[Optional[int]], offset: int, tags: Sequence[int],
                 label_all_subtokens: bool) -> tuple[list[int], list[int]]:
    """Each token's label and sentence-level word index, for one window whose first word is word `offset`."""
    labels, words = [], []
    previous = None
    for w in word_ids:
        if w is None:
            labels.append(IGNORE)
            words.append(NO_WORD)
        else:
            first = w != previous
            labels.append(tags[offset + w] if first or label_all_subtokens else IGNORE)
            words.append(offset + w)
        previous = w
    return labels, words


def features(raw: datasets.Dataset, tokenizer, max_len: int, *, label_all_subtokens: bool = False,
             overflow: str = "window") -> tuple[datasets.Dataset, dict]:
    """Tokenised windows of `raw` (tokens, tags), with labels per token, and counts of what did not fit.

    Labels: a word's first sub-token carries its tag id; its other sub-tokens -100 (ignored by losses and
    metrics), or, with `label_all_subtokens`, the word's tag too (so with BIO tags a continuation piece of
    a B-X word carries B-X, as Hugging Face's run_ner does without its b_to_i option); special tokens -100.

    A sentence whose sub-tokens do not fit in `max_len` (less the tokenizer's special tokens) is split
    into consecutive non-overlapping windows of whole words, each as long as fits (overflow="window":
    every word lands in exactly one window, so every word is scored once), or only its first window is
    kept (overflow="truncate"). A single word longer than a window is cut to its first sub-tokens. A word
    the tokenizer turns into no sub-token at all (e.g. a lone emoji variation selector) is fed as the
    unknown token, so that it still carries its tag and gets a prediction.

    Columns: the tokenizer's input_ids, token_type_ids (when it returns them), attention_mask; `labels`;
    `word_ids` (each token's word index in the whole sentence, -1 for special tokens); `sentence` (the row
    of `raw`), `window` (0, 1, ... within the sentence) and `num_words` (the sentence's words, so that
    missing words can be told). Rows are in sentence then window order. The stats dict counts sentences,
    features, sentences `windowed` (more than one window) and `truncated`, `words_dropped` (truncation),
    `words_cut` (longer than a window) and `words_unknown` (fed as the unknown token).
    """
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow={overflow!r}: expected one of {OVERFLOWS}")
    room = max_len - tokenizer.num_special_tokens_to_add()
    if room < 1:
        raise TinyKDError(f"task.max_seq_len={max_len} leaves no room for words beside the tokenizer's "
                          f"{tokenizer.num_special_tokens_to_add()} special tokens.", "raise task.max_seq_len.")
    sentences, tags = list(raw["tokens"]), list(raw["tags"])
    stats = dict(sentences=len(sentences), features=0, windowed=0, truncated=0, words_dropped=0, words_cut=0,
                 words_unknown=0)
    # first pass: each word's number of sub-tokens (no special tokens), to place the window breaks
    pieces = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    window_words, origin = [], []  # each window's words, and its (sentence, window, first word)
    for i, words in enumerate(sentences):
        counts = [0] * len(words)
        for w in pieces.word_ids(i):
            if w is not None:
                counts[w] += 1
        words = _with_unknown(words, counts, tokenizer, i, stats)
        spans = _windows(counts, room)
        if len(spans) > 1 and overflow == "window":
            stats["windowed"] += 1
        elif len(spans) > 1:
            stats["truncated"] += 1
            stats["words_dropped"] += len(words) - spans[0][1]
            spans = spans[:1]
        for k, (start, end) in enumerate(spans):
            stats["words_cut"] += sum(c > room for c in counts[start:end])
            window_words.append(words[start:end])
            origin.append((i, k, start))
    # second pass: the windows with their special tokens; truncation only cuts a single word longer than `room`
    enc = tokenizer(window_words, is_split_into_words=True, truncation=True, max_length=max_len)
    columns: dict[str, list] = {k: list(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    columns.update(labels=[], word_ids=[], sentence=[], window=[], num_words=[])
    for f, (i, k, start) in enumerate(origin):
        labels, words = _word_labels(enc.word_ids(f), start, tags[i], label_all_subtokens)
        for column, value in (("labels", labels), ("word_ids", words), ("sentence", i), ("window", k),
                              ("num_words", len(sentences[i]))):
            columns[column].append(value)
    stats["features"] = len(origin)
    return datasets.Dataset.from_dict(columns), stats


def _with_unknown(words: list[str], counts: list[int], tokenizer, i: int, stats: dict) -> list[str]:
    """The words, those without any sub-token replaced by the unknown token (counts updated in place)."""
    empty = [j for j, c in enumerate(counts) if c == 0]
    if not empty:
        return words
    if tokenizer.unk_token is None:
        raise TinyKDError(f"sentence {i + 1}: word {words[empty[0]]!r} gives no sub-token, and the tokenizer has no "
                          "unknown token to stand for it.", "remove or replace that word in the data.")
    words = list(words)
    for j in empty:
        words[j], counts[j] = tokenizer.unk_token, 1
    stats["words_unknown"] += len(empty)
    return words


# ----------------------------------------------------------------------------- back to words, and scores


def _per_word(feats: datasets.Dataset, values: Callable[[int], Sequence[int]]) -> list[list[int]]:
    """values(f)[t] for each word's first sub-token t, per sentence, windows concatenated."""
    out: list[list[Optional[int]]] = []
    for f, (word_ids, s, n) in enumerate(zip(feats["word_ids"], feats["sentence"], feats["num_words"])):
        if s == len(out):
            out.append([None] * n)
        elif s != len(out) - 1:
            raise ValueError(f"feature {f}: sentence {s} out of order (features must be in sentence order)")
        v = values(f)
        if len(v) != len(word_ids):
            raise ValueError(f"feature {f}: {len(v)} predictions for {len(word_ids)} tokens")
        row, previous = out[s], NO_WORD
        for t, w in enumerate(word_ids):
            if w != NO_WORD and w != previous:
                row[w] = int(v[t])
            previous = w
    for s, row in enumerate(out):
        missing = [j for j, x in enumerate(row) if x is None]
        if missing:
            raise ValueError(f"sentence {s}: {len(missing)} of its {len(row)} words have no token (first: word "
                             f"{missing[0]}); word-level scores need every word: build features with overflow=window")
    return out  # type: ignore[return-value]


def word_predictions(feats: datasets.Dataset, token_predictions: list[np.ndarray]) -> list[list[int]]:
    """Per sentence, the predicted tag id of every word, read at its first sub-token (windows concatenated)."""
    if len(token_predictions) != len(feats):
        raise ValueError(f"{len(token_predictions)} predictions for {len(feats)} features")
    return _per_word(feats, lambda f: token_predictions[f])


def word_gold(feats: datasets.Dataset) -> list[list[int]]:
    """Per sentence, the gold tag id of every word (its first sub-token's label), as `word_predictions` lays it out."""
    labels = feats["labels"]
    return _per_word(feats, lambda f: labels[f])


def scores(predicted: list[list[int]], gold: list[list[int]], names: tuple[str, ...],
           metrics: tuple[str, ...]) -> dict[str, float]:
    """Word-level scores, fractions in [0, 1]: seqeval's default (conlleval-compatible: exact span and type,
    micro-averaged over entities) entity precision, recall and F1, and the share of words tagged right."""
    unknown = [m for m in metrics if m not in TOKEN_METRICS]
    if unknown:
        raise ValueError(f"metrics {unknown}: expected some of {TOKEN_METRICS}")
    if len(predicted) != len(gold) or any(len(p) != len(g) for p, g in zip(predicted, gold)):
        raise ValueError("predicted and gold differ in sentences or in words per sentence")
    out = {}
    if any(m.startswith("entity_") for m in metrics):
        if not all(_is_iob2(n) for n in names):
            raise ValueError(f"entity metrics need BIO tags (O, B-X, I-X); the tags are {list(names)}")
        y_true = [[names[t] for t in sentence] for sentence in gold]
        y_pred = [[names[t] for t in sentence] for sentence in predicted]
        entity = {"entity_precision": precision_score, "entity_recall": recall_score, "entity_f1": f1_score}
        for m in metrics:
            if m in entity:  # no predicted (gold) entity: precision (recall) 0, as conlleval reports it
                out[m] = float(entity[m](y_true, y_pred, zero_division=0))
    if "token_accuracy" in metrics:
        total = sum(len(g) for g in gold)
        right = sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs))
        out["token_accuracy"] = right / total if total else 0.0
    return {m: out[m] for m in metrics}
