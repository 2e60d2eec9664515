"""stage=predict: batch prediction over a file with an exported model directory (real tiny models made by
`stage=teacher ... debug=smoke`, or saved here), checked against the same models run with plain
`transformers`; the input files a careless user would give, refused with the problem and the fix."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                          BertConfig, BertForQuestionAnswering)

from conftest import REPO, run_stage
from tinykd import predict, squad
from tinykd.choices import MULTI_LABEL, QA, REGRESSION, SEQUENCE, SINGLE_LABEL, TOKEN
from tinykd.errors import TinyKDError
from tinykd.tasks import AnswerSearch

SMOKE = ("debug=smoke",)
TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "bad",
    "the plot is nowhere near as clever as it thinks it is , and the jokes fall flat",
    "an utterly charming film",
    'it says "yes", then it says "no"',  # a comma and quotes: the CSV writer quotes the field
    "dull",
    "one of the year 's best films , with a cast that never puts a foot wrong and a script that knows it",
]


def _compose(*overrides: str):
    """`make_cfg` for module-scoped fixtures (which cannot use the function-scoped one)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["progress=false", *overrides])


def _teacher(tmp_path_factory, cache_dir, task: str) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_RUNS", str(tmp_path_factory.mktemp(f"{task}-runs")))
        mp.setenv("TINYKD_CACHE", str(cache_dir))  # the same tiny teacher the tests' runs_dir uses
        res = run_stage(_compose("stage=teacher", f"task={task}", *SMOKE))
    return Path(res["export"])


@pytest.fixture(scope="module")
def sst2_model(tmp_path_factory, cache_dir) -> Path:
    """A fine-tuned sequence classifier (negative, positive): stage=teacher's export on smoke, once."""
    return _teacher(tmp_path_factory, cache_dir, "sst2")


@pytest.fixture(scope="module")
def wnut_model(tmp_path_factory, cache_dir) -> Path:
    """A fine-tuned token classifier (WNUT-17's 13 BIO tags): stage=teacher's export on smoke, once."""
    return _teacher(tmp_path_factory, cache_dir, "wnut17")


