"""The teacher sanity gate (tinykd/gate.py) and the no-distillation baseline phase (stage.phases=[finetune])."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from transformers import AutoConfig, BertConfig

from tinykd import gate, models
from tinykd.data.batches import Batcher
from tinykd.errors import TinyKDError
from tinykd.tasks import get_task

SST2 = get_task("sst2")


def test_label_order_problem_names_the_mismatch():
    def cfg(names):
        return BertConfig(num_labels=len(names), id2label=dict(enumerate(names)))

    assert gate.label_order_problem(cfg(["negative", "positive"]), SST2) is None
    assert gate.label_order_problem(cfg(["LABEL_0", "LABEL_1"]), SST2) is None  # says nothing about the order
    assert gate.label_order_problem(cfg(["Negative", "POSITIVE"]), SST2) is None
    swapped = gate.label_order_problem(cfg(["positive", "negative"]), SST2)
    assert "['positive', 'negative']" in swapped and "['negative', 'positive']" in swapped
    assert "3 classes" in gate.label_order_problem(cfg(["a", "b", "c"]), SST2)
    assert gate.label_order_problem(cfg(["LABEL_0"]), get_task("stsb")) is None  # regression: no classes


@pytest.fixture
def smoke_teacher(make_cfg):
    """The smoke teacher's export, its tokenizer and the smoke dev set."""
    cfg = make_cfg("stage=teacher", "task=sst2", "debug=smoke")
    res = run_stage(cfg)
    from tinykd import build

    tok = models.load_tokenizer(res["export"])
    return Path(res["export"]), tok, build.task_split(cfg, SST2, tok, "dev"), make_cfg


