"""Your own data: a task described in the config (`task.train`, `task.dev`, `task.text_columns`, ...)
rather than in the GLUE registry.

Files are CSV, TSV, JSON, JSON Lines or Parquet, a directory `datasets.save_to_disk` wrote, or the
splits of a hub dataset (`task.hub`). They are read with `datasets` (cached as Arrow under
`paths.cache`), after a scan of text files that names the line of any problem the loaders would
report without one (bytes that are not UTF-8, a CSV record with the wrong number of fields, a line
of JSON Lines that does not parse). Then every row is checked: its text columns are non-empty, its
label is of the column's one type and, outside the training split, one of the training split's
classes. Every problem is a `TinyKDError` naming the file, the row (and line, where the file has
lines) and the fix.

The label set is read from the training split (numbers in numeric order, strings in sorted
order) unless `task.labels` fixes it (and its order: class ids follow it). Problem types:
single-label classification (one label per row), regression (a number per row) and multi-label
classification (a list of labels per row in `task.label_column`, or one 0/1 column per label in
`task.label_columns`).

Every split comes out as the GLUE loaders' columns: `text_a`, `text_b` (None for single texts) and
`label` (a class id; a float; or, multi-label, a 0/1 float per class).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import datasets

from tinykd.data import row_features
from tinykd.choices import MULTI_LABEL, QA, REGRESSION, SEQUENCE, SINGLE_LABEL, TOKEN
from tinykd.errors import TinyKDError
from tinykd.tasks import AnswerSearch, TaskSpec, check_settings, default_metrics

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
              ".conll": "conll", ".conllu": "conllu"}
README_FIX = "README, \"Your own data\""


# ----------------------------------------------------------------------------- where a split comes from


def split_source(task, split: str) -> Optional[str]:
    """The configured location of `split` (train, dev or test): a path, or a hub split name."""
    return {"train": task.train, "dev": task.dev, "test": task.test}[split]


def data_format(path: Path, fmt: str) -> str:
    """The reader for `path`: `task.format`, or (auto) its extension; a directory is a save_to_disk one."""
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "arrow"
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise TinyKDError(
            f"{path}: cannot tell its format from the extension '{path.suffix}'.",
            f"use a file ending in {', '.join(EXTENSIONS)}, a directory written by datasets' save_to_disk, or set "
            "task.format=csv|tsv|json|jsonl|parquet|arrow.")
    return kind


def origin(task, split: str) -> str:
    """What the split's contents depend on, for cache keys: the file's path, size and mtime, or the hub split."""
    where = split_source(task, split)
    if task.hub:
        return f"hub:{task.hub}:{task.hub_config}:{where}"
    path = Path(where)
    if path.is_dir():
        return f"{path.resolve()}:" + ",".join(
            f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(path.iterdir()) if p.is_file())
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


# ----------------------------------------------------------------------------- reading, with line numbers


class Rows:
    """A raw split and how to name one of its rows in an error ('line 7' where the file has lines)."""

    def __init__(self, ds: datasets.Dataset, where: str, lines: Optional[list[int]] = None):
        self.ds, self.where, self.lines = ds, where, lines

    def at(self, i: int) -> str:
        line = f", line {self.lines[i]}" if self.lines is not None and i < len(self.lines) else ""
        return f"{self.where} row {i + 1}{line}"


def _utf8(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TinyKDError(f"{path} line {line} is not valid UTF-8 ({e.reason} at byte {e.start}).",
                          "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out).") from e


def _scan_delimited(path: Path, text: str, delimiter: str) -> tuple[list[str], list[int]]:
    """The header and each record's line; a record with another number of fields than the header is an error."""
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise TinyKDError(f"{path} is empty.", "point the task at a file with a header row and data rows.") from None
    lines = []
    start = reader.line_num + 1
    for record in reader:
        if not record:  # a blank line: the loaders skip it
            start = reader.line_num + 1
            continue
        if len(record) != len(header):
            raise TinyKDError(
                f"{path} line {start}: {len(record)} fields, but the header has {len(header)} ({header}).",
                "fix that line: quote fields that contain the separator "
                f"({'a tab' if delimiter == chr(9) else 'a comma'}) or line breaks, and give every row every column.")
        lines.append(start)
        start = reader.line_num + 1
    return header, lines


