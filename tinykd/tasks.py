"""The GLUE task registry: facts about each task's files, columns, labels and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tinykd.errors import TinyKDError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # 0-based TSV column of each field; text_b is None for single-sentence tasks
    text_a: int
    text_b: Optional[int]
    label: int
    # raw label strings as they appear in the file, in class-id order; None: regression
    label_values: Optional[tuple[str, ...]]
    # human-readable names for id2label, in class-id order
    label_names: Optional[tuple[str, ...]]
    metrics: tuple[str, ...]  # the first is the one we select checkpoints on
    header: bool = True
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    hub_name: str = ""
    hub_text_keys: tuple[str, ...] = ("sentence",)
    hub_dev_split: str = "validation"

    @property
    def num_labels(self) -> int:
        return 1 if self.label_values is None else len(self.label_values)

    @property
    def is_regression(self) -> bool:
        return self.label_values is None

    @property
    def main_metric(self) -> str:
        return self.metrics[0]


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("sst2", 0, None, 1, ("0", "1"), ("negative", "positive"), ("accuracy",),
                 hub_name="sst2", hub_text_keys=("sentence",)),
        TaskSpec("cola", 3, None, 1, ("0", "1"), ("unacceptable", "acceptable"), ("matthews", "accuracy"),
                 header=False, hub_name="cola", hub_text_keys=("sentence",)),
        TaskSpec("mrpc", 3, 4, 0, ("0", "1"), ("not_equivalent", "equivalent"), ("f1", "accuracy"),
                 hub_name="mrpc", hub_text_keys=("sentence1", "sentence2")),
        TaskSpec("rte", 1, 2, 3, ("entailment", "not_entailment"), ("entailment", "not_entailment"),
                 ("accuracy",), hub_name="rte", hub_text_keys=("sentence1", "sentence2")),
        TaskSpec("stsb", 7, 8, 9, None, None, ("pearson", "spearman"),
                 hub_name="stsb", hub_text_keys=("sentence1", "sentence2")),
        TaskSpec("wnli", 1, 2, 3, ("0", "1"), ("not_entailment", "entailment"), ("accuracy",),
                 hub_name="wnli", hub_text_keys=("sentence1", "sentence2")),
        TaskSpec("mnli", 8, 9, -1, ("contradiction", "entailment", "neutral"),
                 ("contradiction", "entailment", "neutral"), ("accuracy",), dev_file="dev_matched.tsv",
                 hub_name="mnli", hub_text_keys=("premise", "hypothesis"), hub_dev_split="validation_matched"),
        TaskSpec("qnli", 1, 2, 3, ("entailment", "not_entailment"), ("entailment", "not_entailment"),
                 ("accuracy",), hub_name="qnli", hub_text_keys=("question", "sentence")),
        TaskSpec("qqp", 3, 4, 5, ("0", "1"), ("not_duplicate", "duplicate"), ("f1", "accuracy"),
                 hub_name="qqp", hub_text_keys=("question1", "question2")),
    ]
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TinyKDError(
            f"Unknown task '{name}'.",
            f"choose one of: {', '.join(TASKS)} (task=<name>).",
        )
    return TASKS[name]
