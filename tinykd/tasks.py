"""What a task is, as the stages see it: its problem type, classes, metrics and whether it pairs
texts (`TaskSpec`); and the GLUE registry, where each task's file layout is data (`GlueFiles`).

A task is either one of the GLUE tasks below (task=sst2, ...) or your own data described in the
config (`task.train`, `task.text_columns`, ...: tinykd/data/ builds its spec, reading the
label set from the training split). Both give the same `TaskSpec`; everything after loading
(losses, metrics, the teacher gate, export) reads only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tinykd.choices import (DEFAULT_METRICS, METRICS, MULTI_LABEL, QA, QA_METRICS, REGRESSION, SEQUENCE, SINGLE_LABEL,
                            TOKEN, TOKEN_METRICS)
from tinykd.errors import TinyKDError


@dataclass(frozen=True)
class GlueFiles:
    """Where a GLUE task's fields sit in its TSV files (0-based columns), and its hub names."""

    text_a: int
    text_b: Optional[int]  # None: single-sentence task
    label: int
    # raw label strings as they appear in the file, in class-id order; None: regression
    label_values: Optional[tuple[str, ...]]
    header: bool = True
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    hub_name: str = ""
    hub_text_keys: tuple[str, ...] = ("sentence",)
    hub_dev_split: str = "validation"


@dataclass(frozen=True)
class AnswerSearch:
    """How an extractive QA model's answer is read from its start and end logits (tinykd/squad.py)."""

    n_best: int = 20  # start and end candidates per window
    max_answer_len: int = 30  # tokens
    version_2: bool = False  # SQuAD 2.0: "no answer" ([CLS]) competes with the best span
    null_threshold: float = 0.0


@dataclass(frozen=True)
class TaskSpec:
    name: str
    problem_type: str  # choices.PROBLEM_TYPES (Hugging Face's config.problem_type values)
    # class names in class-id order (id2label); None: regression
    label_names: Optional[tuple[str, ...]]
    metrics: tuple[str, ...]  # the first is the one checkpoints are selected on
    pair: bool = False  # two texts per example (text_a, text_b)
    glue: Optional[GlueFiles] = None  # a GLUE task's file layout; None: the task's data is described in task.*
    # what is predicted (choices.TASK_TYPES): a label per text (pair), a tag per word (label_names: the tags),
    # or an answer span (two outputs per token, start and end: label_names None)
    type: str = SEQUENCE
    answer_search: Optional[AnswerSearch] = None  # extractive QA only

    @property
    def num_labels(self) -> int:
        if self.type == QA:
            return 2
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_token(self) -> bool:
        return self.type == TOKEN

    @property
    def is_qa(self) -> bool:
        return self.type == QA

    @property
    def is_regression(self) -> bool:
        return self.problem_type == REGRESSION

    @property
    def is_multi_label(self) -> bool:
        return self.problem_type == MULTI_LABEL

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


def _glue(name, files: GlueFiles, names, metrics) -> TaskSpec:
    kind = REGRESSION if files.label_values is None else SINGLE_LABEL
    return TaskSpec(name, kind, names, metrics or DEFAULT_METRICS[kind], files.text_b is not None, files)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _glue("sst2", GlueFiles(0, None, 1, ("0", "1"), hub_name="sst2", hub_text_keys=("sentence",)),
              ("negative", "positive"), ("accuracy",)),
        _glue("cola", GlueFiles(3, None, 1, ("0", "1"), header=False, hub_name="cola", hub_text_keys=("sentence",)),
              ("unacceptable", "acceptable"), ("matthews", "accuracy")),
        _glue("mrpc", GlueFiles(3, 4, 0, ("0", "1"), hub_name="mrpc", hub_text_keys=("sentence1", "sentence2")),
              ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        _glue("rte", GlueFiles(1, 2, 3, ("entailment", "not_entailment"), hub_name="rte",
                               hub_text_keys=("sentence1", "sentence2")),
              ("entailment", "not_entailment"), ("accuracy",)),
        _glue("stsb", GlueFiles(7, 8, 9, None, hub_name="stsb", hub_text_keys=("sentence1", "sentence2")),
              None, ("pearson", "spearman")),
        _glue("wnli", GlueFiles(1, 2, 3, ("0", "1"), hub_name="wnli", hub_text_keys=("sentence1", "sentence2")),
              ("not_entailment", "entailment"), ("accuracy",)),
        _glue("mnli", GlueFiles(8, 9, -1, ("contradiction", "entailment", "neutral"), dev_file="dev_matched.tsv",
                                hub_name="mnli", hub_text_keys=("premise", "hypothesis"),
                                hub_dev_split="validation_matched"),
              ("contradiction", "entailment", "neutral"), ("accuracy",)),
        _glue("qnli", GlueFiles(1, 2, 3, ("entailment", "not_entailment"), hub_name="qnli",
                                hub_text_keys=("question", "sentence")),
              ("entailment", "not_entailment"), ("accuracy",)),
        _glue("qqp", GlueFiles(3, 4, 5, ("0", "1"), hub_name="qqp", hub_text_keys=("question1", "question2")),
              ("not_duplicate", "duplicate"), ("f1", "accuracy")),
    ]
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TinyKDError(
            f"Unknown task '{name}': not a GLUE task, and task.train is not set.",
            f"choose one of: {', '.join(TASKS)} (task=<name>), or describe your own data: task=custom "
            "task.train=<file> task.dev=<file> task.text_columns=[<column>] task.label_column=<column> "
            "(README, \"Your own data\").",
        )
    return TASKS[name]