def predict_stage(make_cfg, model: Path, input_path: Path, output: Path, *overrides: str) -> dict:
    return run_stage(make_cfg("stage=predict", *SMOKE, f"model={model}", f"input={input_path}", f"output={output}",
                              *overrides))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def plain_logits(model_dir: Path, texts, max_len: int, pairs=None) -> torch.Tensor:
    """The classifier's logits on each text (pair), one at a time, with plain transformers."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tok(text, pairs[i] if pairs else None, truncation=True, max_length=max_len, return_tensors="pt")
            out.append(model(**enc).logits[0])
    return torch.stack(out)


def assert_records_match(records: list[dict], logits: torch.Tensor, id2label: dict) -> None:
    assert len(records) == len(logits)
    probs = torch.softmax(logits.double(), -1)
    for record, x, p in zip(records, logits, probs):
        assert set(record) == {"label", "scores"}
        assert record["label"] == id2label[int(x.argmax())]
        assert list(record["scores"]) == [id2label[k] for k in range(len(id2label))]
        assert list(record["scores"].values()) == pytest.approx(p.tolist(), abs=1e-5)


# ----------------------------------------------------------------------------- text classification


def test_txt_and_csv_give_one_line_per_input_in_order_with_the_models_own_predictions(make_cfg, sst2_model, tmp_path):
    txt = tmp_path / "texts.txt"
    txt.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    table = tmp_path / "texts.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "sentence", "note"])  # columns by name: other columns are ignored
        writer.writerows([i, t, "x"] for i, t in enumerate(TEXTS))
    # batches of 3 in length order: the longest texts are predicted last, yet written in input order
    a = predict_stage(make_cfg, sst2_model, txt, tmp_path / "a.jsonl", "task=sst2", "predict.batch_size=3")
    b = predict_stage(make_cfg, sst2_model, table, tmp_path / "b.jsonl", "task=sst2", "predict.batch_size=3")
    assert a["examples"] == b["examples"] == len(TEXTS) and a["backend"] == "pytorch"
    assert Path(a["output"]) == tmp_path / "a.jsonl"
    max_len = make_cfg("stage=predict", "task=sst2", *SMOKE).task.max_seq_len
    logits = plain_logits(sst2_model, TEXTS, max_len)
    id2label = AutoModelForSequenceClassification.from_pretrained(sst2_model).config.id2label
    assert id2label == {0: "negative", 1: "positive"}
    for out in (tmp_path / "a.jsonl", tmp_path / "b.jsonl"):
        assert_records_match(read_jsonl(out), logits, id2label)
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temp file behind


def test_a_line_longer_than_max_seq_len_is_truncated_and_counted_not_dropped(make_cfg, sst2_model, tmp_path, capsys):
    max_len = make_cfg("stage=predict", "task=sst2", *SMOKE).task.max_seq_len
    long = " ".join(["a remarkably long and winding review"] * 20)  # far over max_len tokens
    texts = ["fine", long, "awful"]
    tok = AutoTokenizer.from_pretrained(sst2_model)
    assert len(tok(long)["input_ids"]) > 3 * max_len
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n\n\n", encoding="utf-8")  # blank lines at the end are no examples
    res = predict_stage(make_cfg, sst2_model, src, tmp_path / "out.jsonl", "task=sst2")
    assert (res["examples"], res["truncated"]) == (3, 1)
    assert f"1 truncated to task.max_seq_len={max_len} tokens" in capsys.readouterr().out
    id2label = AutoModelForSequenceClassification.from_pretrained(sst2_model).config.id2label
    assert_records_match(read_jsonl(tmp_path / "out.jsonl"), plain_logits(sst2_model, texts, max_len), id2label)


def test_a_pair_task_reads_two_tab_separated_texts_per_line(make_cfg, sst2_model, tmp_path):
    firsts, seconds = ["the cat sat", "a dog", "rain all day"], ["on the mat", "barked twice loudly", "sun"]
    src = tmp_path / "pairs.txt"
    src.write_text("".join(f"{a}\t{b}\n" for a, b in zip(firsts, seconds)), encoding="utf-8")
    # the sst2 model stands in for a pair classifier (two classes; BERT reads the second text as segment 1)
    predict_stage(make_cfg, sst2_model, src, tmp_path / "out.jsonl", "task=mrpc")
    max_len = make_cfg("stage=predict", "task=mrpc", *SMOKE).task.max_seq_len
    id2label = AutoModelForSequenceClassification.from_pretrained(sst2_model).config.id2label
    assert_records_match(read_jsonl(tmp_path / "out.jsonl"), plain_logits(sst2_model, firsts, max_len, seconds),
                         id2label)


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_onnx_backend_predicts_what_pytorch_predicts(make_cfg, sst2_model, tmp_path):
    from tinykd import onnxexport

    model_dir = tmp_path / "model"
    shutil.copytree(sst2_model, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = dict(tok(TEXTS[:2], padding=True, return_tensors="pt"))
    onnxexport.export(model, batch, model_dir / "onnx" / onnxexport.FILES["onnx"], SEQUENCE, opset=18)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"sentence": t}) + "\n" for t in TEXTS), encoding="utf-8")
    ran = predict_stage(make_cfg, model_dir, src, tmp_path / "onnx.jsonl", "task=sst2", "predict.backend=onnx")
    predict_stage(make_cfg, model_dir, src, tmp_path / "torch.jsonl", "task=sst2")
    assert ran["backend"] == "onnx"
    a, b = read_jsonl(tmp_path / "onnx.jsonl"), read_jsonl(tmp_path / "torch.jsonl")
    assert [r["label"] for r in a] == [r["label"] for r in b]
    for x, y in zip(a, b):
        assert list(x["scores"].values()) == pytest.approx(list(y["scores"].values()), abs=1e-4)
    # int8 was not exported: refused, saying how to make it
    with pytest.raises(TinyKDError, match="stage=export") as e:
        predict_stage(make_cfg, model_dir, src, tmp_path / "int8.jsonl", "task=sst2", "predict.backend=int8")
    assert f"model={model_dir}" in e.value.fix and "task=sst2" in e.value.fix
    assert not (tmp_path / "int8.jsonl").exists()


# ----------------------------------------------------------------------------- token classification, QA


def test_a_token_model_writes_one_tag_per_word(make_cfg, wnut_model, tmp_path):
    sentences = [["Emily", "flew", "to", "Paris", "with", "@bob_x"], ["hello"],
                 ["word"] * 60]  # 60 words: more than one window of task.max_seq_len tokens
    src = tmp_path / "in.jsonl"
    rows = [{"tokens": sentences[0]}, {"tokens": " ".join(sentences[1])}, {"tokens": sentences[2]}]  # a list or a text
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    res = predict_stage(make_cfg, wnut_model, src, tmp_path / "out.jsonl", "task=wnut17")
    assert (res["examples"], res["truncated"], res["windowed"]) == (3, 0, 1)
    records = read_jsonl(tmp_path / "out.jsonl")
    tok = AutoTokenizer.from_pretrained(wnut_model)
    model = AutoModelForTokenClassification.from_pretrained(wnut_model).eval()
    names = model.config.id2label
    assert len(names) == 13
    for words, record in zip(sentences, records):
        assert set(record) == {"tokens", "tags", "scores"}
        assert record["tokens"] == words
        assert len(record["tags"]) == len(record["scores"]) == len(words)
        assert set(record["tags"]) <= set(names.values())
        assert all(0 < p <= 1 for p in record["scores"])
    for words, record in zip(sentences[:2], records):  # short sentences: one window, as plain transformers reads it
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            probs = torch.softmax(model(**enc).logits[0].double(), -1)
        first = {}
        for position, word in enumerate(enc.word_ids()):
            if word is not None and word not in first:
                first[word] = position
        assert record["tags"] == [names[int(probs[first[j]].argmax())] for j in range(len(words))]
        assert record["scores"] == pytest.approx([float(probs[first[j]].max()) for j in range(len(words))], abs=1e-5)


def test_qa_answers_are_the_eval_search_s_answers(make_cfg, sst2_model, tmp_path):
    """A QA model (random, saved here) answers what `squad.best_answers` reads from its logits, with the
    span's probability; a long context is split into windows."""
    model_dir = tmp_path / "qa"
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig.from_pretrained(sst2_model)).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(sst2_model).save_pretrained(model_dir)
    questions = ["where does emily live ?", "who did it ?"]
    contexts = ["emily lives in paris , near the river . " * 12, "bob did it , and then he left ."]
    src = tmp_path / "in.csv"
    with open(src, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["question", "context"], *zip(questions, contexts)])
    res = predict_stage(make_cfg, model_dir, src, tmp_path / "out.jsonl", "task=squad")
    assert (res["examples"], res["windowed"]) == (2, 1)
    records = read_jsonl(tmp_path / "out.jsonl")
    cfg = make_cfg("stage=predict", "task=squad", *SMOKE)
    t = cfg.task
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertForQuestionAnswering.from_pretrained(model_dir).eval()
    feats, _ = predict.qa_features(list(zip(questions, contexts)), tok, max_len=t.max_seq_len, doc_stride=t.doc_stride,
                                   max_question_len=t.max_question_len)
    starts, ends = [], []
    with torch.no_grad():
        for row in feats:
            ids = {k: torch.tensor([row[k]]) for k in ("input_ids", "token_type_ids", "attention_mask")}
            out = model(**ids)
            starts.append(out.start_logits[0].numpy())
            ends.append(out.end_logits[0].numpy())
    answers = squad.best_answers(feats, starts, ends, n_best=t.n_best, max_answer_len=t.max_answer_len)
    assert [r["answer"] for r in records] == [answers["0"], answers["1"]]
    for record, context in zip(records, contexts):
        assert set(record) == {"answer", "score"}
        assert record["answer"] and record["answer"] in context
        assert 0 < record["score"] <= 1


