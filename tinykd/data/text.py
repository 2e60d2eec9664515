"""Sequence classification: a label (or a number, or a set of labels) per text or text pair.

Two sources. A GLUE task (`spec.glue`, tinykd/tasks.py) reads its TSV files (`task.source=tsv`, under
`task.data_dir`) or the hub's `nyu-mll/glue`. Your own data (`task.train`, `task.text_columns`, `task.label_column`,
...) is read through `tinykd.data.files`, then every row is checked: its text columns are non-empty, its label is of
the column's one type and, outside the training split, one of the training split's classes. Every problem is a
`TinyKDError` naming the file, the row (and line, where the file has lines) and the fix.

The label set is read from the training split (numbers in numeric order, strings in sorted order) unless
`task.labels` fixes it (and its order: class ids follow it). Problem types: single-label classification (one label
per row), regression (a number per row) and multi-label classification (a list of labels per row in
`task.label_column`, or one 0/1 column per label in `task.label_columns`).

Every split comes out as the columns `text_a`, `text_b` (None for single texts) and `label` (a class id; a float; or,
multi-label, a 0/1 float per class), then tokenised as pairs. The task type's functions (`spec`, `read`,
`featurise`, `cache_parts`, `has_labels`) are the ones `tinykd.data` calls for every type.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import datasets
from transformers import PreTrainedTokenizerBase

from tinykd.choices import MULTI_LABEL, REGRESSION, SINGLE_LABEL, TASK_SOURCES
from tinykd.data.batches import MODEL_INPUTS
from tinykd.data.cache import file_fingerprint, tokenizer_fingerprint
from tinykd.data.files import TRANSFER, Rows, origin, read_rows, require_columns, sorted_labels, transfer_lines
from tinykd.errors import TinyKDError
from tinykd.tasks import TaskSpec

AUGMENTED_KEY = "aug"  # the cache key's first part for stage=augment's rows of this type
AUGMENTED_COLUMNS = ("text_a", "text_b", "label")  # what stage=augment's rows of this type hold


# ----------------------------------------------------------------------------- the task type's functions


def spec(task, metrics: tuple[str, ...], raw_cache: str) -> TaskSpec:
    """Your own data's spec: its class names read from the training split (or `task.labels`)."""
    kind = task.problem_type
    names = None if kind == REGRESSION else label_names(task, read_rows(task, "train", raw_cache))
    if "f1" in metrics and (names is None or len(names) != 2):
        raise TinyKDError(f"task.metrics includes f1 (the positive class's F1), but the task has "
                          f"{len(names or ())} classes.", "use macro_f1 for more than two classes.")
    return TaskSpec(task.name, kind, names, metrics, pair=len(task.text_columns) == 2)