def _scan_json_lines(path: Path, text: str) -> list[int]:
    lines = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise TinyKDError(f"{path} line {n} is not valid JSON ({e.msg}, column {e.colno}).",
                              "write one JSON object per line (JSON Lines).") from e
        if not isinstance(value, dict):
            raise TinyKDError(f"{path} line {n} is a JSON {type(value).__name__}, not an object.",
                              "write one JSON object per line, with a key per column.")
        lines.append(n)
    return lines


def read_rows(task, split: str, cache_dir: str) -> Rows:
    """The raw split (every column as the file has it), scanned for problems the loaders would not place."""
    where = split_source(task, split)
    if task.hub:
        try:
            ds = datasets.load_dataset(task.hub, task.hub_config, split=where, cache_dir=cache_dir)
        except Exception as e:  # offline, a misspelt id/config/split
            raise TinyKDError(
                f"Could not load split '{where}' of hub dataset {task.hub} (config {task.hub_config}) "
                f"({type(e).__name__}: {e}).",
                f"check task.hub, task.hub_config and task.{split} (a split name of that dataset), and that this machine "
                "reaches the Hugging Face hub (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE).") from e
        return Rows(ds, f"{task.hub} split {where}")
    path = Path(where).expanduser()
    if not path.exists():
        raise TinyKDError(f"task.{split}={where}: no such file or directory.",
                          f"set task.{split} to your {split} file ({README_FIX}).")
    kind = data_format(path, task.format)
    lines = None
    if kind == "arrow":
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise TinyKDError(f"{path} is not a directory written by datasets' save_to_disk ({e}).",
                              "save it with Dataset.save_to_disk, or point task.{split} at a file.") from e
        if isinstance(ds, datasets.DatasetDict):
            raise TinyKDError(f"{path} holds several splits ({', '.join(ds)}), not one.",
                              f"point task.{split} at one of its split directories, e.g. {path / next(iter(ds))}.")
    elif kind == "parquet":
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache_dir)
    else:
        text = _utf8(path)
        if not text.strip():
            raise TinyKDError(f"{path} is empty.", f"point task.{split} at a file with rows.")
        if kind in ("csv", "tsv"):
            delimiter = "\t" if kind == "tsv" else ","
            header, lines = _scan_delimited(path, text, delimiter)
            if not lines:
                raise TinyKDError(f"{path} holds no rows.", f"point task.{split} at a file with rows under its header.")
            # every column read as a string (the label's type is decided below, from all rows at once); no value
            # is turned into a missing one ("NA", "null" are text)
            feats = datasets.Features({c: datasets.Value("string") for c in header})
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=cache_dir,
                                       delimiter=delimiter, features=feats, keep_default_na=False)
        else:
            lines = _scan_json_lines(path, text) if kind == "jsonl" else None
            if kind == "json":
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    lines = _scan_json_lines(path, text)  # JSON Lines in a .json file: each line must parse
            try:
                ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
            except Exception as e:
                _explain_json_types(path, text, task)
                raise TinyKDError(f"{path} could not be read as JSON rows ({type(e).__name__}: {e}).",
                                  "write a list of objects, or one object per line, with a key per column.") from e
    if len(ds) == 0:
        raise TinyKDError(f"{path} holds no rows.", f"point task.{split} at a file with rows.")
    return Rows(ds, str(path), lines)


def _explain_json_types(path: Path, text: str, task) -> None:
    """When pyarrow cannot type a JSON column, find the column whose rows disagree and say where."""
    try:
        records = json.loads(text)
        numbered = list(enumerate(records if isinstance(records, list) else [], start=1))
        unit = "row"
    except json.JSONDecodeError:
        numbered = [(n, json.loads(x)) for n, x in enumerate(text.splitlines(), start=1) if x.strip()]
        unit = "line"
    first: dict[str, tuple[str, int]] = {}
    for n, record in numbered:
        for column, value in (record.items() if isinstance(record, dict) else ()):
            kind = _json_kind(value)
            if kind is None:
                continue
            seen = first.setdefault(column, (kind, n))
            if seen[0] != kind:
                raise TinyKDError(
                    f"{path}: column '{column}' mixes types: a {seen[0]} at {unit} {seen[1]}, a {kind} at {unit} {n}.",
                    f"give every row of '{column}' the same type (labels: all strings or all numbers).")


