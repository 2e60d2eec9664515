"""Extractive QA data: questions about a paragraph, each answered by a span of it (SQuAD).

`load_questions` reads a split as Hugging Face's squad columns (`id`, `question`, `context`, `answers` = {"text": [...],
"answer_start": [...]}) from SQuAD's nested JSON (`task.format=squad`, or a `.json` file whose top level holds a
"data" list) or from any file `tinykd.data.files.read_rows` reads, with one row per question in the columns
`task.id_column`, `task.question_column`, `task.context_column` and `task.answers_column`. Every question is checked
(a context, a question, an id of its own, an answer unless the task is SQuAD 2.0); each problem is a `TinyKDError`
naming the file, the question id or row, and the fix. An answer that is not where `answer_start` says is counted,
not refused: scoring reads only answer texts, and training drops it.

`train_features` and `eval_features` cut each (question, context) pair into windows of `max_len` tokens, the context
overlapping by `doc_stride` tokens from one window to the next, as Hugging Face's `run_qa` does. Training windows are
labelled with the answer's first and last token ([CLS], position 0, when the window does not hold the whole answer);
evaluation windows keep the offsets that `squad.best_answers` needs to turn logits back into text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import datasets

from tinykd.choices import OTHER_PARAGRAPHS, QA
from tinykd.data.cache import tokenizer_fingerprint
from tinykd.data.files import (TRANSFER, Rows, data_format, origin, read_rows, read_utf8, require_columns,
                               split_source, transfer_lines)
from tinykd.errors import TinyKDError
from tinykd.tasks import AnswerSearch, TaskSpec

AUGMENTED_KEY = "aug-qa"  # the cache key's first part for stage=augment's rows of this type (questions only replaced)
AUGMENTED_COLUMNS = ("id", "question", "context", "answers")  # what stage=augment's rows of this type hold
SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]
CLS_POSITION = 0  # where the tokenizer puts [CLS] with the question first: the "no answer here" label
NO_OFFSET = [-1, -1]  # the offset of every token that is not context (an int, so Arrow stores list<list<int64>>)
BATCH = 1000  # examples per tokenizer call: fast, and bounded memory for the Python lists it returns
SQUAD_FIX = ('write SQuAD\'s nested JSON: {"data": [{"paragraphs": [{"context": "...", "qas": [{"id": "...", '
             '"question": "...", "answers": [{"text": "...", "answer_start": 0}]}]}]}]}.')
ANSWERS_FIX = ('give answers as {"text": [...], "answer_start": [...]} (Hugging Face\'s squad) or as a list of '
               '{"text": ..., "answer_start": ...} objects.')

EXAMPLE_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "question": datasets.Value("string"),
    "context": datasets.Value("string"),
    "answers": {"text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int64"))},
})


# ----------------------------------------------------------------------------- the task type's functions


def spec(task, metrics: tuple[str, ...], raw_cache: str) -> TaskSpec:
    """The task's spec: no classes (the two outputs are an answer's start and end) and how answers are searched."""
    search = AnswerSearch(task.n_best, task.max_answer_len, task.version_2_with_negative)
    return TaskSpec(task.name, task.problem_type, None, metrics, type=QA, answer_search=search)


def read(task, spec: TaskSpec, split: str, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """The questions of `split` and what reading them counted (`load_questions`)."""
    return load_questions(task, split, raw_cache, limit)


def featurise(raw: datasets.Dataset, tokenizer, task, split: str, max_len: int) -> tuple[datasets.Dataset, dict]:
    """Training windows labelled with the answer's tokens, or evaluation windows with their offsets."""
    make = train_features if split == "train" else eval_features
    return make(raw, tokenizer, max_len=max_len, doc_stride=task.doc_stride, max_question_len=task.max_question_len)


def augmented_settings(task) -> tuple:
    """What, beside the rows, changes stage=augment's featurised rows (training windows)."""
    return (task.doc_stride, task.max_question_len)


def cache_parts(task, spec: TaskSpec, split: str, tokenizer, max_len: int, limit: Optional[int]) -> tuple:
    """Everything a featurised split depends on, for its cache key."""
    settings = (task.id_column, task.question_column, task.context_column, task.answers_column,
                task.version_2_with_negative, task.doc_stride, task.max_question_len)
    return (QA, spec, split, origin(task, split), tokenizer_fingerprint(tokenizer), max_len, limit, task.format,
            *settings)