def test_qa_records_score_is_the_span_probability_by_hand():
    """One window of 6 tokens ([CLS] q [SEP] c c c... ): the best span (2, 3) of the context tokens 2..4, its
    probability softmax(start over the context)[2] x softmax(end over the context)[3]."""
    feats = {"example": [0], "context": ["abcdef"], "offset_mapping": [[[-1, -1], [-1, -1], [0, 2], [2, 4], [4, 6],
                                                                        [-1, -1]]]}
    start = np.array([9.0, 9.0, 2.0, 1.0, 0.0, 9.0])  # the question and special tokens' logits are never read
    end = np.array([9.0, 9.0, 0.0, 3.0, 1.0, 9.0])
    [record] = predict.qa_records(1, feats, [np.stack([start, end], -1)], AnswerSearch(n_best=20, max_answer_len=30))
    assert record["answer"] == "abcd"
    p_start = np.exp(2.0) / np.exp([2.0, 1.0, 0.0]).sum()
    p_end = np.exp(3.0) / np.exp([0.0, 3.0, 1.0]).sum()
    assert record["score"] == pytest.approx(p_start * p_end, abs=1e-6)


# ----------------------------------------------------------------------------- records by problem type


def test_text_records_by_problem_type():
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    names = ["a", "b", "c"]
    single = predict.text_records(logits, names, SINGLE_LABEL)
    assert [r["label"] for r in single] == ["a", "c"]
    e = np.exp(logits[0])
    assert list(single[0]["scores"].values()) == pytest.approx(list(e / e.sum()), abs=1e-6)
    multi = predict.text_records(logits, names, MULTI_LABEL)
    assert [r["labels"] for r in multi] == [["a", "c"], ["c"]]  # logit > 0; a logit of exactly 0 is sigmoid 1/2
    assert multi[1]["scores"] == pytest.approx({"a": 1 / (1 + np.exp(3.0)), "b": 0.5, "c": 1 / (1 + np.exp(-1.0))},
                                               abs=1e-6)
    assert predict.text_records(np.array([[3.25], [-0.5]]), ["score"], REGRESSION) == [{"score": 3.25},
                                                                                       {"score": -0.5}]


