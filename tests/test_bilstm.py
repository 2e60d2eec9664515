"""BiLSTM students on transfer data (student=bilstm): the model, its embeddings, the teacher-output
cache, and the staged recipe on smoke (hard and soft targets, gradual unfreezing, resume, eval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from transformers import AutoModelForSequenceClassification

from tinykd import augment, models, teacher_outputs
from tinykd.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, glove_embeddings, svd_reduce
from tinykd.errors import TinyKDError


@pytest.fixture
def bilstm():
    torch.manual_seed(0)
    return BiLSTMForSequenceClassification(BiLSTMConfig(vocab_size=50, embedding_dim=8, hidden_size=6,
                                                        representation_size=5, num_labels=3, dropout=0.0)).eval()


def test_padding_never_reaches_the_lstm(bilstm):
    """A sentence gives the same logits alone and padded in a batch (packed sequences, masked max)."""
    a = torch.tensor([[5, 6, 7, 8]])
    b = torch.tensor([[9, 10, 11, 12, 13, 14]])
    batch = torch.zeros((2, 6), dtype=torch.long)
    batch[0, :4], batch[1] = a[0], b[0]
    mask = (batch != 0).long()
    with torch.no_grad():
        together = bilstm(input_ids=batch, attention_mask=mask).logits
        alone = bilstm(input_ids=a).logits
        other_padding = bilstm(input_ids=torch.cat([a, torch.full((1, 2), 33)], 1),
                               attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])).logits
    torch.testing.assert_close(together[0:1], alone)
    torch.testing.assert_close(other_padding, alone)  # whatever the padded ids are
    rep = bilstm(input_ids=a, output_hidden_states=True).hidden_states[0]
    assert rep.shape == (1, 5) and bool((rep.abs() <= 1).all())  # tanh representation


def test_save_and_load_through_the_auto_classes(bilstm, tmp_path):
    bilstm.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "tinykd_bilstm"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, BiLSTMForSequenceClassification)
    ids = torch.randint(1, 50, (3, 7))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=ids).logits, bilstm(input_ids=ids).logits)


def test_svd_reduce_keeps_a_low_rank_table_exactly():
    torch.manual_seed(0)
    table = torch.randn(20, 2) @ torch.randn(2, 6)  # rank 2 in 6 dimensions
    reduced = svd_reduce(table, 2)
    assert reduced.shape == (20, 2)
    # the best rank-2 coordinates keep every inner product (and so every cosine) of a rank-2 table
    torch.testing.assert_close(reduced @ reduced.T, table @ table.T, atol=1e-4, rtol=1e-4)
    full = svd_reduce(table, 6)
    torch.testing.assert_close(full @ full.T, table @ table.T, atol=1e-4, rtol=1e-4)
    with pytest.raises(TinyKDError, match="wider than the teacher's embeddings"):
        svd_reduce(table, 7)


def test_glove_embeddings_copy_known_words_and_bare_pieces():
    vectors = augment.WordVectors(["film", "good", "able"], torch.eye(3))
    vocab = {"[PAD]": 0, "film": 1, "good": 2, "##able": 3, "zzz": 4}
    table, covered = glove_embeddings(vocab, vectors, 3, seed=0)
    assert covered == 3 and table.shape == (5, 3)
    assert torch.equal(table[1], torch.tensor([1.0, 0, 0])) and torch.equal(table[3], torch.tensor([0, 0, 1.0]))
    again, _ = glove_embeddings(vocab, vectors, 3, seed=0)
    assert torch.equal(table, again)  # the random rows are seeded
    with pytest.raises(TinyKDError, match="embedding_dim=50"):
        glove_embeddings(vocab, augment.WordVectors(["a"] * 1, torch.ones(1, 50)), 3, seed=0)


def test_gradual_unfreezing_schedule(bilstm):
    from tinykd.stages.task_bilstm import trainable_groups

    assert [trainable_groups(bilstm, s, 2) for s in range(9)] == [1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert trainable_groups(bilstm, 0, 0) == 4


# ----------------------------------------------------------------------------- the recipe on smoke


@pytest.fixture
def teacher_done(make_cfg):
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))


def bilstm_cfg(make_cfg, *overrides):
    return make_cfg("stage=task", "task=sst2", "student=bilstm", "debug=smoke", *overrides)


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_bilstm_recipe_exports_a_loadable_student_and_times_it(make_cfg, teacher_done):
    res = run_stage(bilstm_cfg(make_cfg, "task.train_limit=100", "stage.transfer=rest"))
    run_dir = Path(res["run_dir"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} == {"representation", "logits", "finetune"}
    assert res["labelled_examples"] == 100 and res["transfer_examples"] == 512  # rows 100.. of train, capped
    assert res["student_params"] > 0 and res["teacher_params"] > 0
    for who in ("student", "teacher"):
        for b in ("b1", "b32"):
            assert res["latency_seq64"][who][b]["median_ms"] > 0
    # the export: a plain directory with the teacher's tokenizer; stage=eval reproduces the dev score
    student = AutoModelForSequenceClassification.from_pretrained(res["export"])
    assert isinstance(student, BiLSTMForSequenceClassification)
    assert (Path(res["export"]) / "tokenizer_config.json").is_file()
    ev = run_stage(make_cfg("stage=eval", "task=sst2", "debug=smoke", f"model={res['export']}"))
    assert ev["dev"]["accuracy"] == pytest.approx(res["dev"]["accuracy"])
    # the projection is in the checkpoint, never in the export
    from safetensors.torch import load_file

    assert not any("projection" in k for k in load_file(Path(res["export"]) / "model.safetensors"))


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_hard_targets_and_finetune_only_with_frozen_lower_layers(make_cfg, teacher_done):
    hard = run_stage(bilstm_cfg(make_cfg, "distill.transfer_targets=hard", "stage.bilstm_phases=[logits]"))
    assert hard["transfer_targets"] == "hard" and 0 <= hard["dev"]["accuracy"] <= 1
    # finetune alone, never releasing more than the classifier: the rest stays as initialised
    res = run_stage(bilstm_cfg(make_cfg, "stage.bilstm_phases=[finetune]", "stage.unfreeze_every=1000",
                               "runs.task=${paths.runs}/task/frozen"))
    cfg = bilstm_cfg(make_cfg)
    from tinykd import build, students

    teacher_dir = build.finetuned_teacher_dir(cfg, build.task_spec(cfg))
    teacher = models.load_classifier(teacher_dir, 2, None)
    fresh = students.bilstm_student(cfg, teacher, models.load_tokenizer(teacher_dir), build.task_spec(cfg))
    trained = AutoModelForSequenceClassification.from_pretrained(res["export"])
    assert torch.equal(trained.embeddings.weight, fresh.embeddings.weight)
    assert torch.equal(trained.lstm.weight_hh_l0, fresh.lstm.weight_hh_l0)
    assert torch.equal(trained.representation.weight, fresh.representation.weight)
    assert not torch.equal(trained.classifier.weight, fresh.classifier.weight)
    # the embeddings are the teacher's input embeddings (same width: no SVD)
    assert torch.equal(fresh.embeddings.weight, teacher.get_input_embeddings().weight)


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_bilstm_resume_equals_uninterrupted(make_cfg, teacher_done):
    whole = run_stage(bilstm_cfg(make_cfg, "runs.task=${paths.runs}/task/whole"))
    part = run_stage(bilstm_cfg(make_cfg, "runs.task=${paths.runs}/task/part", "interrupt_after=8"))
    assert part["interrupted"]
    done = run_stage(bilstm_cfg(make_cfg, "runs.task=${paths.runs}/task/part", "resume=true"))
    assert done["dev"] == whole["dev"] and done["best_step"] == whole["best_step"]
    from safetensors.torch import load_file

    a, b = load_file(Path(whole["export"]) / "model.safetensors"), load_file(Path(done["export"]) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_outputs_cache_hits_and_misses(make_cfg, teacher_done, tmp_path):
    from tinykd import build

    cfg = bilstm_cfg(make_cfg)
    teacher_dir = build.finetuned_teacher_dir(cfg, build.task_spec(cfg))
    tok = models.load_tokenizer(teacher_dir)
    teacher = models.freeze(models.load_classifier(teacher_dir, 2, None))
    ds = build.task_split(cfg, build.task_spec(cfg), tok, "dev")
    cache = tmp_path / "teacher-cache"
    kw = dict(batch_size=32, device="cpu", cache_dir=str(cache), progress=False)
    first = teacher_outputs.with_teacher_outputs(teacher, teacher_dir, ds, tok, **kw)
    again = teacher_outputs.with_teacher_outputs(teacher, teacher_dir, ds, tok, **kw)
    assert first["teacher_logits"] == again["teacher_logits"] and first["teacher_rep"] == again["teacher_rep"]
    assert len(list(cache.iterdir())) == 1  # one entry, read back
    # the values are the teacher's: logits and its last [CLS] vector
    for i in range(3):  # one example at a time: no padding
        one = {k: torch.tensor([ds[i][k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            out = teacher(**one, output_hidden_states=True)
        torch.testing.assert_close(torch.tensor(first["teacher_logits"][i]), out.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.tensor(first["teacher_rep"][i]), out.hidden_states[-1][0, 0], atol=1e-5,
                                   rtol=1e-5)
    # other data, or another teacher: a miss
    teacher_outputs.with_teacher_outputs(teacher, teacher_dir, ds.select(range(10)), tok, **kw)
    assert len(list(cache.iterdir())) == 2
    (Path(teacher_dir) / "config.json").touch()  # the teacher's files changed
    teacher_outputs.with_teacher_outputs(teacher, teacher_dir, ds, tok, **kw)
    assert len(list(cache.iterdir())) == 3


def test_bilstm_bad_settings(make_cfg):
    """Refused at start-up, before the teacher is even looked for."""
    with pytest.raises(TinyKDError, match="distill.transfer_targets='maybe' is not one of: hard, soft"):
        run_stage(bilstm_cfg(make_cfg, "distill.transfer_targets=maybe"))
    with pytest.raises(TinyKDError, match="stage.bilstm_phases"):
        run_stage(bilstm_cfg(make_cfg, "stage.bilstm_phases=[pretrain]"))
    with pytest.raises(TinyKDError, match="student.embeddings='word2vec' is not one of: teacher, glove, random"):
        run_stage(bilstm_cfg(make_cfg, "student.embeddings=word2vec"))