def has_labels(task, split: str, raw_cache: str) -> bool:
    """Whether `split` carries answers: SQuAD's nested JSON always does; a table, when it has the answers column."""
    if not task.hub:
        path = Path(split_source(task, split)).expanduser()
        kind = data_format(path, task.format)
        if kind == "squad" or (kind == "json" and squad_document(path, required=False) is not None):
            return True
    return task.answers_column in read_rows(task, split, raw_cache).ds.column_names



def read_transfer(task, spec: TaskSpec, raw_cache: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """Transfer (question, context) pairs without answers (the teacher gives their start and end): from
    task.transfer, SQuAD's nested JSON (its answers not read) or a table's question and context columns; or, with
    `task.transfer=other_paragraphs`, each training question paired with the next paragraph of its article (SQuAD's
    nested JSON), which the teacher reads as a context that may not hold the answer."""
    if task.transfer == OTHER_PARAGRAPHS:
        pairs = _other_paragraphs(task)
    else:
        if transfer_lines(task) is not None:
            raise TinyKDError(f"task.transfer={task.transfer}: a QA transfer row is a question and a context, not a "
                              "line of text.", "give SQuAD's nested JSON, or a table with the question and context "
                              "columns (task.question_column, task.context_column).")
        path = Path(task.transfer).expanduser()
        document = squad_document(path, required=False) if path.is_file() and path.suffix.lower() == ".json" else None
        if document is not None:
            questions = _nested_questions(path, document, with_answers=False)
        else:
            rows = read_rows(task, TRANSFER, raw_cache)
            require_columns(rows, [task.question_column, task.context_column], "task.question_column/context_column")
            questions = [Question(rows.at(i), "", q, c, [], None) for i, (q, c) in
                         enumerate(zip(rows.ds[task.question_column], rows.ds[task.context_column]))]
        pairs = []
        for q in questions:
            for value, what in ((q.question, "question"), (q.context, "context")):
                if not isinstance(value, str) or not value.strip():
                    raise TinyKDError(f"{q.where}: the {what} is empty.", f"give it its {what}, or remove the row.")
            pairs.append((q.question, q.context))
    n = len(pairs) if limit is None else min(limit, len(pairs))
    rows_out = {"id": [f"transfer-{i}" for i in range(n)], "question": [q for q, _ in pairs[:n]],
                "context": [c for _, c in pairs[:n]], "answers": [{"text": [], "answer_start": []}] * n}
    return datasets.Dataset.from_dict(rows_out, features=EXAMPLE_FEATURES), {"transfer_rows": n}


def _other_paragraphs(task) -> list[tuple[str, str]]:
    path = Path(task.train).expanduser() if task.train else None
    document = squad_document(path, required=False) if path is not None and path.is_file() else None
    if document is None:
        raise TinyKDError(f"task.transfer=other_paragraphs reads the articles of SQuAD's nested JSON, but task.train="
                          f"{task.train} is not such a file.", "point task.transfer at a file of (question, context) "
                          "pairs instead.")
    pairs = []
    for article in document["data"]:
        contexts = [p.get("context") for p in article.get("paragraphs", [])]
        if len(contexts) < 2:
            continue
        for p, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph.get("qas", []):
                pairs.append((qa.get("question"), contexts[(p + 1) % len(contexts)]))
    if not pairs:
        raise TinyKDError(f"task.transfer=other_paragraphs: no article of {path} has two paragraphs.",
                          "point task.transfer at a file of (question, context) pairs instead.")
    return [(q, c) for q, c in pairs if isinstance(q, str) and q.strip() and isinstance(c, str) and c.strip()]


def input_texts(raw: datasets.Dataset) -> list[str]:
    """Each (question, context) pair as one string, to compare rows across splits."""
    return [f"{q} {c}" for q, c in zip(raw["question"], raw["context"])]


# ----------------------------------------------------------------------------- reading


@dataclass
class Question:
    """One question as the file has it, before any check. `where` names it in an error message."""

    where: str
    qid: str
    question: Any
    context: Any
    answers: list[tuple[str, int]]  # (text, answer_start)
    impossible: Optional[bool]  # SQuAD 2.0's is_impossible; None where the data does not say


def _answer_start(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise TinyKDError(f"{where}: an answer's answer_start is {value!r}, not a character position.",
                          "give each answer its start in the context as a whole number of characters.")
    return int(value)


def _answers(where: str, value: Any) -> list[tuple[str, int]]:
    """(text, answer_start) pairs from either squad form: a dict of two lists, or a list of dicts; None: none."""
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            raise TinyKDError(f"{where}: the answers cell is not JSON ({value[:80]!r}).", ANSWERS_FIX) from None
    if value is None:
        return []
    if isinstance(value, dict) and {"text", "answer_start"} <= value.keys():
        texts, starts = value["text"] or [], value["answer_start"] or []
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise TinyKDError(f"{where}: answers hold {texts!r} texts but {starts!r} starts.",
                              "give one answer_start per answer text. " + ANSWERS_FIX)
        pairs = list(zip(texts, starts))
    elif isinstance(value, list) and all(isinstance(a, dict) and {"text", "answer_start"} <= a.keys() for a in value):
        pairs = [(a["text"], a["answer_start"]) for a in value]
    else:
        raise TinyKDError(f"{where}: the answers are {str(value)[:80]}, not answer texts with their starts.",
                          ANSWERS_FIX)
    for text, _ in pairs:
        if not isinstance(text, str):
            raise TinyKDError(f"{where}: an answer text is {text!r}, not a string.", ANSWERS_FIX)
    return [(text, _answer_start(where, start)) for text, start in pairs]


def squad_document(path: Path, required: bool) -> Optional[dict]:
    """The parsed file when it is SQuAD's nested JSON; None (format auto or json) when it is some other JSON."""
    text = read_utf8(path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if not required:
            return None  # JSON Lines in a .json file: read_rows reads it
        raise TinyKDError(f"{path} line {e.lineno} is not valid JSON ({e.msg}, column {e.colno}).", SQUAD_FIX) from e
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return document
    if required:
        raise TinyKDError(f"{path}: task.format=squad, but its top level is not an object with a \"data\" list.",
                          SQUAD_FIX + " Or set task.format=auto for one question per row.")
    return None


def _nested_questions(path: Path, document: dict, with_answers: bool = True) -> list[Question]:
    """Every question of data[].paragraphs[].qas[], in file order (without their answers: none read)."""
    out = []
    for a, article in enumerate(document["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise TinyKDError(f"{path}: data[{a}] has no \"paragraphs\" list.", SQUAD_FIX)
        for p, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise TinyKDError(f"{path}: data[{a}].paragraphs[{p}] has no \"qas\" list.", SQUAD_FIX)
            for q, qa in enumerate(qas):
                place = f"{path} data[{a}].paragraphs[{p}].qas[{q}]"
                if not isinstance(qa, dict):
                    raise TinyKDError(f"{place} is not an object.", SQUAD_FIX)
                qid = "" if qa.get("id") is None else str(qa["id"])
                where = f"{path} question id {qid!r}" if qid.strip() else place
                impossible = None if qa.get("is_impossible") is None else bool(qa["is_impossible"])
                answers = _answers(where, qa.get("answers")) if with_answers else []
                out.append(Question(where, qid, qa.get("question"), paragraph.get("context"), answers, impossible))
    return out


def _flat_questions(task, rows: Rows) -> list[Question]:
    """One question per row, in the columns the task names."""
    keys = {"task.id_column": task.id_column, "task.question_column": task.question_column,
            "task.context_column": task.context_column, "task.answers_column": task.answers_column}
    for key, column in keys.items():
        require_columns(rows, [column], key)
    columns = zip(rows.ds[task.id_column], rows.ds[task.question_column], rows.ds[task.context_column],
                  rows.ds[task.answers_column])
    out = []
    for i, (qid, question, context, answers) in enumerate(columns):
        qid = "" if qid is None else str(qid)
        where = f"{rows.at(i)} (question id {qid!r})" if qid.strip() else rows.at(i)
        out.append(Question(where, qid, question, context, _answers(where, answers), None))
    return out


def _read_questions(task, split: str, cache_dir: str) -> list[Question]:
    where = split_source(task, split)
    if where is None:
        raise TinyKDError(f"task.{split} is not set.", f"set task.{split} to your {split} file.")
    if not task.hub:
        path = Path(where).expanduser()
        if task.format == "squad" and not path.is_file():
            raise TinyKDError(f"task.{split}={where}: no such file (task.format=squad reads one SQuAD JSON file).",
                              f"set task.{split} to your {split} file.")
        json_file = task.format == "json" or (task.format == "auto" and path.suffix.lower() == ".json")
        if path.is_file() and (task.format == "squad" or json_file):
            document = squad_document(path, required=task.format == "squad")
            if document is not None:
                return _nested_questions(path, document)
    return _flat_questions(task, read_rows(task, split, cache_dir))


def _check(questions: Sequence[Question], version_2: bool, source: str) -> None:
    """Refuse what cannot be a QA example: no id, a repeated id, no context, no question, a v1 question unanswered."""
    if not questions:
        raise TinyKDError(f"{source} holds no questions.", "point the task at a file with questions.")
    first: dict[str, str] = {}
    for q in questions:
        if not q.qid.strip():
            raise TinyKDError(f"{q.where}: the question has no id.", "give every question an id of its own.")
        if q.qid in first:
            raise TinyKDError(f"{q.where}: the id {q.qid!r} was already used by {first[q.qid]}.",
                              "give every question an id of its own.")
        first[q.qid] = q.where
        if not isinstance(q.context, str) or not q.context.strip():
            raise TinyKDError(f"{q.where}: the context is empty.", "give the question its paragraph, or remove it.")
        if not isinstance(q.question, str) or not q.question.strip():
            raise TinyKDError(f"{q.where}: the question is empty.", "give it its question text, or remove it.")
        if not version_2 and (q.impossible or not q.answers):
            said = "is marked is_impossible" if q.impossible else "has no answer"
            raise TinyKDError(f"{q.where}: the question {said}, but task.version_2_with_negative=false.",
                              "give it its answer(s), or remove it; set task.version_2_with_negative=true if your data "
                              "has unanswerable questions.")
        if version_2 and q.impossible is False and not q.answers:
            raise TinyKDError(f"{q.where}: is_impossible is false, but the question has no answer.",
                              "give it its answer(s), or mark it \"is_impossible\": true.")


def located(context: str, text: str, start: int) -> bool:
    """Whether the answer `text` is at character `start` of `context` (an empty text is nowhere)."""
    return bool(text.strip()) and 0 <= start and context[start:start + len(text)] == text


def load_questions(task, split: str, cache_dir: str, limit: Optional[int] = None) -> tuple[datasets.Dataset, dict]:
    """The questions of `split` (train, dev or test) as Hugging Face's squad columns, and what reading them found.

    Every question of the file is checked first; then the first `limit` are kept. Returned stats (of those kept):
    questions (read), answers_mismatched (answers not at their answer_start: in the training split dropped, elsewhere
    kept, since scoring reads only texts), unanswerable (SQuAD 2.0 questions without an answer; is_impossible wins
    over any answers given), dropped (training questions left with no located answer; the Dataset has
    questions - dropped rows).
    """
    questions = _read_questions(task, split, cache_dir)
    version_2 = bool(task.version_2_with_negative)
    _check(questions, version_2, f"task.{split}={split_source(task, split)}")
    kept = questions[:limit] if limit is not None else questions
    rows: dict[str, list] = {"id": [], "question": [], "context": [], "answers": []}
    mismatched = unanswerable = dropped = 0
    for q in kept:
        answers = [] if q.impossible else q.answers
        unanswerable += not answers
        found = [(text, start) for text, start in answers if located(q.context, text, start)]
        mismatched += len(answers) - len(found)
        if split == "train":
            if answers and not found:
                dropped += 1
                continue
            answers = found
        rows["id"].append(q.qid)
        rows["question"].append(q.question)
        rows["context"].append(q.context)
        rows["answers"].append({"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]})
    if not rows["id"]:
        raise TinyKDError(f"task.{split}: not one of its {len(kept)} questions has an answer at its answer_start.",
                          "fix the answers' answer_start (characters into the context, from 0).")
    stats = {"questions": len(kept), "answers_mismatched": mismatched, "unanswerable": unanswerable,
             "dropped": dropped}
    return datasets.Dataset.from_dict(rows, features=EXAMPLE_FEATURES), stats


# ----------------------------------------------------------------------------- windows


def check_lengths(max_len: int, doc_stride: int, max_question_len: int) -> None:
    """Refuse window settings that leave no context, or windows that could not advance through a long context."""
    if max_question_len + SPECIAL_TOKENS >= max_len:
        raise TinyKDError(
            f"task.max_question_len={max_question_len} leaves no room for context in task.max_seq_len={max_len} "
            f"tokens ([CLS] question [SEP] context [SEP]).",
            "raise task.max_seq_len or lower task.max_question_len.")
    room = max_len - max_question_len - SPECIAL_TOKENS
    if doc_stride >= room:
        # the tokenizer aborts the process (a Rust panic) when the overlap is not smaller than the window's context
        raise TinyKDError(
            f"task.doc_stride={doc_stride} is not smaller than the {room} context tokens a window holds next to "
            f"the longest question (task.max_seq_len={max_len} - task.max_question_len={max_question_len} - 3).",
            "lower task.doc_stride (run_qa's 128 suits task.max_seq_len=384), or raise task.max_seq_len.")


def _clean_questions(examples: datasets.Dataset) -> list[str]:
    # leading whitespace: some SQuAD questions start with many spaces, and tokenizers that keep spaces spend
    # window room on them
    return [q.lstrip() for q in examples["question"]]


def _question_lengths(tokenizer, questions: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Each question's token offsets, without special tokens (their count is the question's length)."""
    out = []
    for i in range(0, len(questions), BATCH):
        out += tokenizer(list(questions[i:i + BATCH]), add_special_tokens=False,
                         return_offsets_mapping=True)["offset_mapping"]
    return out


def _cut(tokenizer, question: str, offsets: Sequence[tuple[int, int]], max_question_len: int) -> str:
    """The question's text up to the end of its `max_question_len`-th token (shorter if re-tokenising says so)."""
    n = max_question_len
    while True:
        text = question[:offsets[n - 1][1]]
        if n == 1 or len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_question_len:
            return text
        n -= 1


def answer_tokens(offsets: Sequence[Sequence[int]], sequence_ids: Sequence[Optional[int]], start_char: int,
                  end_char: int) -> tuple[int, int]:
    """The window's first and last token of the answer at characters [start_char, end_char) of the context.

    offsets: (tokens, 2) character spans; sequence_ids: 0 question, 1 context, None special. The start token is the
    last context token starting at or before start_char, the end token the first ending at or after end_char; an
    answer not wholly inside the window's context gives (CLS_POSITION, CLS_POSITION).
    """
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not context:
        return CLS_POSITION, CLS_POSITION
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return CLS_POSITION, CLS_POSITION
    start = first
    while start < last and offsets[start + 1][0] <= start_char:
        start += 1
    end = last
    while end > first and offsets[end - 1][1] >= end_char:
        end -= 1
    return (start, end) if end >= start else (CLS_POSITION, CLS_POSITION)


def _windows(tokenizer, questions: Sequence[str], contexts: Sequence[str], max_len: int, doc_stride: int):
    """One tokenizer call: question first, only the context truncated, overlapping windows, no padding."""
    return tokenizer(list(questions), list(contexts), truncation="only_second", max_length=max_len, stride=doc_stride,
                     return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)


def _model_inputs(encoding) -> list[str]:
    return [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoding]


def _int_lists(names: Sequence[str]) -> dict[str, datasets.List]:
    return {name: datasets.List(datasets.Value("int64")) for name in names}


def train_features(examples: datasets.Dataset, tokenizer, *, max_len: int, doc_stride: int,
                   max_question_len: int) -> tuple[datasets.Dataset, dict]:
    """Training windows labelled with the first answer's token span, as run_qa's prepare_train_features.

    examples: load_questions' columns. Returns columns input_ids, token_type_ids (when the tokenizer makes them),
    attention_mask (lists of up to max_len), start_positions, end_positions (ints; CLS_POSITION where the window does
    not hold the whole answer, and for SQuAD 2.0 questions without one). A question longer than `max_question_len`
    tokens is skipped (it would crowd out its context). Stats: examples (given), questions_too_long (skipped),
    features (windows), windows_without_answer (labelled CLS_POSITION).
    """
    check_lengths(max_len, doc_stride, max_question_len)
    if len(examples) == 0:
        raise ValueError("train_features: no examples.")
    questions = _clean_questions(examples)
    keep = [i for i, offsets in enumerate(_question_lengths(tokenizer, questions)) if len(offsets) <= max_question_len]
    if not keep:
        raise TinyKDError(f"Every training question is longer than task.max_question_len={max_question_len} tokens.",
                          "raise task.max_question_len (and task.max_seq_len with it).")
    contexts, answers = list(examples["context"]), list(examples["answers"])
    columns: dict[str, list] = {}
    for b in range(0, len(keep), BATCH):
        rows = keep[b:b + BATCH]
        enc = _windows(tokenizer, [questions[i] for i in rows], [contexts[i] for i in rows], max_len, doc_stride)
        for name in _model_inputs(enc):
            columns.setdefault(name, []).extend(enc[name])
        for w, example in enumerate(enc["overflow_to_sample_mapping"]):
            answer = answers[rows[example]]
            if answer["text"]:
                start_char = answer["answer_start"][0]
                span = answer_tokens(enc["offset_mapping"][w], enc.sequence_ids(w), start_char,
                                     start_char + len(answer["text"][0]))
            else:
                span = (CLS_POSITION, CLS_POSITION)
            columns.setdefault("start_positions", []).append(span[0])
            columns.setdefault("end_positions", []).append(span[1])
    types = _int_lists([k for k in columns if k not in ("start_positions", "end_positions")])
    types.update(start_positions=datasets.Value("int64"), end_positions=datasets.Value("int64"))
    features = datasets.Dataset.from_dict(columns, features=datasets.Features(types))
    without = sum(s == CLS_POSITION for s in columns["start_positions"])
    stats = {"examples": len(examples), "questions_too_long": len(examples) - len(keep), "features": len(features),
             "windows_without_answer": without}
    return features, stats


def eval_features(examples: datasets.Dataset, tokenizer, *, max_len: int, doc_stride: int,
                  max_question_len: int) -> tuple[datasets.Dataset, dict]:
    """Evaluation windows of every example, with what squad.best_answers and squad.references read.

    Columns: input_ids, token_type_ids (when the tokenizer makes them), attention_mask; offset_mapping ([start, end]
    characters of the context for context tokens, NO_OFFSET for question and special tokens); id, context, answers
    (the reference texts) and example (the row of `examples`), repeated on each of an example's windows. A question
    longer than `max_question_len` tokens is cut to its first max_question_len tokens, so that every question is
    still answered and scored. Stats: examples, questions_truncated, features.
    """
    check_lengths(max_len, doc_stride, max_question_len)
    questions = _clean_questions(examples)
    truncated = 0
    for i, offsets in enumerate(_question_lengths(tokenizer, questions)):
        if len(offsets) > max_question_len:
            questions[i] = _cut(tokenizer, questions[i], offsets, max_question_len)
            truncated += 1
    if len(examples) == 0:
        raise ValueError("eval_features: no examples.")
    ids, contexts, answers = list(examples["id"]), list(examples["context"]), list(examples["answers"])
    columns: dict[str, list] = {}
    for b in range(0, len(questions), BATCH):
        enc = _windows(tokenizer, questions[b:b + BATCH], contexts[b:b + BATCH], max_len, doc_stride)
        for name in _model_inputs(enc):
            columns.setdefault(name, []).extend(enc[name])
        for w, example in enumerate(enc["overflow_to_sample_mapping"]):
            row = b + example
            sequence = enc.sequence_ids(w)
            columns.setdefault("offset_mapping", []).append(
                [list(span) if s == 1 else NO_OFFSET for span, s in zip(enc["offset_mapping"][w], sequence)])
            columns.setdefault("id", []).append(ids[row])
            columns.setdefault("context", []).append(contexts[row])
            columns.setdefault("answers", []).append(list(answers[row]["text"]))
            columns.setdefault("example", []).append(row)
    if len(set(columns["example"])) != len(examples):
        raise ValueError("eval_features: an example got no window.")  # the tokenizer always returns at least one
    types = _int_lists(_model_inputs(columns))
    types.update(offset_mapping=datasets.List(datasets.List(datasets.Value("int64"))), id=datasets.Value("string"),
                 context=datasets.Value("string"), answers=datasets.List(datasets.Value("string")),
                 example=datasets.Value("int64"))
    features = datasets.Dataset.from_dict(columns, features=datasets.Features(types))
    return features, {"examples": len(examples), "questions_truncated": truncated, "features": len(features)}