def read(task, spec: TaskSpec, split: str, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """The split as text_a, text_b, label; nothing is counted. Your own data: every row checked, then the first
    `limit` kept; a GLUE file is read (and checked) up to its `limit`-th example."""
    if spec.glue is not None:
        return load_glue_split(spec, split, task.source, task.data_dir, limit), {}
    rows = read_rows(task, split, raw_cache)
    a, b = _texts(task, rows)
    labels = _labels(task, spec, rows, split)
    n = len(a) if limit is None else min(limit, len(a))
    return datasets.Dataset.from_dict({"text_a": a[:n], "text_b": (b or [None] * len(a))[:n], "label": labels[:n]},
                                      features=row_features(spec)), {}


def featurise(raw: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task, split: str,
              max_len: int) -> tuple[datasets.Dataset, dict]:
    """The model inputs of each row (a pair when text_b is set), truncated to `max_len`, and `labels`."""
    return tokenize_pairs(raw, tokenizer, max_len), {}


def augmented_settings(task) -> tuple:
    """What, beside the rows, changes stage=augment's featurised rows: nothing for texts."""
    return ()


def cache_parts(task, spec: TaskSpec, split: str, tokenizer: PreTrainedTokenizerBase, max_len: int,
                limit: Optional[int]) -> tuple:
    """Everything a featurised split depends on, for its cache key. A GLUE file that is missing is named here."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    if spec.glue is None:
        return ("custom", spec, origin(task, split), fingerprint, max_len, limit, list(task.text_columns),
                task.label_column, task.label_columns)
    g = spec.glue
    if task.source == "tsv":
        path = Path(task.data_dir) / (g.train_file if split == "train" else g.dev_file)
        if not path.is_file():
            read_glue_tsv(path, spec)  # raises the clear error
        where = file_fingerprint(path)
    else:
        where = f"hub:{g.hub_name}"
    return ("glue", spec.name, split, where, fingerprint, max_len, limit)


def has_labels(task, split: str, raw_cache: str) -> bool:
    """Whether `split` of your own data carries the label column(s) (a test split may not)."""
    cols = read_rows(task, split, raw_cache).ds.column_names
    return all(c in cols for c in (task.label_columns or [task.label_column]))


def read_transfer(task, spec: TaskSpec, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """task.transfer's texts as text_a, text_b and a placeholder label (never read: the teacher labels the rows): a
    .txt file's lines (single texts), else a table's `task.text_columns` (one, or two for pairs)."""
    lines = transfer_lines(task)
    if lines is not None:
        if spec.pair:
            raise TinyKDError(f"task.transfer={task.transfer}: task {spec.name} takes text pairs, and a .txt file holds "
                              "one text per line.", "give a CSV, TSV or JSON Lines file with the pair's two columns, "
                              "named in task.text_columns.")
        a, b = lines, None
    else:
        rows = read_rows(task, TRANSFER, raw_cache)
        if len(task.text_columns) != (2 if spec.pair else 1):
            raise TinyKDError(f"task.transfer={task.transfer}: task {spec.name} takes "
                              f"{'text pairs' if spec.pair else 'single texts'}, but task.text_columns names "
                              f"{list(task.text_columns)}.", f"set task.text_columns to the file's "
                              f"{'two text columns' if spec.pair else 'text column'}.")
        a, b = _texts(task, rows)
    n = len(a) if limit is None else min(limit, len(a))
    placeholder = [0.0] * spec.num_labels if spec.is_multi_label else (0.0 if spec.is_regression else 0)
    raw = datasets.Dataset.from_dict({"text_a": a[:n], "text_b": (b or [None] * len(a))[:n], "label": [placeholder] * n},
                                     features=row_features(spec))
    return raw, {"transfer_rows": n}


def input_texts(raw: datasets.Dataset) -> list[str]:
    """Each row's input as one string (a pair's two texts joined), to compare rows across splits."""
    return [a if b is None else f"{a} {b}" for a, b in zip(raw["text_a"], raw["text_b"])]


# ----------------------------------------------------------------------------- GLUE


def read_glue_tsv(path: Path, spec: TaskSpec, limit: Optional[int] = None) -> dict[str, list]:
    """Parse one GLUE TSV file into columns text_a, text_b, label.

    GLUE files are tab-separated with no quoting (quotes are literal text), so they are
    split on tabs rather than read with a CSV dialect. Every problem names the file and line.
    """
    g = spec.glue
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


# ----------------------------------------------------------------------------- your own data's labels and texts


def _number(value) -> Optional[float]:
    """A label value as a number, or None when it is not one ('3', 3, 3.0 are numbers; 'pos' is not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _label_key(value) -> str:
    """The class name a single label value stands for: integral numbers without a decimal point."""
    x = _number(value)
    if x is not None and x.is_integer():
        return str(int(x))
    return str(value).strip() if x is None else repr(x)


def _check_one_type(rows: Rows, column: str, values: list) -> bool:
    """All values numbers (True) or all strings (False); a mix is an error naming a row of each."""
    first_num = first_str = None
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise TinyKDError(f"{rows.at(i)}: the label ('{column}') is empty.",
                              "give every row a label, or remove the row.")
        if _number(v) is None:
            first_str = i if first_str is None else first_str
        else:
            first_num = i if first_num is None else first_num
        if first_num is not None and first_str is not None:
            raise TinyKDError(
                f"Label column '{column}' mixes numbers and strings: {values[first_num]!r} at {rows.at(first_num)}, "
                f"{values[first_str]!r} at {rows.at(first_str)}.",
                "use one kind of label throughout the column (e.g. all class names, or all class ids).")
    return first_str is None


def label_names(task, rows: Rows) -> tuple[str, ...]:
    """The class names, in class-id order: `task.labels`, else read from the training split."""
    if task.problem_type == MULTI_LABEL and task.label_columns:
        require_columns(rows, task.label_columns, "task.label_columns")
        names = [str(x) for x in (task.labels or task.label_columns)]
        if len(names) != len(task.label_columns):
            raise TinyKDError(f"task.labels has {len(names)} names but task.label_columns has "
                              f"{len(task.label_columns)} columns.", "give one name per column, in the same order.")
        return tuple(names)
    require_columns(rows, [task.label_column], "task.label_column")
    values = rows.ds[task.label_column]
    if task.problem_type == MULTI_LABEL:
        keys = set()
        for i, v in enumerate(values):
            keys.update(_label_key(x) for x in _as_list(rows, i, v, task.label_column))
        numeric = all(_number(k) is not None for k in keys)
    else:
        numeric = _check_one_type(rows, task.label_column, values)
        keys = {_label_key(v) for v in values}
    if task.labels:
        names = tuple(_label_key(x) for x in task.labels)
        if len(set(names)) != len(names):
            raise TinyKDError(f"task.labels={list(task.labels)} names a class twice.", "list each class once.")
        return names
    if len(keys) < 2 and task.problem_type == SINGLE_LABEL:
        raise TinyKDError(f"{rows.where}: every row has the label {next(iter(keys))!r}: one class cannot be learnt.",
                          "check task.label_column, or give the training data at least two classes.")
    return tuple(sorted_labels(keys, numeric))


def _as_list(rows: Rows, i: int, value, column: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TinyKDError(f"{rows.at(i)}: '{column}' holds {value!r}, not a list of labels, but "
                      "task.problem_type=multi_label_classification.",
                      "give each row a list of labels (JSON Lines / Parquet), or one 0/1 column per label with "
                      "task.label_columns=[...]; or set task.problem_type to single_label_classification.")


def _labels(task, spec: TaskSpec, rows: Rows, split: str) -> list:
    """Each row's label: a class id, a float (regression) or a 0/1 float per class (multi-label)."""
    index = {n: i for i, n in enumerate(spec.label_names or ())}
    known = f"the training split's classes are {list(spec.label_names or ())}"
    fix_unknown = ("fix or remove the row, or add the class to the training data (or to task.labels)." if split != "train"
                   else "fix or remove the row, or add the class to task.labels.")
    if spec.is_multi_label and task.label_columns:
        out = []
        columns = [rows.ds[c] for c in task.label_columns]
        for i, values in enumerate(zip(*columns)):
            vec = []
            for c, v in zip(task.label_columns, values):
                x = _number(v) if not isinstance(v, bool) else float(v)
                if x not in (0.0, 1.0):
                    raise TinyKDError(f"{rows.at(i)}: label column '{c}' holds {v!r}, not 0 or 1.",
                                      "give every label column 0 or 1 (or true/false) in every row.")
                vec.append(x)
            out.append(vec)
        return out
    values = rows.ds[task.label_column]
    if spec.is_multi_label:
        out = []
        for i, v in enumerate(values):
            vec = [0.0] * spec.num_labels
            for x in _as_list(rows, i, v, task.label_column):
                key = _label_key(x)
                if key not in index:
                    raise TinyKDError(f"{rows.at(i)}: label {x!r} is not a known class ({known}).", fix_unknown)
                vec[index[key]] = 1.0
            out.append(vec)
        return out
    if spec.is_regression:
        out = []
        for i, v in enumerate(values):
            x = _number(v)
            if x is None:
                raise TinyKDError(f"{rows.at(i)}: the regression label ('{task.label_column}') is {v!r}, not a number.",
                                  "give every row a number, or remove the row; or set "
                                  "task.problem_type=single_label_classification for class names.")
            out.append(x)
        return out
    if split != "train":
        _check_one_type(rows, task.label_column, values)
    out = []
    for i, v in enumerate(values):
        key = _label_key(v)
        if key not in index:
            raise TinyKDError(f"{rows.at(i)}: label {v!r} is not one of the task's classes ({known}).", fix_unknown)
        out.append(index[key])
    return out


def _texts(task, rows: Rows) -> tuple[list[str], Optional[list[str]]]:
    columns = list(task.text_columns)
    require_columns(rows, columns, "task.text_columns")
    out = []
    for c in columns:
        values = rows.ds[c]
        for i, v in enumerate(values):
            if v is None or not str(v).strip():
                raise TinyKDError(f"{rows.at(i)}: the text in column '{c}' is empty.",
                                  "remove the row or give it text.")
        out.append([str(v) for v in values])
    return out[0], (out[1] if len(out) > 1 else None)
