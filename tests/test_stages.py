"""Stage tier: every stage on debug=smoke (tiny random models built on the fly), artefacts on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from tinykd import gate, models
from tinykd.tasks import get_task


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_teacher_stage(make_cfg):
    res = run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    run_dir = Path(res["run_dir"])
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    records = read_metrics(run_dir)
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    final = records[-1]
    assert final["dev/accuracy"] == pytest.approx(res["dev"]["accuracy"])
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "teacher")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert 0.0 <= res["dev"]["accuracy"] <= 1.0


def test_general_stage_exports_plain_student(make_cfg):
    res = run_stage(make_cfg("stage=general", "debug=smoke"))
    run_dir = Path(res["run_dir"])
    records = read_metrics(run_dir)
    parts = {k for r in records for k in r if k.startswith("loss/")}
    assert parts == {"loss/embedding/0", "loss/attention/1", "loss/attention/2", "loss/hidden/1", "loss/hidden/2"}
    losses = [r["loss"] for r in records]
    assert losses[-1] < losses[0], "general distillation should reduce the loss on the smoke run"
    config = json.loads((run_dir / "student" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 32
    assert "tinykd" not in json.dumps(config), "the exported config must not name tinykd's attention functions"
    # the projections live in the checkpoint (distiller), never in the exported student
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert any(k.startswith("distiller.hidden_proj") for k in ckpt["model"])
    from safetensors.torch import load_file

    assert not any("proj" in k for k in load_file(run_dir / "student" / "model.safetensors"))


@pytest.fixture
def distilled(make_cfg):
    """teacher → general → task on smoke, in one runs directory."""
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    run_stage(make_cfg("stage=general", "debug=smoke"))
    return make_cfg


def test_task_stage_two_phases_and_best_export(distilled):
    res = run_stage(distilled("stage=task", "task=sst2", "debug=smoke"))
    run_dir = Path(res["run_dir"])
    records = read_metrics(run_dir)
    phases = [r["phase"] for r in records if "loss" in r]
    assert phases.index("prediction") > phases.index("intermediate")
    assert phases == sorted(phases, key=["intermediate", "prediction"].index)
    evals = [r for r in records if "dev/accuracy" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert res["dev"]["accuracy"] == max(r["dev/accuracy"] for r in evals)
    # results.json carries what a user compares runs by
    assert res["retention"] == pytest.approx(res["dev"]["accuracy"] / res["teacher_dev"]["accuracy"])
    student = AutoModelForSequenceClassification.from_pretrained(res["export"])
    assert res["parameters"]["student"] == sum(p.numel() for p in student.parameters())
    assert res["parameters"]["teacher"] > res["parameters"]["student"] and res["wall_s"] > 0
    assert json.loads((run_dir / "results.json").read_text())["export"] == res["export"]
    # The exported best student scores the same with plain transformers as in-framework.
    ev = run_stage(distilled("stage=eval", "task=sst2", "debug=smoke", f"model={res['export']}"))
    assert ev["dev"]["accuracy"] == pytest.approx(res["dev"]["accuracy"], abs=1e-9)
    # a second evaluation (the teacher) in the same eval directory keeps the first one
    ev2 = run_stage(distilled("stage=eval", "task=sst2", "debug=smoke", f"model={res['teacher']}"))
    history = [json.loads(x) for x in (Path(ev2["run_dir"]) / "evaluations.jsonl").read_text().splitlines()]
    assert [h["model"] for h in history] == [res["export"], res["teacher"]]
    assert history[0]["dev"] == ev["dev"] and history[1]["dev"] == ev2["dev"]
    # ... and carries its model card: YAML that huggingface_hub parses, declaring the run's own scores
    from huggingface_hub import ModelCard

    from tinykd import modelcard

    card = ModelCard.load(Path(res["export"]) / modelcard.CARD)
    assert card.data.pipeline_tag == "text-classification" and card.data.library_name == "transformers"
    assert modelcard.eval_scores(res["export"]) == res["dev"]
    facts = card.data.to_dict()["tinykd"]
    assert facts["teacher"]["dev"] == res["teacher_dev"] and facts["teacher"]["dir"] == res["teacher"]
    assert facts["latency"]["student"]["b32"] == res["latency_seq64"]["student"]["b32"]["median_ms"]
    assert (Path(res["export"]) / modelcard.SHIPPED_CONFIG).read_text() == (run_dir / "config.yaml").read_text()


def test_exported_student_reloads_with_identical_logits(distilled):
    """With one phase the export is the final state: rebuild it from the checkpoint and compare logits."""
    res = run_stage(distilled("stage=task", "task=sst2", "debug=smoke", "stage.phases=[intermediate]"))
    run_dir = Path(res["run_dir"])
    exported = AutoModelForSequenceClassification.from_pretrained(run_dir / "student").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "student")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    student_state = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    rebuilt = BertForSequenceClassification(BertConfig.from_pretrained(run_dir / "student")).eval()
    rebuilt.load_state_dict(student_state)
    batch = tok(["a gorgeous , witty , seductive movie .", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a, b = exported(**batch).logits, rebuilt(**batch).logits
    assert torch.equal(a, b)


def test_teacher_frozen_and_unchanged(distilled, monkeypatch):
    """Spy on the real `models.freeze` to keep the teacher the task stage trains against."""
    seen = []
    real_freeze = models.freeze

    def spy(model):
        seen.append(real_freeze(model))
        return seen[-1]

    monkeypatch.setattr(models, "freeze", spy)
    res = run_stage(distilled("stage=task", "task=sst2", "debug=smoke"))
    (teacher,) = seen
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    fresh = AutoModelForSequenceClassification.from_pretrained(res["teacher"]).state_dict()
    used = teacher.state_dict()
    assert used.keys() == fresh.keys()
    for k in used:
        assert torch.equal(used[k], fresh[k]), f"teacher weight {k} changed during distillation"


def test_pipeline_chains_all_stages(make_cfg):
    res = run_stage(make_cfg("stage=pipeline", "task=sst2", "debug=smoke"))
    assert Path(res["student_export"], "config.json").is_file()
    assert Path(res["teacher_export"], "config.json").is_file()
    summary = json.loads(Path(res["run_dir"], "results.json").read_text())
    assert summary["student_dev"] == res["dev"]
    # resume=true skips finished steps: nothing is retrained, the results are the same
    again = run_stage(make_cfg("stage=pipeline", "task=sst2", "debug=smoke", "resume=true"))
    assert again["student_dev"] == res["student_dev"]


def test_regression_task_uses_mse(distilled, monkeypatch):
    """STS-B: one output, MSE prediction loss (by hand from the logits the stage passed in, against
    the values it logged), Pearson/Spearman metrics. Soft cross-entropy over one output is always 0."""
    import tinykd.stages.task as task_stage

    seen = []
    real = task_stage.prediction_loss

    def spy(s_logits, t_logits, *args):
        seen.append((s_logits.detach().clone(), t_logits.detach().clone()))
        return real(s_logits, t_logits, *args)

    monkeypatch.setattr(task_stage, "prediction_loss", spy)
    run_stage(distilled("stage=teacher", "task=stsb", "debug=smoke"))
    res = run_stage(distilled("stage=task", "task=stsb", "debug=smoke", "train.task_prediction.log_every=1"))
    logged = [r["loss/prediction"] for r in read_metrics(Path(res["run_dir"])) if "loss/prediction" in r]
    assert len(seen) == len(logged) == 6
    for (s_logits, t_logits), value in zip(seen, logged):
        assert s_logits.shape[-1] == t_logits.shape[-1] == 1
        by_hand = ((s_logits.view(-1) - t_logits.view(-1)) ** 2).mean().item()
        assert value == pytest.approx(by_hand, rel=1e-5) and value > 0
    assert set(res["dev"]) == {"pearson", "spearman"}
    assert res["main_metric"] == "pearson"
    assert get_task("stsb").num_labels == 1


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_cli_smoke_stage_prints_run_dir(cli, runs_dir):
    proc = cli("stage=teacher", "task=sst2", "debug=smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run_dir=" in proc.stdout and "teacher dev accuracy" in proc.stdout
    assert "exported teacher:" in proc.stdout


def test_reuse_returns_finished_run_and_refuses_another_config(make_cfg):
    from tinykd.errors import TinyKDError

    first = run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    mtime = (Path(first["run_dir"]) / "results.json").stat().st_mtime_ns
    # another stage's budget does not change the teacher: the finished run is returned as it is
    again = run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", "reuse=true",
                               "train.task_prediction.lr=0.5"))
    assert again == first
    assert (Path(first["run_dir"]) / "results.json").stat().st_mtime_ns == mtime
    with pytest.raises(TinyKDError, match=r"different configuration \(differs in: \['train.teacher.lr'\]"):
        run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", "reuse=true", "train.teacher.lr=0.5"))


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_prediction_phase_reads_cached_teacher_logits(distilled, cache_dir, monkeypatch):
    """distill.teacher_cache: the teacher's logits over the training set are computed once and
    read back; a second run with the same teacher and data runs the teacher not at all."""
    calls = []
    real_freeze = models.freeze

    frozen = []

    def spy(model):
        model.register_forward_pre_hook(lambda *_: calls.append(1))
        frozen.append(model)
        return real_freeze(model)

    monkeypatch.setattr(models, "freeze", spy)
    import tinykd.stages.task as task_stage

    real_evaluate = task_stage.evaluate

    def teacher_dev_not_counted(model, *args, **kwargs):  # the teacher's dev score, reported beside the student's
        n = len(calls)
        out = real_evaluate(model, *args, **kwargs)
        if any(model is m for m in frozen):
            del calls[n:]
        return out

    monkeypatch.setattr(task_stage, "evaluate", teacher_dev_not_counted)
    real_gate = gate.check_teacher

    def gate_then_forget(*args, **kwargs):  # the gate scores the teacher on dev first: not counted here
        out = real_gate(*args, **kwargs)
        calls.clear()
        return out

    monkeypatch.setattr(gate, "check_teacher", gate_then_forget)
    store = cache_dir / "teacher_outputs"
    before = set(store.iterdir()) if store.exists() else set()
    common = ("stage=task", "task=sst2", "debug=smoke", "stage.phases=[prediction]", "task.train_limit=100",
              "distill.teacher_cache=fp16")
    first = run_stage(distilled(*common, "runs.task=${paths.runs}/task/cache-a"))
    made = set(store.iterdir()) - before
    assert len(made) == 1 and 0 < len(calls) <= 2  # one pass over 100 examples in eval batches
    calls.clear()
    again = run_stage(distilled(*common, "runs.task=${paths.runs}/task/cache-b"))
    assert calls == [] and set(store.iterdir()) - before == made  # a hit: the teacher never ran
    assert again["dev"] == first["dev"]
    # the cached values are the teacher's logits rounded to fp16
    import datasets

    cached = datasets.load_from_disk(str(made.pop()))
    from tinykd import build

    cfg = distilled(*common)
    teacher_dir = build.finetuned_teacher_dir(cfg, build.task_spec(cfg))
    teacher = real_freeze(models.load_classifier(teacher_dir, 2, None))
    one = {k: torch.tensor([cached[0][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = teacher(**one).logits[0].half().float()
    assert torch.equal(torch.tensor(cached[0]["teacher_logits"]), expected)
    # another maximum length is other data: a miss; without the cache the teacher runs on every batch
    run_stage(distilled(*common, "task.max_seq_len=16", "runs.task=${paths.runs}/task/cache-c"))
    assert len(set(store.iterdir()) - before) == 2
    calls.clear()
    run_stage(distilled(*common, "distill.teacher_cache=none", "runs.task=${paths.runs}/task/cache-d"))
    assert len(calls) >= 6  # one teacher forward per training batch (6 steps), and none cached
    assert len(set(store.iterdir()) - before) == 2


@pytest.mark.parametrize("overrides, expected", [
    ((), "none"),  # smoke: 6 steps of 16 over 256 examples, less than one pass
    (("task.train_limit=40",), "fp16"),  # 96 examples read from 40: more than two passes
    (("task.train_limit=48",), "fp16"),  # exactly two passes
    (("task.train_limit=49",), "none"),
    (("task.train_limit=40", "distill.teacher_cache=none"), "none"),
    (("distill.teacher_cache=fp32",), "fp32"),
    (("train.task_prediction.max_steps=0", "train.task_prediction.epochs=3"), "fp16"),
])
def test_teacher_cache_auto_caches_only_when_the_set_is_read_twice(make_cfg, overrides, expected):
    from tinykd.stages.task import teacher_cache_precision

    cfg = make_cfg("stage=task", "task=sst2", "debug=smoke", *overrides)
    examples = cfg.task.train_limit
    assert teacher_cache_precision(cfg, examples) == expected