def fit_on(model, ds, tok, steps: int = 200):
    """Make `model` good on `ds` (the gate only asks whether the teacher beats chance, not how it got there)."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    batches = Batcher(ds, tok, 32, 0)
    for i, batch in enumerate(batches.iterate(0)):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i + 1 == steps:
            break
    return model.eval()


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_gate_passes_a_good_teacher_and_refuses_its_swapped_head(smoke_teacher, tmp_path, capsys):
    path, tok, dev, _ = smoke_teacher
    model = fit_on(models.load_classifier(str(path), 2, SST2.label_names), dev, tok)
    kw = dict(examples=128, margin=0.1, allow_weak=False, batch_size=64, device="cpu")
    good = gate.check_teacher(model, str(path), dev, tok, SST2, **kw)
    assert good["passed"] and good["score"] > good["threshold"] == pytest.approx(good["chance"] + 0.1)
    labels = torch.tensor(dev["labels"][:128])
    assert good["chance"] == pytest.approx(max(labels.float().mean().item(), 1 - labels.float().mean().item()))

    # the same weights with the classifier's rows swapped: what a different label order does
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    with pytest.raises(TinyKDError, match=r"scores accuracy 0\.\d+ on the first 128 sst2 dev examples") as err:
        gate.check_teacher(model, str(path), dev, tok, SST2, **kw)
    assert f"{good['chance'] + 0.1:.4f}" in str(err.value) and "allow_weak_teacher=true" in str(err.value)
    capsys.readouterr()
    weak = gate.check_teacher(model, str(path), dev, tok, SST2, **{**kw, "allow_weak": True})
    err = capsys.readouterr().err.splitlines()  # the verdict as one line, not a warning with a code excerpt
    assert len(err) == 1 and err[0].startswith("[tinykd] teacher gate: WARNING ") and "Distilling anyway" in err[0]
    assert not weak["passed"] and weak["score"] == pytest.approx(1 - good["score"])


def test_task_stage_refuses_an_unfinetuned_teacher(smoke_teacher, tmp_path):
    path, tok, dev, make_cfg = smoke_teacher
    # a random classifier of the teacher's shape: never fine-tuned
    config = AutoConfig.from_pretrained(path)
    fresh = models.random_student(config, seed=1, head="classifier")
    unfinetuned = models.export(fresh, tok, tmp_path / "unfinetuned")
    score = gate.teacher_score(fresh, dev, tok, SST2, 128, 64, "cpu")
    assert score["score"] <= score["chance"] + 0.1, "the fixture must be a teacher at chance"
    cfg = make_cfg("stage=task", "task=sst2", "debug=smoke", "student.init=random", f"stage.teacher_dir={unfinetuned}",
                   "distill.allow_weak_teacher=false")
    with pytest.raises(TinyKDError, match="never fine-tuned") as err:
        run_stage(cfg)
    assert f"{score['score']:.4f}" in str(err.value) and "stage=teacher" in str(err.value)
    assert not Path(cfg.runs.task).exists(), "the gate refuses before the run directory is written"


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_task_stage_reorders_a_teacher_labelled_in_another_order(smoke_teacher, tmp_path):
    """A teacher whose head lists the classes in another order (and says so in id2label) is reordered by
    name and passes the gate; one whose id2label lies about its head is then below chance and refused."""
    path, tok, dev, make_cfg = smoke_teacher
    model = fit_on(models.load_classifier(str(path), 2, SST2.label_names), dev, tok)
    with torch.no_grad():  # the same teacher, its classes in the other order: rows and names both swapped
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: "positive", 1: "negative"}
    model.config.label2id = {"positive": 0, "negative": 1}
    other_order = models.export(model, tok, tmp_path / "other_order")
    assert json.loads((other_order / "config.json").read_text())["id2label"] == {"0": "positive", "1": "negative"}
    base = ("stage=task", "task=sst2", "debug=smoke", "student.init=random", "distill.allow_weak_teacher=false")
    res = run_stage(make_cfg(*base, f"stage.teacher_dir={other_order}"))
    assert res["teacher_gate"]["passed"] and res["teacher_gate"]["score"] > res["teacher_gate"]["threshold"]

    # names swapped but not the head: reordered by its (wrong) names, the teacher is below chance
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = {0: "positive", 1: "negative"}
    model.config.label2id = {"positive": 0, "negative": 1}
    misnamed = models.export(model, tok, tmp_path / "misnamed")
    with pytest.raises(TinyKDError, match=r"not above chance") as err:
        run_stage(make_cfg(*base, f"stage.teacher_dir={misnamed}", "paths.runs=" + str(tmp_path / "runs2")))
    assert "classes are in another order" in str(err.value)

    # other names: refused whatever allow_weak_teacher says
    model.config.id2label = {0: "bad", 1: "good"}
    model.config.label2id = {"bad": 0, "good": 1}
    renamed = models.export(model, tok, tmp_path / "renamed")
    for weak in ("false", "true"):
        with pytest.raises(TinyKDError, match="lacks") as err:
            run_stage(make_cfg(*base[:-1], f"distill.allow_weak_teacher={weak}", f"stage.teacher_dir={renamed}"))
        assert "negative" in str(err.value) and "good" in str(err.value)


def test_finetune_phase_is_labels_only_and_never_runs_the_teacher(smoke_teacher, monkeypatch):
    path, tok, dev, make_cfg = smoke_teacher
    calls = []
    from transformers import BertForSequenceClassification

    original = BertForSequenceClassification.forward

    def counting(self, *a, **k):
        calls.append(self.config.hidden_size)
        return original(self, *a, **k)

    monkeypatch.setattr(BertForSequenceClassification, "forward", counting)
    cfg = make_cfg("stage=task", "task=sst2", "debug=smoke", "student.init=random", "stage.phases=[finetune]",
                   "distill.allow_weak_teacher=false")  # no distillation: the gate does not apply
    res = run_stage(cfg)
    teacher_width = AutoConfig.from_pretrained(path).hidden_size
    student_width = json.loads((Path(res["export"]) / "config.json").read_text())["hidden_size"]
    assert teacher_width != student_width
    assert calls and teacher_width not in calls, "the teacher must never run in the finetune phase"
    records = [json.loads(x) for x in (Path(res["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} == {"finetune"}
    assert {k for r in records for k in r if k.startswith("loss/")} == {"loss/task"}
    assert [r["step"] for r in records if "dev/accuracy" in r] == [3, 6]
    assert res["teacher_gate"] is None and res["phases"] == ["finetune"]
    with pytest.raises(TinyKDError, match=r"finetune.*alone"):
        run_stage(make_cfg("stage=task", "task=sst2", "debug=smoke", "student.init=random",
                              "stage.phases=[finetune,prediction]"))
