"""Your own data and your own teacher, end to end: `task=custom` pipelines for a CSV single-text task, a
JSON Lines pair task and a multi-label task, each export reloaded with plain `transformers` and scored
again; a fine-tuned classifier given as `teacher.path`, its classes in another order, distilled
without `stage=teacher`; and the teachers that cannot be used."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from conftest import run_stage
from tinykd import build, models
from tinykd.config import REPO_ROOT
from tinykd.data.batches import Batcher
from tinykd.errors import TinyKDError

GLUE = REPO_ROOT.parent / "shared" / "data" / "glue"


def glue_rows(task: str, split: str) -> list[list[str]]:
    with open(GLUE / task / f"{split}.tsv", encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f][1:]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """SST-2 as CSV (string labels), MRPC as JSON Lines (pairs), a multi-label JSON Lines set."""
    root = tmp_path_factory.mktemp("data")
    out = {}
    names = ("negative", "positive")
    for split, rows in (("train", glue_rows("SST-2", "train")[:400]), ("dev", glue_rows("SST-2", "dev"))):
        out[f"sst_{split}"] = path = root / f"sst_{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["review", "sentiment"])
            w.writerows([text, names[int(label)]] for text, label in rows)
        out[f"tags_{split}"] = path = root / f"tags_{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:  # sentiment plus length: two overlapping labels
            for text, label in rows:
                tags = [names[int(label)]] + (["long"] if len(text.split()) > 12 else [])
                f.write(json.dumps({"text": text, "tags": tags}) + "\n")
    for split in ("train", "dev"):
        out[f"mrpc_{split}"] = path = root / f"mrpc_{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for r in glue_rows("MRPC", split)[:300]:
                f.write(json.dumps({"s1": r[3], "s2": r[4], "label": ["different", "paraphrase"][int(r[0])]}) + "\n")
    return out


def rescore(export: str, texts_a, texts_b, labels, multi: bool) -> dict[str, float]:
    """Score an export with plain transformers on the rows given (no tinykd code)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    logits = []
    with torch.no_grad():
        for i in range(0, len(texts_a), 32):
            enc = tok(texts_a[i:i + 32], texts_b[i:i + 32] if texts_b else None, truncation=True, max_length=32,
                      padding=True, return_tensors="pt")
            logits.append(model(**enc).logits)
    logits = torch.cat(logits).numpy()
    if multi:
        pred = (logits > 0).astype(int)
        return {"micro_f1": f1_score(labels, pred, average="micro", zero_division=0)}
    return {"accuracy": accuracy_score(labels, logits.argmax(-1))}