def test_label_names_come_from_the_model_config():
    config = BertConfig(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    assert predict.label_names(config) == ["neg", "neu", "pos"]


# ----------------------------------------------------------------------------- bad input


def refused_by_cli(cli, model: Path, src: Path, out: Path) -> str:
    """`python -m tinykd stage=predict` on `src`: refused with exit status 2, a fix, and nothing written;
    returns its stderr."""
    r = cli("stage=predict", "task=sst2", *SMOKE, f"model={model}", f"input={src}", f"output={out}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "fix: " in r.stderr and not out.exists()
    return r.stderr


@pytest.mark.slow
def test_an_empty_file_is_refused_through_the_cli(cli, sst2_model, tmp_path):
    src = tmp_path / "empty.txt"
    src.write_text("\n \n", encoding="utf-8")
    stderr = refused_by_cli(cli, sst2_model, src, tmp_path / "o.jsonl")
    assert f"error: input={src} is empty: no examples to predict." in stderr


@pytest.mark.slow
def test_a_missing_column_is_refused_through_the_cli_naming_it_and_the_columns_found(cli, sst2_model, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("review,stars\ngreat,5\n", encoding="utf-8")
    stderr = refused_by_cli(cli, sst2_model, src, tmp_path / "o.jsonl")
    assert f"{src}: no column 'sentence'" in stderr and "Its columns are: review, stars." in stderr


def test_your_own_data_names_its_columns_in_task_text_columns(make_cfg, sst2_model, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"review": "great"}\n{"review": "poor"}\n{"text": "no review here"}\n', encoding="utf-8")
    custom = ("task=custom",)  # no task.train: predict reads only the columns' names (labels: the model's)
    with pytest.raises(TinyKDError, match=r"line 3: no field 'review' \(task.text_columns\)\. Its fields are: text\.") \
            as e:
        predict_stage(make_cfg, sst2_model, src, tmp_path / "o.jsonl", *custom, "task.text_columns=[review]")
    assert "task.text_columns" in e.value.fix
    src.write_text('{"review": "great"}\n{"review": "poor"}\n', encoding="utf-8")
    res = predict_stage(make_cfg, sst2_model, src, tmp_path / "o.jsonl", *custom, "task.text_columns=[review]")
    assert res["examples"] == 2 and len(read_jsonl(tmp_path / "o.jsonl")) == 2
    # the same with training files named (a task=custom run's own config): the same predictions
    res = predict_stage(make_cfg, sst2_model, src, tmp_path / "o2.jsonl", *custom, f"task.train={src}",
                        f"task.dev={src}", "task.text_columns=[review]")
    assert read_jsonl(tmp_path / "o2.jsonl") == read_jsonl(tmp_path / "o.jsonl")


def test_a_model_without_the_task_s_head_is_refused(make_cfg, sst2_model, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Emily went home\n", encoding="utf-8")
    with pytest.raises(TinyKDError, match="no trained token classification head"):
        predict_stage(make_cfg, sst2_model, src, tmp_path / "o.jsonl", "task=wnut17")
    with pytest.raises(TinyKDError, match="needs input, output"):
        run_stage(make_cfg("stage=predict", "task=sst2", *SMOKE, f"model={sst2_model}"))
    with pytest.raises(TinyKDError, match="no such file"):
        predict_stage(make_cfg, sst2_model, tmp_path / "nope.txt", tmp_path / "o.jsonl", "task=sst2")
    with pytest.raises(TinyKDError, match="is the input file"):
        predict_stage(make_cfg, sst2_model, src, src, "task=sst2")
    assert src.read_text(encoding="utf-8") == "Emily went home\n"


TEXT = predict.Columns(SEQUENCE, ("text",), ("task.text_columns",))
PAIR = predict.Columns(SEQUENCE, ("a", "b"), ("task.text_columns", "task.text_columns"))


@pytest.mark.parametrize(("name", "content", "columns", "match"), [
    ("in.txt", "good\n\nbad\n", TEXT, r"line 2 is blank"),
    ("in.txt", "one text only\n", PAIR, r"line 1: 1 tab-separated text\(s\)"),
    ("in.txt", "why?\n", predict.Columns(QA, ("question", "context"), ("task.question_column", "task.context_column")),
     r"needs a question and a context"),
    ("in.csv", "text\n", TEXT, r"holds no rows under its header"),
    ("in.csv", "text,x\ngood,1\nbad\n", TEXT, r"line 3: 1 fields, but the header has 2"),
    ("in.csv", 'text\n""\n', TEXT, r"line 2: the text in 'text' is empty"),
    ("in.jsonl", '{"text": "a"}\n[1, 2]\n', TEXT, r"line 2 is a JSON list, not an object"),
    ("in.jsonl", '{"text": ["a", "b"]}\n', TEXT, r"'text' holds a JSON list, not a text"),
    ("in.json", "[]", TEXT, r"is an empty list"),
    ("in.json", '{"text": "a",\n "x": 1}', TEXT, r"holds a JSON object, not a list of rows"),
    ("in.jsonl", '{"tokens": ["a", ""]}\n', predict.Columns(TOKEN, ("tokens",), ("task.tokens_column",)),
     r"word 2 of 'tokens'"),
    ("in.parquet", "x", TEXT, r"cannot tell its format"),
])
def test_bad_input_files_are_refused_naming_the_line(tmp_path, name, content, columns, match):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TinyKDError, match=match) as e:
        predict.read_examples(path, columns, "custom")
    assert e.value.fix


def test_json_lists_json_lines_and_tsv_read_the_same_examples(tmp_path):
    rows = [{"a": "first one", "b": "x"}, {"a": "second", "b": "y"}]
    (tmp_path / "in.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "in.tsv").write_text("b\ta\nx\tfirst one\ny\tsecond\n", encoding="utf-8")
    for name in ("in.json", "in.jsonl", "in.tsv"):
        assert predict.read_examples(tmp_path / name, PAIR, "custom") == [("first one", "x"), ("second", "y")]
