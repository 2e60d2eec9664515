"""Extractive QA end to end: `stage=pipeline task=squad debug=smoke`, the export reloaded with plain
`transformers` (AutoModelForQuestionAnswering) and scored again; stage=eval; a fine-tuned QA model
given as teacher.path; the start-up checks of QA settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_stage
from tinykd import build, config
from tinykd.engine import pick_device
from tinykd.errors import TinyKDError
from tinykd.evaluate import evaluate




@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_qa_pipeline_exports_a_span_model_that_plain_transformers_reloads(make_cfg):
    from transformers import AutoModelForQuestionAnswering

    res = run_stage(make_cfg("stage=pipeline", "task=squad", "debug=smoke"))
    assert res["main_metric"] == "squad_f1" and set(res["dev"]) == {"squad_f1", "squad_em"}
    export = res["student_export"]
    conf = json.loads((Path(export) / "config.json").read_text())
    assert conf["architectures"] == ["BertForQuestionAnswering"]
    # the export, loaded by plain transformers, scored on the same dev windows: the same figures
    cfg = make_cfg("stage=eval", "task=squad", "debug=smoke", f"model={export}")
    spec = build.task_spec(cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForQuestionAnswering.from_pretrained(export)
    dev = build.task_split(cfg, spec, tok, "dev")
    again = evaluate(model, dev, tok, spec, 64, pick_device("cpu"))
    assert again == pytest.approx(res["dev"], abs=1e-9)
    assert len(set(dev["id"])) == 128  # debug=smoke: dev_limit=128 questions, every one scored
    ev = run_stage(cfg)
    assert ev["dev"] == pytest.approx(res["dev"], abs=1e-9) and ev["examples"] == 128

    # the fine-tuned teacher given as teacher.path: used as it is, no stage=teacher
    teacher = res["teacher_export"]
    cfg = make_cfg("stage=pipeline", "task=squad", "debug=smoke", f"teacher.path={teacher}", "teacher.package=null",
                   "runs.task=" + str(Path(export).parent.parent / "given"))
    assert build.given_finetuned_teacher(cfg, build.task_spec(cfg)) == teacher


@pytest.mark.parametrize("overrides, message", [
    (("task.max_seq_len=64", "task.max_question_len=64"), "leaves no room for the context"),
    (("task.max_seq_len=96", "task.max_question_len=24", "task.doc_stride=80"), "windows would not advance"),
    (("task.labels=[a,b]",), "extractive QA predicts answer spans"),
    (("task.metrics=[accuracy]",), "cannot score extractive QA"),
])
def test_qa_settings_are_checked_at_start_up(make_cfg, overrides, message):
    with pytest.raises(TinyKDError, match=message):
        config.check(make_cfg("stage=task", "task=squad", *overrides))


def test_token_settings_are_checked_at_start_up(make_cfg):
    with pytest.raises(TinyKDError, match="entities need BIO tags"):
        config.check(make_cfg("stage=task", "task=upos", "task.metrics=[entity_f1]"))
    with pytest.raises(TinyKDError, match="student=bilstm predicts one label per text"):
        config.check(make_cfg("stage=task", "task=wnut17", "student=bilstm"))
