"""DistilBERT (distill=distilbert, student=distilbert): the triple loss by hand, the layer-copy
initialisation against the teacher's weights, and the general and task stages on smoke."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig, BertForMaskedLM,
                          DistilBertForMaskedLM, DistilBertForSequenceClassification)

from tinykd import losses, models
from tinykd.errors import TinyKDError
from tinykd.mlm import head_logits


# ----------------------------------------------------------------------------- losses by hand


def test_cosine_hidden_loss_by_hand():
    s = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])  # (1, 3, 2)
    t = torch.tensor([[[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])
    # cosines: 1, 0, -1/sqrt(2) -> distances 0, 1, 1 + 1/sqrt(2)
    d = [0.0, 1.0, 1 + 1 / math.sqrt(2)]
    assert losses.cosine_hidden_loss(s, t, None).item() == pytest.approx(sum(d) / 3, abs=1e-6)
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    assert losses.cosine_hidden_loss(s, t, mask).item() == pytest.approx(0.5, abs=1e-6)


def test_distilbert_triple_by_hand():
    T = 2.0
    s_logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    t_logits = torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 0.0]])
    targets = torch.tensor([2, -100])  # only row 0 was chosen for the masked-LM task

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    kl = 0.0
    for s, t in zip(s_logits.tolist(), t_logits.tolist()):
        ps, pt = softmax(s), softmax(t)
        kl += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    ce = T * T * kl / 2  # T^2 KL, mean over the 2 rows
    mlm = -math.log(math.exp(0.0) / (math.exp(1.0) + 2))  # row 0, target 2, at temperature 1
    hidden_s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    hidden_t = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    cos = (0.0 + 1.0) / 2
    total, parts = losses.distilbert_triple(s_logits, t_logits, targets, hidden_s, hidden_t, torch.ones(1, 2),
                                            temperature=T, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0)
    assert parts["ce"].item() == pytest.approx(ce, abs=1e-6)
    assert parts["mlm"].item() == pytest.approx(mlm, abs=1e-6)
    assert parts["cos"].item() == pytest.approx(cos, abs=1e-6)
    assert total.item() == pytest.approx(5 * ce + 2 * mlm + cos, abs=1e-5)
    # identical distributions and hidden states cost nothing but the masked-LM term
    total, parts = losses.distilbert_triple(t_logits, t_logits, torch.full((2,), -100), hidden_t, hidden_t, None,
                                            temperature=T, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0)
    assert parts["ce"].item() == pytest.approx(0, abs=1e-7) and parts["cos"].item() == pytest.approx(0, abs=1e-7)
    assert parts["mlm"].item() == 0 and total.item() == pytest.approx(0, abs=1e-6)


# ----------------------------------------------------------------------------- layer copy


@pytest.fixture(scope="module")
def bert_mlm():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=40, pad_token_id=0)
    return BertForMaskedLM(config).eval()


def distil_student(teacher, layers, head="mlm"):
    config = models.distilbert_config(teacher.config, num_layers=layers, dropout=0.0)
    return models.random_student(config, seed=1, head=head).eval()


def test_distilbert_copy_takes_the_named_teacher_layers(bert_mlm):
    student = distil_student(bert_mlm, 2)
    assert models.init_from_teacher_layers(student, bert_mlm, None) == [1, 3]  # one layer in two
    t_layers = bert_mlm.bert.encoder.layer
    for s_layer, t in zip(student.distilbert.transformer.layer, [1, 3]):
        tl = t_layers[t - 1]
        assert torch.equal(s_layer.attention.q_lin.weight, tl.attention.self.query.weight)
        assert torch.equal(s_layer.attention.k_lin.bias, tl.attention.self.key.bias)
        assert torch.equal(s_layer.attention.v_lin.weight, tl.attention.self.value.weight)
        assert torch.equal(s_layer.attention.out_lin.weight, tl.attention.output.dense.weight)
        assert torch.equal(s_layer.sa_layer_norm.weight, tl.attention.output.LayerNorm.weight)
        assert torch.equal(s_layer.ffn.lin1.weight, tl.intermediate.dense.weight)
        assert torch.equal(s_layer.ffn.lin2.bias, tl.output.dense.bias)
        assert torch.equal(s_layer.output_layer_norm.bias, tl.output.LayerNorm.bias)
    te, se = bert_mlm.bert.embeddings, student.distilbert.embeddings
    # segment 0 folded into the word embeddings (DistilBERT has no token types)
    assert torch.equal(se.word_embeddings.weight, te.word_embeddings.weight + te.token_type_embeddings.weight[0])
    assert torch.equal(se.position_embeddings.weight, te.position_embeddings.weight)
    assert torch.equal(student.vocab_transform.weight, bert_mlm.cls.predictions.transform.dense.weight)
    assert torch.equal(student.vocab_projector.bias, bert_mlm.cls.predictions.bias)
    assert student.vocab_projector.weight.data_ptr() == se.word_embeddings.weight.data_ptr()  # still tied


def test_copying_every_layer_reproduces_the_teacher(bert_mlm):
    """With all layers copied, the student computes the teacher's function: the mapping of
    every weight is right (a swapped or missing tensor would change the outputs)."""
    ids = torch.randint(5, 60, (3, 12))
    keep = torch.ones_like(ids)
    keep[1, 8:] = 0
    with torch.no_grad():
        t_out = bert_mlm(input_ids=ids, attention_mask=keep, output_hidden_states=True)
        for student in (distil_student(bert_mlm, 4), models.random_student(bert_mlm.config, 1, head="mlm").eval()):
            models.init_from_teacher_layers(student, bert_mlm, [1, 2, 3, 4])
            s_out = student(input_ids=ids, attention_mask=keep, output_hidden_states=True)
            torch.testing.assert_close(s_out.hidden_states[-1][keep.bool()], t_out.hidden_states[-1][keep.bool()],
                                       atol=1e-5, rtol=1e-5)
            # the masked-LM distribution is the teacher's (the folded segment vector shifts every logit equally)
            torch.testing.assert_close(s_out.logits.softmax(-1)[keep.bool()], t_out.logits.softmax(-1)[keep.bool()],
                                       atol=1e-5, rtol=1e-4)


def test_init_layers_are_validated(bert_mlm):
    with pytest.raises(TinyKDError, match=r"out of range \(student.init_layers\).*1..4"):
        models.init_from_teacher_layers(distil_student(bert_mlm, 2), bert_mlm, [1, 5])
    with pytest.raises(TinyKDError, match=r"student.init_layers needs one teacher layer per student layer: got \[1, 2, 3\]"):
        models.init_from_teacher_layers(distil_student(bert_mlm, 2), bert_mlm, [1, 2, 3])
    narrow = models.student_config(bert_mlm.config, num_layers=2, hidden_size=16, num_heads=4, intermediate_size=48,
                                   dropout=0.0)
    with pytest.raises(TinyKDError, match="needs the teacher's shape"):
        models.init_from_teacher_layers(models.random_student(narrow, 0, head="mlm"), bert_mlm, None)


def test_head_logits_match_the_models_own_heads(bert_mlm):
    student = distil_student(bert_mlm, 2)
    ids = torch.randint(5, 60, (2, 7))
    with torch.no_grad():
        for model in (bert_mlm, student):
            out = model(input_ids=ids, output_hidden_states=True)
            rows = out.hidden_states[-1].reshape(-1, out.hidden_states[-1].size(-1))
            torch.testing.assert_close(head_logits(model, rows), out.logits.reshape(rows.size(0), -1))


# ----------------------------------------------------------------------------- stages


def test_general_distilbert_then_task_distillation(make_cfg):
    res = run_stage(make_cfg("stage=general", "distill=distilbert", "student=distilbert", "debug=smoke"))
    run_dir = Path(res["run_dir"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    parts = {k for r in records for k in r if k.startswith("loss/")}
    assert parts == {"loss/ce", "loss/mlm", "loss/cos"}
    assert all(math.isfinite(r["loss"]) for r in records)
    # a plain DistilBERT masked LM: half the tiny teacher's 4 layers, its width, no token types
    mlm = AutoModelForMaskedLM.from_pretrained(res["export"])
    assert isinstance(mlm, DistilBertForMaskedLM)
    assert mlm.config.n_layers == 2 and mlm.config.dim == 64
    # task distillation accepts it (no token_type_ids reach it), and exports a DistilBERT classifier
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    task = run_stage(make_cfg("stage=task", "task=sst2", "student=distilbert", "distill=distilbert", "debug=smoke"))
    clf = AutoModelForSequenceClassification.from_pretrained(task["export"])
    assert isinstance(clf, DistilBertForSequenceClassification)
    assert 0.0 <= task["dev"]["accuracy"] <= 1.0
    # student.init=general starts the task student from the general export: with a learning rate of 0
    # its encoder is exactly the exported masked LM's
    frozen = run_stage(make_cfg("stage=task", "task=sst2", "student=distilbert", "distill=distilbert", "debug=smoke",
                                "stage.phases=[prediction]", "train.task_prediction.lr=0",
                                "runs.task=${paths.runs}/task/lr0"))
    start = AutoModelForSequenceClassification.from_pretrained(frozen["export"]).distilbert.state_dict()
    general = mlm.distilbert.state_dict()
    assert start.keys() == general.keys() and all(torch.equal(start[k], general[k]) for k in start)


def test_general_distilbert_starts_from_the_teacher_layers(make_cfg):
    """With zero steps of training the exported student is exactly the layer copy."""
    res = run_stage(make_cfg("stage=general", "distill=distilbert", "student=distilbert", "debug=smoke",
                             "student.init_layers=[2,4]", "train.general.max_steps=1", "train.general.lr=0"))
    from tinykd import build

    cfg = make_cfg("stage=general", "distill=distilbert", "student=distilbert", "debug=smoke")
    teacher = models.load_masked_lm(build.teacher_source(cfg))
    student = AutoModelForMaskedLM.from_pretrained(res["export"])
    t_layers = teacher.bert.encoder.layer
    for s_layer, t in zip(student.distilbert.transformer.layer, [2, 4]):
        assert torch.equal(s_layer.attention.q_lin.weight, t_layers[t - 1].attention.self.query.weight)
        assert torch.equal(s_layer.ffn.lin1.weight, t_layers[t - 1].intermediate.dense.weight)


def test_distilbert_needs_a_masked_lm_teacher(make_cfg, tmp_path):
    from tinykd import build

    cfg = make_cfg("stage=general", "distill=distilbert", "student=distilbert", "debug=smoke")
    encoder_only = tmp_path / "encoder"
    models.load_encoder(build.teacher_source(cfg)).save_pretrained(encoder_only)
    models.load_tokenizer(build.teacher_source(cfg)).save_pretrained(encoder_only)
    with pytest.raises(TinyKDError, match="stage=mlm_head"):
        run_stage(make_cfg("stage=general", "distill=distilbert", "student=distilbert", "debug=smoke",
                           f"teacher.path={encoder_only}", "teacher.tiny=null"))
