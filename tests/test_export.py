"""stage=export and the model card: a debug=smoke student exported to ONNX, its graph run by ONNX Runtime
directly (not through tinykd) against PyTorch, its int8 model scored, its latency table and its card
checked against the run's own figures (slow tier: one smoke pipeline and an export with its teacher); a
DistilBERT graph against PyTorch, the BiLSTM's refusal and the console script (default tier)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import run_stage
from test_predict import _compose
from tinykd import modelcard, onnxexport
from tinykd.errors import TinyKDError

SMOKE = ("debug=smoke",)
# a short latency table: the test checks that it is there and consistent, not how fast anything is
QUICK = ("export.repeats=2", "export.warmup=1", "export.batch_sizes=[1,4]", "export.real_examples=16",
         "export.check_examples=48")
TEXTS = ["a gorgeous , witty , seductive movie .", "bad",
         "the plot is nowhere near as clever as it thinks it is , and the jokes fall flat"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cache_dir):
    """A smoke student of sst2 (teacher, general, task), then stage=export on it: (stage=task's results, the
    export report)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_RUNS", str(tmp_path_factory.mktemp("export-runs")))
        mp.setenv("TINYKD_CACHE", str(cache_dir))
        summary = run_stage(_compose("stage=pipeline", "task=sst2", *SMOKE))
        task = json.loads((Path(summary["student_export"]).parent / "results.json").read_text())  # stage=task's
        report = run_stage(_compose("stage=export", "task=sst2", *SMOKE, f"model={task['export']}", *QUICK))
    return task, report


