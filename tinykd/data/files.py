"""Reading a user's file, whatever its format: CSV, TSV, JSON, JSON Lines, Parquet, a directory `datasets.save_to_disk`
wrote, or the splits of a hub dataset (`task.hub`). Every task type reads through here (`tinykd.data.text`, `tokens`,
`qa`), and so does `stage=predict`.

Files are read with `datasets` (cached as Arrow under `paths.cache`), after a scan of text files that names the line
of any problem the loaders would report without one (bytes that are not UTF-8, a CSV record with the wrong number of
fields, a line of JSON Lines that does not parse, a JSON column of mixed types). Every problem is a `TinyKDError`
naming the file, the line or row, and the fix. `Rows` is a raw split with the means to name one of its rows.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional, Sequence

import datasets

from tinykd.errors import TinyKDError

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet",
              ".conll": "conll", ".conllu": "conllu"}
README_FIX = "README, \"Your own data\""


# ----------------------------------------------------------------------------- where a split comes from


def split_source(task, split: str) -> Optional[str]:
    """The configured location of `split` (train, dev, test, or transfer: task.transfer): a path, or a hub split
    name."""
    return {"train": task.train, "dev": task.dev, "test": task.test, "transfer": task.transfer}[split]


TRANSFER = "transfer"  # the split name of task.transfer's rows
LINES = ".txt"  # a transfer file of one input per line


def transfer_lines(task) -> Optional[list[str]]:
    """task.transfer's lines when it is a .txt file of one input per line, stripped, blank lines skipped;
    None when it is a table (read by read_rows). A missing or empty file is an error naming it."""
    where = task.transfer
    path = Path(where).expanduser()
    if task.hub and not path.exists():
        return None  # a split of the hub dataset
    if not path.exists():
        raise TinyKDError(f"task.transfer={where}: no such file or directory.",
                          "point task.transfer at a file of unlabeled inputs (a .txt file: one per line).")
    if path.suffix.lower() != LINES:
        return None
    lines = [line.strip() for line in read_utf8(path).split("\n") if line.strip()]
    if not lines:
        raise TinyKDError(f"task.transfer={where} holds no text.", "give it one input per line.")
    return lines


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


def read_utf8(path: Path) -> str:
    """The file's text (a UTF-8 BOM dropped); bytes that are not UTF-8 are an error naming their line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TinyKDError(f"{path} line {line} is not valid UTF-8 ({e.reason} at byte {e.start}).",
                          "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in > out).") from e


def scan_delimited(path: Path, text: str, delimiter: str) -> tuple[list[str], list[int]]:
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


def scan_json_lines(path: Path, text: str) -> list[int]:
    """Each record's line; a line that is not a JSON object is an error naming it."""
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
        text = read_utf8(path)
        if not text.strip():
            raise TinyKDError(f"{path} is empty.", f"point task.{split} at a file with rows.")
        if kind in ("csv", "tsv"):
            delimiter = "\t" if kind == "tsv" else ","
            header, lines = scan_delimited(path, text, delimiter)
            if not lines:
                raise TinyKDError(f"{path} holds no rows.", f"point task.{split} at a file with rows under its header.")
            # every column read as a string (the label's type is decided below, from all rows at once); no value
            # is turned into a missing one ("NA", "null" are text)
            feats = datasets.Features({c: datasets.Value("string") for c in header})
            ds = datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=cache_dir,
                                       delimiter=delimiter, features=feats, keep_default_na=False)
        else:
            lines = scan_json_lines(path, text) if kind == "jsonl" else None
            if kind == "json":
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    lines = scan_json_lines(path, text)  # JSON Lines in a .json file: each line must parse
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
            kind = json_kind(value)
            if kind is None:
                continue
            seen = first.setdefault(column, (kind, n))
            if seen[0] != kind:
                raise TinyKDError(
                    f"{path}: column '{column}' mixes types: a {seen[0]} at {unit} {seen[1]}, a {kind} at {unit} {n}.",
                    f"give every row of '{column}' the same type (labels: all strings or all numbers).")


def json_kind(value) -> Optional[str]:
    """A JSON value's type as an error message names it; None for null."""
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


def require_columns(rows: Rows, names: Sequence[str], key: str) -> None:
    """Refuse a split without the columns `names` (the option `key` named them), listing the columns it has."""
    have = rows.ds.column_names
    missing = [c for c in names if c not in have]
    if missing:
        raise TinyKDError(f"{rows.where}: no column {', '.join(map(repr, missing))} ({key}). "
                          f"Its columns are: {', '.join(have)}.",
                          f"set {key} to columns of the file.")


def sorted_labels(keys: set[str], numeric: bool) -> list[str]:
    """Class (or tag) names in id order: numbers in numeric order (so that "10" follows "9"), else sorted."""
    return sorted(keys, key=float) if numeric else sorted(keys)