def _json_kind(value) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


# ----------------------------------------------------------------------------- columns and labels


def _require_columns(rows: Rows, names: Sequence[str], key: str) -> None:
    have = rows.ds.column_names
    missing = [c for c in names if c not in have]
    if missing:
        raise TinyKDError(f"{rows.where}: no column {', '.join(map(repr, missing))} ({key}). "
                          f"Its columns are: {', '.join(have)}.",
                          f"set {key} to columns of the file.")


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


def _sorted_labels(keys: set[str], numeric: bool) -> list[str]:
    return sorted(keys, key=float) if numeric else sorted(keys)


def label_names(task, rows: Rows) -> tuple[str, ...]:
    """The class names, in class-id order: `task.labels`, else read from the training split."""
    if task.problem_type == MULTI_LABEL and task.label_columns:
        _require_columns(rows, task.label_columns, "task.label_columns")
        names = [str(x) for x in (task.labels or task.label_columns)]
        if len(names) != len(task.label_columns):
            raise TinyKDError(f"task.labels has {len(names)} names but task.label_columns has "
                              f"{len(task.label_columns)} columns.", "give one name per column, in the same order.")
        return tuple(names)
    _require_columns(rows, [task.label_column], "task.label_column")
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
    return tuple(_sorted_labels(keys, numeric))


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
    _require_columns(rows, columns, "task.text_columns")
    out = []
    for c in columns:
        values = rows.ds[c]
        for i, v in enumerate(values):
            if v is None or not str(v).strip():
                raise TinyKDError(f"{rows.at(i)}: the text in column '{c}' is empty.",
                                  "remove the row or give it text.")
        out.append([str(v) for v in values])
    return out[0], (out[1] if len(out) > 1 else None)


# ----------------------------------------------------------------------------- the task


def build_spec(task, cache_dir: str) -> TaskSpec:
    """The task's spec: its class names (a token task's tags) read from the training split (or `task.labels`)."""
    check_settings(task)
    kind = task.problem_type
    metrics = tuple(task.metrics) if task.metrics else default_metrics(task.type, kind, task.tag_scheme)
    if task.type == TOKEN:
        from tinykd import tokendata

        return TaskSpec(task.name, kind, tokendata.tag_names(task, cache_dir), metrics, type=TOKEN)
    if task.type == QA:
        search = AnswerSearch(task.n_best, task.max_answer_len, task.version_2_with_negative)
        return TaskSpec(task.name, kind, None, metrics, type=QA, answer_search=search)
    assert task.type == SEQUENCE
    names = None if kind == REGRESSION else label_names(task, read_rows(task, "train", cache_dir))
    if "f1" in metrics and (names is None or len(names) != 2):
        raise TinyKDError(f"task.metrics includes f1 (the positive class's F1), but the task has "
                          f"{len(names or ())} classes.", "use macro_f1 for more than two classes.")
    return TaskSpec(task.name, kind, names, metrics, pair=len(task.text_columns) == 2)


def load_split(task, spec: TaskSpec, split: str, cache_dir: str, limit: Optional[int] = None) -> datasets.Dataset:
    """The split as text_a, text_b, label, every row checked (then the first `limit` kept)."""
    rows = read_rows(task, split, cache_dir)
    a, b = _texts(task, rows)
    labels = _labels(task, spec, rows, split)
    n = len(a) if limit is None else min(limit, len(a))
    return datasets.Dataset.from_dict({"text_a": a[:n], "text_b": (b or [None] * len(a))[:n], "label": labels[:n]},
                                      features=row_features(spec))


def has_labels(task, split: str, cache_dir: str) -> bool:
    """Whether `split` carries the label column(s) (a test split may not). CoNLL column files and SQuAD
    JSON always do."""
    if task.type != SEQUENCE and not task.hub:
        path = Path(split_source(task, split)).expanduser()
        kind = data_format(path, task.format)
        if kind in ("conll", "conllu", "squad"):
            return True
        if task.type == QA and kind == "json":
            from tinykd import qadata

            if qadata.squad_document(path, required=False) is not None:
                return True
    cols = read_rows(task, split, cache_dir).ds.column_names
    wanted = {TOKEN: [task.tags_column], QA: [task.answers_column]}.get(task.type, task.label_columns or [task.label_column])
    return all(c in cols for c in wanted)