def described_in_config(task) -> bool:
    """Whether the `task` config node describes the user's own data (read by tinykd/data/) rather than
    naming a GLUE task: `task.train` or `task.hub` is set."""
    return task.train is not None or task.hub is not None


def valid_metrics(task_type: str, problem_type: str, tag_scheme: str = "iob2") -> tuple[str, ...]:
    """The metrics a task can be scored with: by problem type for a text (pair) task; entity-level
    scores only for BIO tags."""
    if task_type == TOKEN:
        return TOKEN_METRICS if tag_scheme == "iob2" else ("token_accuracy",)
    if task_type == QA:
        return QA_METRICS
    return METRICS[problem_type]


def default_metrics(task_type: str, problem_type: str, tag_scheme: str = "iob2") -> tuple[str, ...]:
    """What a task is scored with unless task.metrics says otherwise; the first selects checkpoints."""
    if task_type == SEQUENCE:
        return DEFAULT_METRICS[problem_type]
    return valid_metrics(task_type, problem_type, tag_scheme)


def check_settings(task) -> None:
    """What the config alone can say is wrong with a task described in `task.*` (the start-up check;
    its files are read, and checked row by row, by tinykd/data/files.py with text.py, tokens.py and qa.py)."""
    if not task.train or not task.dev:
        raise TinyKDError(f"task={task.name} reads your own data, but task.train and task.dev are not both set.",
                          "set task.train=<file> task.dev=<file> (CSV, TSV, JSON, JSON Lines, Parquet or a "
                          "save_to_disk directory; or split names with task.hub=<dataset id>) (README, \"Your own data\").")
    if task.type != SEQUENCE:
        _check_span_settings(task)
        return
    n = len(task.text_columns or [])
    if n not in (1, 2):
        raise TinyKDError(f"task.text_columns={list(task.text_columns or [])}: a task reads one text column "
                          "(single texts) or two (pairs).", "set task.text_columns=[<column>] or [<first>,<second>].")
    if task.label_columns and task.problem_type != MULTI_LABEL:
        raise TinyKDError("task.label_columns (one 0/1 column per label) describes multi-label data, but "
                          f"task.problem_type={task.problem_type}.",
                          "set task.problem_type=multi_label_classification, or task.label_columns=null.")
    if not task.label_columns and not task.label_column:
        raise TinyKDError("No labels: task.label_column and task.label_columns are both unset.",
                          "set task.label_column=<column>.")
    if task.problem_type == REGRESSION and task.labels:
        raise TinyKDError("task.labels names classes, but task.problem_type=regression has none.",
                          "drop task.labels, or choose a classification problem_type.")
    _check_metrics(task, task.problem_type)


def _check_metrics(task, what: str) -> None:
    valid = valid_metrics(task.type, task.problem_type, task.tag_scheme)
    bad = [m for m in (task.metrics or []) if m not in valid]
    if bad:
        raise TinyKDError(f"task.metrics={list(task.metrics)}: {', '.join(bad)} cannot score "
                          f"{what} (it takes {', '.join(valid)}).",
                          f"set task.metrics to a list of {', '.join(valid)} (the first selects checkpoints).")


def _check_span_settings(task) -> None:
    """Token classification and extractive QA: the settings that belong to text classification are refused."""
    if task.problem_type != SINGLE_LABEL or task.label_columns:
        raise TinyKDError(f"task.type={task.type} predicts one class per token or an answer span: "
                          "task.problem_type and task.label_columns describe text classification.",
                          "drop task.problem_type and task.label_columns.")
    if task.type == QA:
        if task.labels:
            raise TinyKDError("task.labels names classes, but extractive QA predicts answer spans.", "drop task.labels.")
        if task.max_question_len + 3 >= task.max_seq_len:
            raise TinyKDError(
                f"task.max_question_len={task.max_question_len} leaves no room for the context in "
                f"task.max_seq_len={task.max_seq_len} tokens (question + context + 3 special tokens).",
                "raise task.max_seq_len (e.g. 384) or lower task.max_question_len (e.g. 64).")
        if task.doc_stride >= task.max_seq_len - task.max_question_len - 3:
            raise TinyKDError(
                f"task.doc_stride={task.doc_stride} (the overlap of a long context's windows) is not smaller than "
                f"the room a window has for context ({task.max_seq_len - task.max_question_len - 3} tokens): "
                "windows would not advance.", "lower task.doc_stride (e.g. max_seq_len / 3).")
        what = "extractive QA"
    else:
        what = "token classification" + (" with task.tag_scheme=none (entities need BIO tags)"
                                          if task.tag_scheme == "none" else "")
    _check_metrics(task, what)
