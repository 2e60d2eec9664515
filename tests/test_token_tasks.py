"""Token classification end to end: `stage=pipeline task=wnut17 debug=smoke` (NER, BIO tags) and
`task=upos` (part of speech), each export reloaded with plain `transformers` and scored again with
seqeval; O-only augmentation; the teacher gate, stage=eval and a given fine-tuned token classifier."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from seqeval.metrics import f1_score

from conftest import run_stage
from tinykd.config import REPO_ROOT
from tinykd.errors import TinyKDError

WNUT = REPO_ROOT.parent / "shared" / "data" / "ner" / "wnut17"


def conll_sentences(path: Path, limit: int) -> list[tuple[list[str], list[str]]]:
    """The first `limit` sentences of a two-column CoNLL file, read here without tinykd."""
    out, words, tags = [], [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if words:
                out.append((words, tags))
                words, tags = [], []
            continue
        w, t = line.split("\t")
        words.append(w)
        tags.append(t)
    if words:
        out.append((words, tags))
    return out[:limit]


def plain_entity_f1(export: str, sentences) -> float:
    """Entity F1 of an export loaded with plain transformers: each word tagged by its first sub-token."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForTokenClassification.from_pretrained(export).eval()
    names = model.config.id2label
    predicted, gold = [], []
    for words, tags in sentences:
        # a word with no sub-token at all (a lone U+FE0F) is read as [UNK], as tinykd reads it (README)
        words = [w if tok(w, add_special_tokens=False)["input_ids"] else tok.unk_token for w in words]
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            best = model(**enc).logits[0].argmax(-1).tolist()
        first = {}
        for position, word in enumerate(enc.word_ids()):
            if word is not None and word not in first:
                first[word] = best[position]
        predicted.append([names[first[i]] for i in range(len(words))])
        gold.append(tags)
    return f1_score(gold, predicted)


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_ner_pipeline_exports_a_token_classifier_that_plain_transformers_rescores(make_cfg):
    # 128 tokens: no dev sentence needs a window, so a plain forward pass sees what tinykd saw
    res = run_stage(make_cfg("stage=pipeline", "task=wnut17", "debug=smoke", "task.max_seq_len=128",
                             "train.task_prediction.max_steps=12"))
    assert res["main_metric"] == "entity_f1"
    assert set(res["dev"]) == {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"}
    config = json.loads((Path(res["student_export"]) / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    assert len(config["id2label"]) == 13 and "B-person" in config["id2label"].values()
    again = plain_entity_f1(res["student_export"], conll_sentences(WNUT / "dev.conll", 128))  # dev_limit 128
    assert again == pytest.approx(res["dev"]["entity_f1"], abs=1e-9)
    # stage=eval scores the export the same
    ev = run_stage(make_cfg("stage=eval", "task=wnut17", "debug=smoke", "task.max_seq_len=128",
                            f"model={res['student_export']}"))
    assert ev["dev"] == pytest.approx(res["dev"], abs=1e-9)


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_upos_pipeline_scores_word_accuracy_with_windows(make_cfg):
    res = run_stage(make_cfg("stage=pipeline", "task=upos", "debug=smoke"))
    assert res["main_metric"] == "token_accuracy" and set(res["dev"]) == {"token_accuracy"}
    task = json.loads((Path(res["student_export"]).parent / "results.json").read_text())
    assert 0.0 <= task["dev"]["token_accuracy"] <= 1.0
    config = json.loads((Path(res["student_export"]) / "config.json").read_text())
    assert sorted(config["id2label"].values())[:3] == ["ADJ", "ADP", "ADV"] and len(config["id2label"]) == 17


def test_augmentation_replaces_only_words_tagged_o(make_cfg):
    res = run_stage(make_cfg("stage=augment", "task=wnut17", "debug=smoke", "task.train_limit=64",
                             "augment.shard_size=32"))
    rows = datasets.load_from_disk(res["data"]).to_list()
    originals = {r["source_index"]: r for r in rows[:64]}  # the originals first, then the new rows
    from tinykd import build

    o = build.task_spec(make_cfg("stage=augment", "task=wnut17", "debug=smoke")).label_names.index("O")
    changed = 0
    for r in rows[64:]:
        src = originals[r["source_index"]]
        assert r["tags"] == src["tags"] and len(r["tokens"]) == len(src["tokens"])
        for word, old, tag in zip(r["tokens"], src["tokens"], src["tags"]):
            if word != old:
                changed += 1
                assert tag == o, f"an entity word was replaced: {old!r} -> {word!r}"
    assert changed > 0 and res["augmented_rows"] == len(rows) - 64


def test_qa_augmentation_replaces_question_words_only(make_cfg):
    """Question-only augmentation: every new row keeps its source's context and answers, character for character,
    and the answer is still where answer_start says; only the question changed, under an id of its own."""
    res = run_stage(make_cfg("stage=augment", "task=squad", "debug=smoke", "task.train_limit=40",
                             "augment.shard_size=16"))
    rows = datasets.load_from_disk(res["data"]).to_list()
    originals = {r["source_index"]: r for r in rows[:40]}  # the originals first, then the new rows
    assert len(rows) > 40 and res["augmented_rows"] == len(rows) - 40
    for r in rows[40:]:
        src = originals[r["source_index"]]
        assert r["context"] == src["context"] and r["answers"] == src["answers"]
        assert r["question"] != src["question"] and r["id"].startswith(src["id"] + "#aug")
        for text, start in zip(r["answers"]["text"], r["answers"]["answer_start"]):
            assert r["context"][start:start + len(text)] == text
    assert len({r["id"] for r in rows}) == len(rows)
    # task distillation reads them as training windows
    cfg = make_cfg("stage=task", "task=squad", "debug=smoke", f"task.augmented={res['data']}")
    from tinykd import build

    spec = build.task_spec(cfg)
    from tinykd.models import load_tokenizer

    tok = load_tokenizer(build.teacher_source(cfg))
    windows = build.task_split(cfg, spec, tok, "train")
    assert len(windows) >= len(rows) and {"start_positions", "end_positions"} <= set(windows.column_names)


def test_a_sequence_classifier_is_refused_as_a_token_model(make_cfg, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    cfg = make_cfg("stage=task", "task=wnut17", "debug=smoke")
    from tinykd import build

    source = build.teacher_source(cfg)
    model = BertForSequenceClassification(BertConfig.from_pretrained(source, num_labels=13))
    model.save_pretrained(tmp_path / "seq")
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "seq")
    with pytest.raises(TinyKDError, match="no trained token classification head"):
        run_stage(make_cfg("stage=eval", "task=wnut17", "debug=smoke", f"model={tmp_path / 'seq'}"))


def test_the_gate_samples_whole_sentences_not_windows():
    from tinykd.gate import first_examples
    from tinykd.tasks import TaskSpec

    ds = datasets.Dataset.from_dict({"sentence": [0, 0, 1, 2, 2, 2, 3]})  # sentence 0 and 2 have several windows
    spec = TaskSpec("x", "single_label_classification", ("O", "B-x"), ("token_accuracy",), type="token_classification")
    assert [list(first_examples(ds, n, spec)["sentence"]) for n in (1, 2, 3, 9)] == [
        [0, 0], [0, 0, 1], [0, 0, 1, 2, 2, 2], [0, 0, 1, 2, 2, 2, 3]]


@pytest.mark.parametrize("task", ["wnut17", "squad"])
def test_cached_teacher_logits_per_token_equal_a_live_teacher_forward(make_cfg, tmp_path, task):
    """distill.teacher_cache for token and QA tasks: an example's L x K logits stored flat, padded back to
    the batch by the collator, equal the teacher's own output on the batch at every real token."""
    from tinykd import build, models, teacher_outputs
    from tinykd.data.batches import Batcher

    cfg = make_cfg("stage=task", f"task={task}", "debug=smoke")
    spec = build.task_spec(cfg)
    source = build.teacher_source(cfg)
    tok = models.load_tokenizer(source)
    torch.manual_seed(0)
    teacher = models.freeze(models.load_classifier(source, spec.num_labels, spec.label_names, "teacher",
                                                   task_type=spec.type))
    train = build.task_split(cfg, spec, tok, "train", limit=40)
    cached = teacher_outputs.with_teacher_outputs(teacher, source, train, tok, batch_size=7, device="cpu",
                                                  cache_dir=str(tmp_path), progress=False, precision="fp32",
                                                  representations=False)
    batch = next(Batcher(cached, tok, 16, seed=0).iterate(0))
    with torch.no_grad():
        live = models.head_logits(teacher(**models.model_inputs(teacher, batch)))
    real = batch["attention_mask"].bool()
    assert batch["teacher_logits"].shape == live.shape
    assert torch.allclose(batch["teacher_logits"][real], live[real], atol=1e-5)
    assert float(batch["teacher_logits"][~real].abs().sum()) == 0.0


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_an_interrupted_token_task_resumes_to_the_uninterrupted_weights(make_cfg):
    from safetensors.torch import load_file

    teacher = run_stage(make_cfg("stage=teacher", "task=wnut17", "debug=smoke"))
    distil = ("stage=task", "task=wnut17", "debug=smoke", "student.init=random", f"stage.teacher_dir={teacher['export']}")
    whole = run_stage(make_cfg(*distil, "runs.task=${paths.runs}/task/whole"))
    cut = run_stage(make_cfg(*distil, "runs.task=${paths.runs}/task/cut", "interrupt_after=8"))  # in the prediction phase
    assert cut["interrupted"]
    resumed = run_stage(make_cfg(*distil, "runs.task=${paths.runs}/task/cut", "resume=true"))
    a, b = (load_file(Path(r["export"]) / "model.safetensors") for r in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["dev"] == whole["dev"]


def test_a_tag_set_without_o_is_refused_augmentation_before_any_step_runs(make_cfg, runs_dir):
    with pytest.raises(TinyKDError, match="no outside tag 'O'"):
        run_stage(make_cfg("stage=pipeline", "task=upos", "debug=smoke", "stage.augment=true"))
    assert not (runs_dir / "smoke" / "teacher").exists()  # the pipeline stopped before stage=teacher