def test_csv_single_text_pipeline_and_plain_reload(make_cfg, files):
    res = run_stage(make_cfg(
        "stage=pipeline", "task=custom", f"task.train={files['sst_train']}", f"task.dev={files['sst_dev']}",
        f"task.test={files['sst_dev']}", "task.text_columns=[review]", "task.label_column=sentiment", "debug=smoke"))
    task = json.loads((Path(res["student_export"]).parent / "results.json").read_text())
    assert set(res["dev"]) == {"accuracy", "macro_f1"} and res["main_metric"] == "accuracy"
    config = json.loads((Path(res["student_export"]) / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["problem_type"] == "single_label_classification"
    dev = glue_rows("SST-2", "dev")[:128]  # debug=smoke: task.dev_limit=128
    again = rescore(res["student_export"], [r[0] for r in dev], None, [int(r[1]) for r in dev], multi=False)
    assert again["accuracy"] == pytest.approx(res["dev"]["accuracy"], abs=1e-9)
    # task.test: the dev-selected student and the teacher scored on it (all 872 rows: no limit on test)
    every = glue_rows("SST-2", "dev")
    full = rescore(res["student_export"], [r[0] for r in every], None, [int(r[1]) for r in every], multi=False)
    assert task["test"]["student"]["accuracy"] == pytest.approx(full["accuracy"], abs=1e-9)
    assert set(task["test"]["teacher"]) == {"accuracy", "macro_f1"}


@pytest.mark.slow  # pairs through the loaders: test_the_custom_path_gives_the_glue_path_s_examples_in_its_order
def test_json_lines_pair_pipeline_and_plain_reload(make_cfg, files):
    res = run_stage(make_cfg(
        "stage=pipeline", "task=custom", "task.name=paraphrase", f"task.train={files['mrpc_train']}",
        f"task.dev={files['mrpc_dev']}", "task.text_columns=[s1,s2]", "task.metrics=[f1,accuracy]", "debug=smoke"))
    assert res["task"] == "paraphrase" and res["main_metric"] == "f1"
    dev = glue_rows("MRPC", "dev")[:128]
    again = rescore(res["student_export"], [r[3] for r in dev], [r[4] for r in dev], [int(r[0]) for r in dev], False)
    assert again["accuracy"] == pytest.approx(res["dev"]["accuracy"], abs=1e-9)


def test_multi_label_pipeline_and_plain_reload(make_cfg, files):
    res = run_stage(make_cfg(
        "stage=pipeline", "task=custom", "task.name=tags", f"task.train={files['tags_train']}",
        f"task.dev={files['tags_dev']}", "task.label_column=tags", "task.problem_type=multi_label_classification",
        "debug=smoke"))
    assert set(res["dev"]) == {"micro_f1", "macro_f1", "exact_match"} and res["main_metric"] == "micro_f1"
    config = json.loads((Path(res["student_export"]) / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "long", "1": "negative", "2": "positive"}
    rows = [json.loads(x) for x in files["tags_dev"].read_text().splitlines()][:128]
    gold = np.array([[int(n in r["tags"]) for n in ("long", "negative", "positive")] for r in rows])
    again = rescore(res["student_export"], [r["text"] for r in rows], None, gold, multi=True)
    assert again["micro_f1"] == pytest.approx(res["dev"]["micro_f1"], abs=1e-9)


def fine_tuned_teacher(make_cfg, files, out: Path, names: tuple[str, ...]) -> Path:
    """A classifier fine-tuned on the CSV task whose head lists the classes as `names` (a permutation of
    the task's), saved with that id2label: what a user brings from elsewhere."""
    cfg = make_cfg("stage=task", "task=custom", f"task.train={files['sst_train']}", f"task.dev={files['sst_dev']}",
                   "task.text_columns=[review]", "task.label_column=sentiment", "debug=smoke")
    spec = build.task_spec(cfg)
    source = build.teacher_source(cfg)  # the tiny pretrained encoder
    tok = models.load_tokenizer(source)
    model = models.load_classifier(source, len(names), names, "teacher")
    train = build.task_split(cfg, spec, tok, "dev")  # fitted on dev: the gate asks only that it beat chance there
    order = torch.tensor([names.index(n) for n in spec.label_names])  # task class id -> this head's output
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step, batch in enumerate(Batcher(train, tok, 32, 0).iterate(0)):
        batch["labels"] = order[batch["labels"]]
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
        if step == 150:
            break
    return models.export(model.eval(), tok, out)


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_a_fine_tuned_teacher_with_its_classes_in_another_order_is_used_as_it_is(make_cfg, files, tmp_path):
    teacher = fine_tuned_teacher(make_cfg, files, tmp_path / "my-teacher", ("positive", "negative"))
    assert json.loads((teacher / "config.json").read_text())["id2label"] == {"0": "positive", "1": "negative"}
    common = ("task=custom", f"task.train={files['sst_train']}", f"task.dev={files['sst_dev']}",
              "task.text_columns=[review]", "task.label_column=sentiment", "debug=smoke", f"teacher.path={teacher}",
              "distill.allow_weak_teacher=false", "student.init=random")
    res = run_stage(make_cfg("stage=task", *common))
    assert res["teacher"] == str(teacher)  # no stage=teacher: the given classifier, reordered by name
    gate = res["teacher_gate"]
    assert gate["passed"] and gate["score"] > gate["threshold"]
    cfg = make_cfg("stage=task", *common)
    assert not Path(cfg.runs.teacher).exists()
    # the pipeline skips its teacher step too
    summary = run_stage(make_cfg("stage=pipeline", *common[:-1], "paths.runs=" + str(tmp_path / "p")))
    assert summary["teacher_export"] == str(teacher) and not (tmp_path / "p" / "teacher").exists()


def test_teachers_that_cannot_teach_the_task_are_refused(make_cfg, files, tmp_path):
    common = ("stage=task", "task=custom", f"task.train={files['sst_train']}", f"task.dev={files['sst_dev']}",
              "task.text_columns=[review]", "task.label_column=sentiment", "debug=smoke")
    source = build.teacher_source(make_cfg(*common))
    tok = models.load_tokenizer(source)
    other_names = models.export(models.load_classifier(source, 2, ("bad", "good")), tok, tmp_path / "names")
    three = models.export(models.load_classifier(source, 3, ("negative", "neutral", "positive")), tok, tmp_path / "3")
    with pytest.raises(TinyKDError) as err:
        run_stage(make_cfg(*common, f"teacher.path={other_names}"))
    assert "lacks ['negative', 'positive']" in err.value.problem and "['bad', 'good']" in err.value.problem
    with pytest.raises(TinyKDError) as err:
        run_stage(make_cfg(*common, f"teacher.path={three}"))
    assert "3 outputs" in err.value.problem and "2 classes" in err.value.problem
    assert not Path(make_cfg(*common).runs.task).exists(), "refused before anything is written"


def roberta_teacher(files, out: Path) -> Path:
    """A small RoBERTa classifier with its own byte-level BPE tokenizer, fine-tuned on the CSV task's dev rows
    (enough to beat chance there): a teacher of another architecture and vocabulary than tinykd's BERTs."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    rows = list(csv.reader(open(files["sst_dev"], encoding="utf-8")))[1:]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([r[0] for r in glue_rows("SST-2", "train")[:3000]], vocab_size=600,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    tok = RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                               cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                           num_labels=2, id2label={0: "negative", 1: "positive"})
    model = RobertaForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    labels = torch.tensor([("negative", "positive").index(r[1]) for r in rows])
    for step in range(120):
        idx = torch.randint(len(rows), (32,))
        enc = tok([rows[i][0] for i in idx], truncation=True, max_length=32, padding=True, return_tensors="pt")
        model(**enc, labels=labels[idx]).loss.backward()
        opt.step()
        opt.zero_grad()
    return models.export(model.eval(), tok, out)


@pytest.mark.slow  # its parts for five architectures: tests/test_teachers.py
def test_a_roberta_teacher_distils_into_a_bert_student_with_its_tokenizer(make_cfg, files, tmp_path):
    teacher = roberta_teacher(files, tmp_path / "roberta")
    res = run_stage(make_cfg(
        "stage=task", "task=custom", f"task.train={files['sst_train']}", f"task.dev={files['sst_dev']}",
        "task.text_columns=[review]", "task.label_column=sentiment", "debug=smoke", f"teacher.path={teacher}",
        "distill.allow_weak_teacher=false", "student.init=random", "distill.attention_heads=mean"))
    assert res["teacher"] == str(teacher) and res["teacher_gate"]["passed"]
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(res["export"]).model_type == "bert"
    assert type(AutoTokenizer.from_pretrained(res["export"])).__name__.startswith("Roberta")  # the teacher's
    records = [json.loads(x) for x in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    losses = {k for r in records for k in r if k.startswith("loss/")}
    assert any(k.startswith("loss/attention") for k in losses) and any(k.startswith("loss/hidden") for k in losses)


def test_the_custom_path_gives_the_glue_path_s_examples_in_its_order(make_cfg, files):
    """SST-2 as a CSV and MRPC as JSON Lines tokenise to exactly the GLUE loaders' examples (and class ids):
    the same runs give the same figures on either path."""
    glue = make_cfg("stage=task", "task=sst2", "debug=smoke")
    tok = models.load_tokenizer(build.teacher_source(glue))
    for task, custom in (("sst2", ("task.train=" + str(files["sst_train"]), "task.dev=" + str(files["sst_dev"]),
                                   "task.text_columns=[review]", "task.label_column=sentiment")),
                         ("mrpc", ("task.train=" + str(files["mrpc_train"]), "task.dev=" + str(files["mrpc_dev"]),
                                   "task.text_columns=[s1,s2]"))):
        a = make_cfg("stage=task", f"task={task}", "debug=smoke")
        b = make_cfg("stage=task", "task=custom", "debug=smoke", *custom)
        for split in ("train", "dev"):
            x = build.task_split(a, build.task_spec(a), tok, split)
            y = build.task_split(b, build.task_spec(b), tok, split)
            assert len(x) == len(y) > 100
            for column in ("input_ids", "token_type_ids", "attention_mask", "labels"):
                assert x[column] == y[column], (task, split, column)