def ort_logits(path: Path, model_dir: str, texts, names) -> np.ndarray:
    """The ONNX graph run by ONNX Runtime itself on `texts` (one padded batch), as a user would."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="np")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {n: enc[n].astype(np.int64) for n in names})[0]


@pytest.mark.slow  # a smoke pipeline, then stage=export with its teacher: the default tier keeps the cheaper ones
def test_the_onnx_student_matches_pytorch_at_any_batch_and_length(exported):
    task, report = exported
    model_dir = task["export"]
    onnx_dir = Path(model_dir) / "onnx"
    session = ort.InferenceSession(str(onnx_dir / onnxexport.FP32), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert set(names) == {"input_ids", "attention_mask", "token_type_ids"}
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    for texts in (TEXTS[:1], TEXTS, TEXTS * 3):  # batch 1, 3 and 9; lengths padded differently each time
        got = ort_logits(onnx_dir / onnxexport.FP32, model_dir, texts, names)
        with torch.no_grad():
            want = model(**tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits.numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4
    s = report["onnx"]["student"]
    assert 0 <= s["max_abs_difference"] <= report["settings"]["atol"] and s["checked_examples"] == 48
    assert not (onnx_dir / onnxexport.CANDIDATE).exists()


@pytest.mark.slow  # a smoke pipeline, then stage=export with its teacher: the default tier keeps the cheaper ones
def test_the_int8_model_exists_and_its_dev_score_is_its_own(exported):
    """The report's int8 accuracy equals the int8 graph's accuracy counted here with ONNX Runtime alone."""
    task, report = exported
    model_dir = task["export"]
    int8 = Path(model_dir) / "onnx" / onnxexport.INT8
    assert int8.is_file() and int8.stat().st_size < (Path(model_dir) / "onnx" / onnxexport.FP32).stat().st_size
    cfg = _compose("task=sst2", *SMOKE)
    import csv

    with open(Path(cfg.paths.glue_dir) / "SST-2" / "dev.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[: cfg.task.dev_limit]
    texts, labels = [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])
    names = [i.name for i in ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).get_inputs()]
    preds = np.concatenate([ort_logits(int8, model_dir, texts[i : i + 1], names).argmax(-1)
                            for i in range(len(texts))])
    assert report["dev"]["student"]["int8"]["accuracy"] == pytest.approx(float((preds == labels).mean()), abs=1e-9)
    assert report["dev"]["student"]["pytorch"] == task["dev"]  # the same student, scored the same way
    assert report["int8_drop_points"] == pytest.approx(
        100 * (report["dev"]["student"]["pytorch"]["accuracy"] - report["dev"]["student"]["int8"]["accuracy"]))


@pytest.mark.slow  # a smoke pipeline, then stage=export with its teacher: the default tier keeps the cheaper ones
def test_the_latency_table_covers_teacher_and_student_in_every_runtime(exported):
    task, report = exported
    assert report["teacher"] == task["teacher"]  # the card's teacher, found without being named
    for name in ("student", "teacher"):
        for runtime in ("pytorch", "onnx", "int8"):
            row = report["latency"][name][runtime]
            for b in (1, 4):
                assert row[f"b{b}"]["median_ms"] > 0 and row[f"b{b}"]["seq_len"] == 64
                assert row[f"real_b{b}"]["examples"] == 16 and row[f"real_b{b}"]["ms_per_example"] > 0
                assert row[f"b{b}"]["threads"] == report["threads"]
    t = report["latency"]
    assert report["speedups"]["student_int8_vs_teacher_pytorch_b4"] == pytest.approx(
        t["teacher"]["pytorch"]["b4"]["median_ms"] / t["student"]["int8"]["b4"]["median_ms"])
    assert (Path(report["teacher"]) / "onnx" / onnxexport.INT8).is_file()
    on_disk = json.loads((Path(task["export"]) / "onnx" / "report.json").read_text())
    assert on_disk["dev"] == report["dev"]


@pytest.mark.slow  # a smoke pipeline, then stage=export with its teacher: the default tier keeps the cheaper ones
def test_the_model_card_parses_and_its_metrics_are_the_runs(exported):
    task, report = exported
    model_dir = Path(task["export"])
    card = ModelCard.load(model_dir / modelcard.CARD)  # its YAML header, parsed by huggingface_hub
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    assert data["datasets"] == ["nyu-mll/glue"] and data["metrics"] == ["accuracy"]
    assert modelcard.eval_scores(model_dir) == task["dev"]  # model-index: the run's dev scores
    facts = data["tinykd"]
    assert facts["dev"] == task["dev"] and facts["teacher"]["dev"] == task["teacher_dev"]
    assert facts["teacher"]["dir"] == task["teacher"]
    assert facts["student"]["params"] == sum(
        p.numel() for p in AutoModelForSequenceClassification.from_pretrained(model_dir).parameters())
    # stage=export's figures, added to the card
    rows = {r["name"]: r for r in facts["onnx"]["rows"]}
    assert rows["ONNX Runtime int8"]["score"] == report["dev"]["student"]["int8"]["accuracy"]
    assert rows["PyTorch fp32"]["b1"] == report["latency"]["student"]["pytorch"]["b1"]["median_ms"]
    assert "| ONNX Runtime int8 |" in card.text and "stage=pipeline" not in card.text  # composed in Python
    assert (model_dir / modelcard.SHIPPED_CONFIG).read_text() == (Path(task["run_dir"]) / "config.yaml").read_text()


@pytest.mark.slow  # a smoke pipeline, then stage=export with its teacher: the default tier keeps the cheaper ones
def test_a_failed_check_installs_nothing_and_keeps_the_earlier_export(exported, cache_dir, monkeypatch, tmp_path):
    """export.atol below what fp32 arithmetic reaches: the export stops loudly; the checked model.onnx
    of the earlier export is left as it was."""
    task, _ = exported
    model_dir = Path(task["export"])
    installed = (model_dir / "onnx" / onnxexport.FP32).read_bytes()
    monkeypatch.setenv("TINYKD_CACHE", str(cache_dir))
    monkeypatch.setenv("TINYKD_RUNS", str(tmp_path))
    with pytest.raises(TinyKDError, match=r"differs from PyTorch by up to .* \(export\.atol=1e-30\)") as e:
        run_stage(_compose("stage=export", "task=sst2", *SMOKE, f"model={model_dir}", "export.atol=1e-30",
                           "export.teacher=none", "export.optimize=false", *QUICK))
    assert "export.atol" in e.value.fix
    assert (model_dir / "onnx" / onnxexport.FP32).read_bytes() == installed
    assert (model_dir / "onnx" / onnxexport.REJECTED).is_file()


def test_the_bilstm_is_refused_saying_why(tmp_path):
    from tinykd import models
    from tinykd.bilstm import BiLSTMConfig

    config = BiLSTMConfig(vocab_size=50, embedding_dim=8, hidden_size=4, num_layers=1, representation_size=4,
                          dropout=0.0, num_labels=2)
    model = models.random_student(config, 0, head="classifier")
    ids = torch.randint(5, 50, (2, 6))
    with pytest.raises(TinyKDError, match="pack_padded_sequence") as e:
        onnxexport.export(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tmp_path / "m.onnx",
                          "sequence_classification", 18)
    assert "predict.backend=pytorch" in e.value.fix and not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("task", ["wnut17", "squad"])
def test_token_and_qa_models_export_and_score(task, tmp_path_factory, cache_dir):
    """A token classifier and an extractive-QA model (stage=teacher's smoke exports: no card) export,
    match PyTorch on their dev windows and score in int8 with the task's own metric."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_RUNS", str(tmp_path_factory.mktemp(f"{task}-export")))
        mp.setenv("TINYKD_CACHE", str(cache_dir))
        teacher = run_stage(_compose("stage=teacher", f"task={task}", *SMOKE))
        report = run_stage(_compose("stage=export", f"task={task}", *SMOKE, f"model={teacher['export']}", *QUICK))
    assert report["teacher"] is None and set(report["latency"]) == {"student"}
    assert report["onnx"]["student"]["max_abs_difference"] <= 1e-4
    assert report["dev"]["student"]["pytorch"] == teacher["dev"]
    main = report["main_metric"]
    assert main == ("entity_f1" if task == "wnut17" else "squad_f1")
    assert 0 <= report["dev"]["student"]["int8"][main] <= (1 if task == "wnut17" else 100)
    names = {o.name for o in ort.InferenceSession(str(Path(teacher["export"]) / "onnx" / onnxexport.INT8),
                                                  providers=["CPUExecutionProvider"]).get_outputs()}
    assert names == ({"logits"} if task == "wnut17" else {"start_logits", "end_logits"})


def test_the_console_script_runs_tinykd():
    """`tinykd ...` (pyproject's console script, installed beside this Python) is `python -m tinykd ...`."""
    import subprocess
    import sys

    script = Path(sys.executable).parent / "tinykd"
    assert script.is_file(), "reinstall: pip install -e . (make install) declares the tinykd console script"
    r = subprocess.run([str(script), "stage=export", "task=sst2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-2:] == ["error: stage=export needs a model directory.",
                                     "  fix: add model=<path to a model directory>."]


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_a_distilbert_student_exports_fuses_and_matches(tmp_path):
    """DistilBERT (no segment input): exported, fused by ONNX Runtime's optimizer and run through OnnxModel,
    its logits equal PyTorch's on padded batches of another size and length than the traced one."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, num_labels=3)
    model = DistilBertForSequenceClassification(config).eval()
    ids = torch.randint(5, 120, (2, 7))
    path = onnxexport.export(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tmp_path / "m.onnx",
                             "sequence_classification", 18)
    fused = onnxexport.optimize(path, config)
    assert fused.get("SkipLayerNormalization", 0) + fused.get("LayerNormalization", 0) > 0
    session = onnxexport.OnnxModel(path, config, threads=1)
    assert session.onnx_inputs == {"input_ids", "attention_mask"}
    ids = torch.randint(5, 120, (5, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[4, 2:] = 0
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    got = session(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
    assert got.shape == (5, 3) and torch.allclose(got, want, atol=1e-5)
    assert config._attn_implementation == model.config._attn_implementation  # restored after the export
