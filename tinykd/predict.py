"""Batch prediction over a file (stage=predict): examples read from a text, CSV/TSV or JSON Lines file,
tokenised as the task's evaluation tokenises them, and each model output turned into one JSON Lines record.

Reading. `.txt`: one example per line (a pair task: the two texts separated by a tab; a token task: the
words split on whitespace); blank lines at the end of the file are not examples, a blank line before them is
refused (it would shift every later output against its input line). `.csv`/`.tsv` (a header row), `.jsonl`
and `.json` (JSON Lines, or a list of objects): the columns or fields named by `Columns`. Every problem is a
`TinyKDError` naming the file, the line (or row) and the fix, raised before any model runs.

Features. Texts longer than `max_len` tokens are truncated and counted; a token task's sentence that does not
fit is cut into windows of whole words (tinykd/data/tokens.py: every word gets a tag, as on dev); a QA context
into overlapping windows and a question longer than `max_question_len` truncated (tinykd/data/qa.py).

Records. Per example, in input order: a text task's label and every label's probability (softmax; multi-label:
the labels whose sigmoid exceeds 1/2, and every sigmoid; regression: the score); a token task's words, one
tag per word (read at its first sub-token) and that tag's probability; a QA model's answer and its
probability, found by the same search as `squad.best_answers`. Label names come from the model (id2label).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import datasets
import numpy as np

from tinykd import squad
from tinykd.atomic import atomic_write_text
from tinykd.choices import MULTI_LABEL, QA, REGRESSION, TOKEN
from tinykd.data import files, tokens
from tinykd.errors import TinyKDError
from tinykd.tasks import AnswerSearch

FORMATS = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json"}
DECIMALS = 6  # probabilities and scores in the output
# one example: its texts (a text task: one or two; QA: question, context), or a token task's words
Example = tuple[Union[str, list[str]], ...]


@dataclass(frozen=True)
class Columns:
    """What each example of the input is read from: the task type, its columns (JSON fields), and the config
    key that names each of them (None: a GLUE task, whose column names are GLUE's)."""

    task_type: str  # choices.TASK_TYPES
    names: tuple[str, ...]  # a text task: one or two texts; a token task: the words; QA: question, context
    keys: tuple[Optional[str], ...]

    def fix(self, task_name: str) -> str:
        keys = [k for k in dict.fromkeys(self.keys) if k]
        if keys:
            return f"rename the file's columns, or set {' and '.join(keys)} to the file's column names."
        names = ", ".join(map(repr, self.names))
        return (f"name the file's column(s) {names} (task {task_name} reads GLUE's column names), or describe your "
                "data with task=custom task.text_columns=[<column>] (README, \"Your own data\").")


@dataclass(frozen=True)
class Notes:
    """What making the features cut: examples truncated (a text longer than max_len tokens; a QA question longer
    than max_question_len), and examples split into several windows (token and QA tasks; nothing lost)."""

    truncated: int = 0
    windowed: int = 0


# ----------------------------------------------------------------------------- reading


def input_format(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise TinyKDError(f"input={path}: cannot tell its format from the extension '{path.suffix}'.",
                          f"use a file ending in {', '.join(FORMATS)}.")
    return kind


def read_examples(path: Path, columns: Columns, task_name: str) -> list[Example]:
    """Every example of the input file, in file order, checked (see the module docstring)."""
    if not path.is_file():
        raise TinyKDError(f"input={path}: no such file.", "set input=<your file> (.txt, .csv, .tsv, .jsonl or .json).")
    kind = input_format(path)
    if kind == "txt" and columns.task_type == QA:
        raise TinyKDError(
            f"input={path}: a .txt file holds one text per line, but task {task_name} (extractive QA) needs a "
            "question and a context per example.",
            f"write a .jsonl or .csv file with the columns {columns.names[0]!r} and {columns.names[1]!r} "
            "(task.question_column, task.context_column).")
    text = files.read_utf8(path)
    if not text.strip():
        raise TinyKDError(f"input={path} is empty: no examples to predict.",
                          "point input at a file with one example per line (.txt) or per row.")
    if kind == "txt":
        return _text_lines(path, text, columns)
    records, where = _records(path, text, kind)
    missing = [c for c in columns.names if c not in records[0]]
    if missing:
        what = "column" if kind in ("csv", "tsv") else "field"
        key = _key_of(columns, missing[0], task_name)
        raise TinyKDError(f"{path}: no {what} {', '.join(map(repr, missing))} ({key}). "
                          f"Its {what}s are: {', '.join(records[0]) or 'none'}.", columns.fix(task_name))
    return [_example(record, columns, w, task_name) for record, w in zip(records, where)]


def _key_of(columns: Columns, name: str, task_name: str) -> str:
    return columns.keys[columns.names.index(name)] or f"the column task {task_name} reads"


def _text_lines(path: Path, text: str, columns: Columns) -> list[Example]:
    # "\n" only: str.splitlines would also break inside a line at U+2028 or U+0085
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    pair = len(columns.names) == 2
    out: list[Example] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise TinyKDError(f"{path} line {n} is blank: each line of a .txt input is one example.",
                              "remove the blank line, or give it text.")
        if columns.task_type == TOKEN:
            out.append((line.split(),))
        elif pair:
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise TinyKDError(f"{path} line {n}: {len(parts)} tab-separated text(s), but a pair task's line is "
                                  "<first text><TAB><second text>, both non-empty.",
                                  "separate the two texts of every line by one tab (or use a .csv/.jsonl file).")
            out.append((parts[0], parts[1]))
        else:
            out.append((line,))
    return out


def _records(path: Path, text: str, kind: str) -> tuple[list[dict], list[str]]:
    """The file's rows as dicts, and how to name each in an error ('line 7', or 'row 3' in a JSON list)."""
    if kind in ("csv", "tsv"):
        delimiter = "\t" if kind == "tsv" else ","
        header, lines = files.scan_delimited(path, text, delimiter)  # refuses a row of another width
        if not lines:
            raise TinyKDError(f"input={path} holds no rows under its header: no examples to predict.",
                              "add rows, one example each, under the header.")
        rows = [r for r in csv.reader(text.splitlines(keepends=True), delimiter=delimiter) if r][1:]
        return [dict(zip(header, r)) for r in rows], [f"{path} line {n}" for n in lines]
    if kind == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # JSON Lines in a .json file (one object on a single line: JSON Lines too)
        if isinstance(document, list):
            for i, value in enumerate(document):
                if not isinstance(value, dict):
                    raise TinyKDError(f"{path} row {i + 1} is a JSON {_kind(value)}, not an object.",
                                      "write a list of objects, with a key per column.")
            if not document:
                raise TinyKDError(f"input={path} is an empty list: no examples to predict.", "add examples.")
            return document, [f"{path} row {i + 1}" for i in range(len(document))]
        elif document is not None and (not isinstance(document, dict) or "\n" in text.strip()):
            raise TinyKDError(f"{path} holds a JSON {_kind(document)}, not a list of rows.",
                              "write a list of objects, or one object per line (JSON Lines).")
    lines = files.scan_json_lines(path, text)  # refuses a line that is not a JSON object
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return records, [f"{path} line {n}" for n in lines]


def _kind(value) -> str:
    return files.json_kind(value) or "null"


def _example(record: dict, columns: Columns, where: str, task_name: str) -> Example:
    for name in columns.names:
        if name not in record:
            raise TinyKDError(f"{where}: no field {name!r} ({_key_of(columns, name, task_name)}). Its fields are: "
                              f"{', '.join(record) or 'none'}.", columns.fix(task_name))
    if columns.task_type == TOKEN:
        return (_words(record[columns.names[0]], columns.names[0], where),)
    return tuple(_text(record[name], name, where) for name in columns.names)


def _text(value, name: str, where: str) -> str:
    if isinstance(value, (list, dict)):
        raise TinyKDError(f"{where}: {name!r} holds a JSON {_kind(value)}, not a text.",
                          f"give {name!r} a text in every row.")
    if value is None or not str(value).strip():
        raise TinyKDError(f"{where}: the text in {name!r} is empty.", "remove the row, or give it text.")
    return str(value)


def _words(value, name: str, where: str) -> list[str]:
    """A token task's words: a JSON list of words, or a text split on whitespace."""
    if isinstance(value, list):
        for j, word in enumerate(value):
            if not isinstance(word, str) or not word.strip():
                raise TinyKDError(f"{where}, word {j + 1} of {name!r}: {word!r} is not a non-empty string.",
                                  "remove the word, or give it text.")
        words = list(value)
    else:
        words = _text(value, name, where).split()
    if not words:
        raise TinyKDError(f"{where}: {name!r} holds no words.", "remove the row, or give it words.")
    return words


# ----------------------------------------------------------------------------- features


def text_features(examples: Sequence[Example], tokenizer, max_len: int) -> tuple[datasets.Dataset, Notes]:
    """A text (pair) task's model inputs, one row per example, truncated to `max_len` tokens; counted first."""
    a = [e[0] for e in examples]
    b = [e[1] for e in examples] if len(examples[0]) == 2 else None
    # the full length of each, to count what truncation cuts (verbose=False: no warning for a text longer
    # than the tokenizer's own model_max_length; truncation below takes care of it)
    lengths = [len(ids) for ids in tokenizer(a, b, verbose=False)["input_ids"]]
    enc = tokenizer(a, b, truncation=True, max_length=max_len)
    columns = {k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}
    return datasets.Dataset.from_dict(columns), Notes(truncated=sum(n > max_len for n in lengths))


def token_features(examples: Sequence[Example], tokenizer, max_len: int) -> tuple[datasets.Dataset, Notes]:
    """A token task's windows of whole words (tokens.features, overflow=window: every word predicted once)."""
    words = [e[0] for e in examples]
    raw = datasets.Dataset.from_dict({"tokens": words, "tags": [[0] * len(w) for w in words]})  # tags unread
    feats, stats = tokens.features(raw, tokenizer, max_len, overflow="window")
    return feats, Notes(windowed=stats["windowed"])


def qa_features(examples: Sequence[Example], tokenizer, *, max_len: int, doc_stride: int,
                max_question_len: int) -> tuple[datasets.Dataset, Notes]:
    """A QA task's evaluation windows (qa.eval_features), the example of each in its `example` column."""
    from tinykd.data import qa

    raw = datasets.Dataset.from_dict(
        {"id": [str(i) for i in range(len(examples))], "question": [e[0] for e in examples],
         "context": [e[1] for e in examples], "answers": [{"text": [], "answer_start": []}] * len(examples)},
        features=qa.EXAMPLE_FEATURES)
    feats, stats = qa.eval_features(raw, tokenizer, max_len=max_len, doc_stride=doc_stride,
                                    max_question_len=max_question_len)
    windows = np.bincount(np.asarray(feats["example"]), minlength=len(examples))
    return feats, Notes(truncated=stats["questions_truncated"], windowed=int((windows > 1).sum()))


# ----------------------------------------------------------------------------- records


def label_names(config) -> list[str]:
    """The model's class names in class-id order (its config's id2label; a class without a name: its id)."""
    names = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    return [names.get(i, str(i)) for i in range(config.num_labels)]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _round(x) -> float:
    return round(float(x), DECIMALS)


def text_records(logits: np.ndarray, names: Sequence[str], problem_type: str) -> list[dict]:
    """(N, C) logits -> per example {label, scores} (single-label: argmax, softmax), {labels, scores}
    (multi-label: every label whose logit exceeds 0, i.e. whose sigmoid exceeds 1/2; sigmoids), or {score}
    (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == REGRESSION:
        return [{"score": _round(x[0])} for x in logits]
    if problem_type == MULTI_LABEL:
        probs = 1.0 / (1.0 + np.exp(-logits))
        return [{"labels": [n for n, z in zip(names, x) if z > 0], "scores": dict(zip(names, map(_round, p)))}
                for x, p in zip(logits, probs)]
    probs = _softmax(logits)
    return [{"label": names[int(x.argmax())], "scores": dict(zip(names, map(_round, p)))}
            for x, p in zip(logits, probs)]


def token_records(examples: Sequence[Example], feats: datasets.Dataset, logits: Sequence[np.ndarray],
                  names: Sequence[str]) -> list[dict]:
    """Per sentence: its words, the tag of each (argmax at its first sub-token, windows joined) and that tag's
    probability. `logits[f]`: feature f's (tokens, tags) logits without padding."""
    tags: list[list] = [[None] * len(e[0]) for e in examples]
    scores: list[list] = [[None] * len(e[0]) for e in examples]
    for f, (word_ids, s) in enumerate(zip(feats["word_ids"], feats["sentence"])):
        probs = _softmax(np.asarray(logits[f], dtype=np.float64))
        previous = tokens.NO_WORD
        for t, w in enumerate(word_ids):
            if w != tokens.NO_WORD and w != previous:  # a word's first sub-token carries its tag
                k = int(probs[t].argmax())
                tags[s][w], scores[s][w] = names[k], _round(probs[t, k])
            previous = w
    for s, row in enumerate(tags):
        if None in row:  # windows cover every word (tokens.features, overflow=window)
            raise ValueError(f"sentence {s}: word {row.index(None)} has no token")
    return [{"tokens": list(e[0]), "tags": t, "scores": p} for e, t, p in zip(examples, tags, scores)]


def qa_records(n_examples: int, feats: datasets.Dataset, logits: Sequence[np.ndarray],
               search: AnswerSearch) -> list[dict]:
    """Per question: the answer `squad.best_answers` finds (the best span of any window by start + end logit;
    SQuAD 2.0: "" when the null score wins) and its probability, softmax(start) x softmax(end) over the
    window's context tokens (and [CLS], position 0, with version_2). `logits[f]`: feature f's (tokens, 2)."""
    best: list[tuple[float, str, float]] = [(-math.inf, "", 0.0)] * n_examples  # (logit score, text, probability)
    null: list[tuple[float, float]] = [(math.inf, 0.0)] * n_examples  # (lowest [CLS] score, its probability)
    for f, (ex, context, offsets) in enumerate(zip(feats["example"], feats["context"], feats["offset_mapping"])):
        out = np.asarray(logits[f], dtype=np.float64)
        start, end = out[:, 0], out[:, 1]
        spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        is_context = spans[:, 0] >= 0
        allowed = is_context.copy()
        allowed[0] |= search.version_2
        if not allowed.any():  # a window without context (qa.check_lengths leaves room for some): no answer
            continue
        p_start = np.where(allowed, _softmax(np.where(allowed, start, -np.inf)), 0.0)
        p_end = np.where(allowed, _softmax(np.where(allowed, end, -np.inf)), 0.0)
        if start[0] + end[0] < null[ex][0]:
            null[ex] = (float(start[0] + end[0]), float(p_start[0] * p_end[0]))
        found = squad.best_span(start, end, is_context, n_best=search.n_best, max_answer_len=search.max_answer_len)
        if found is not None and found[0] > best[ex][0]:  # strictly: a tie keeps the earlier window's
            score, s, e = found
            best[ex] = (score, context[spans[s, 0]:spans[e, 1]], float(p_start[s] * p_end[e]))
    out_records = []
    for (score, text, p), (null_score, null_p) in zip(best, null):
        if search.version_2 and null_score > score + search.null_threshold:
            text, p = "", null_p
        out_records.append({"answer": text, "score": _round(p)})
    return out_records


def example_of(feats: datasets.Dataset, task_type: str) -> list[int]:
    """The example (input row, from 0) each feature belongs to: a token task's or a QA task's windows name it."""
    column = {TOKEN: "sentence", QA: "example"}.get(task_type)
    return list(feats[column]) if column else list(range(len(feats)))


def check_finite(outputs: Sequence[np.ndarray], examples: Sequence[int]) -> None:
    """A model output that is not finite is an error naming its example, never a NaN written as a prediction.
    `examples[f]`: the example of output f (`example_of`)."""
    for x, i in zip(outputs, examples):
        if not np.isfinite(x).all():
            raise TinyKDError(f"The model's output for example {i + 1} (input row {i + 1}) is not finite (NaN or inf).",
                              "check the model: its weights or its ONNX export may be broken.")


# ----------------------------------------------------------------------------- writing


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    """One JSON object per line, written atomically (a temp file, then a rename): a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))
