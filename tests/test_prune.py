"""Structured pruning (student.init=pruned, tinykd/prune.py): exact at the teacher's own shape, each kept
row and column the teacher's, importance scores as defined, clear errors for shapes it cannot reach."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification, BertModel, DistilBertConfig, DistilBertModel)

from conftest import run_stage
from tinykd import prune
from tinykd.errors import TinyKDError

TEACHER = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
               max_position_embeddings=64)


def shaped(**kw) -> BertConfig:
    return BertConfig(**{**TEACHER, **kw})


def batches(seed: int = 0, n: int = 3):
    """Batches with padding: every second row's tail is padding (ids 0)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 120, (4, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 7:] = 0
        mask[3, 4:] = 0
        out.append({"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
    return out


def teacher_of(cls, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return cls(shaped(**kw)).eval()


@pytest.mark.parametrize("cls", [BertModel, BertForSequenceClassification, BertForTokenClassification,
                                 BertForQuestionAnswering])
def test_pruning_to_the_teachers_shape_reproduces_the_teacher(cls):
    teacher = teacher_of(cls, num_labels=2 if cls is BertForQuestionAnswering else 3)
    torch.manual_seed(1)
    student = cls(teacher.config).eval()  # other random weights, the same shape
    plan = prune.prune(teacher, student, batches())
    assert plan.layers == [0, 1, 2] and plan.channels == list(range(32))
    b = batches(seed=5)[0]
    t_out, s_out = teacher(**b), student(**b)
    for key in t_out.keys():
        assert torch.equal(t_out[key], s_out[key]), key


def kept(w: torch.Tensor, rows, cols) -> torch.Tensor:
    """w[rows][:, cols], written out with Python indexing (no prune.py code)."""
    return torch.stack([torch.stack([w[r, c] for c in cols]) for r in rows])


@pytest.mark.parametrize("cls", [BertForSequenceClassification, BertForTokenClassification, BertForQuestionAnswering])
def test_each_kept_row_and_column_is_the_teachers(cls):
    """For a sequence, a token and a QA student: every weight it keeps is the teacher's, at the kept rows and
    columns (the head reads the kept pooler outputs, or the kept hidden channels)."""
    labels = 2 if cls is BertForQuestionAnswering else 5
    teacher = teacher_of(cls, num_labels=labels)
    sc = shaped(num_hidden_layers=2, hidden_size=16, num_attention_heads=4, intermediate_size=20, num_labels=labels)
    student = cls(sc).eval()
    plan = prune.prune(teacher, student, batches())
    ch = plan.channels
    assert len(ch) == 16 and len(plan.layers) == 2 and all(len(h) == 4 for h in plan.heads)
    t, s = teacher.bert, student.bert
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        tw = getattr(t.embeddings, name).weight
        assert torch.equal(getattr(s.embeddings, name).weight, tw[:, ch])
    assert torch.equal(s.embeddings.LayerNorm.weight, t.embeddings.LayerNorm.weight[ch])
    d_t, d_s = 8, 4
    scale = math.sqrt(d_s / d_t)  # the one documented change: queries rescaled for the smaller head size
    for j, i in enumerate(plan.layers):
        tl, sl = t.encoder.layer[i], s.encoder.layer[j]
        qk = [h * d_t + d for h, dims in zip(plan.heads[j], plan.qk_dims[j]) for d in dims]
        v = [h * d_t + d for h, dims in zip(plan.heads[j], plan.v_dims[j]) for d in dims]
        assert torch.allclose(sl.attention.self.query.weight, kept(tl.attention.self.query.weight, qk, ch) * scale)
        assert torch.allclose(sl.attention.self.query.bias, tl.attention.self.query.bias[qk] * scale)
        assert torch.equal(sl.attention.self.key.weight, kept(tl.attention.self.key.weight, qk, ch))
        assert torch.equal(sl.attention.self.value.weight, kept(tl.attention.self.value.weight, v, ch))
        assert torch.equal(sl.attention.self.value.bias, tl.attention.self.value.bias[v])
        assert torch.equal(sl.attention.output.dense.weight, kept(tl.attention.output.dense.weight, ch, v))
        assert torch.equal(sl.attention.output.LayerNorm.bias, tl.attention.output.LayerNorm.bias[ch])
        n = plan.neurons[j]
        assert torch.equal(sl.intermediate.dense.weight, kept(tl.intermediate.dense.weight, n, ch))
        assert torch.equal(sl.output.dense.weight, kept(tl.output.dense.weight, ch, n))
        assert torch.equal(sl.output.dense.bias, tl.output.dense.bias[ch])
        assert torch.equal(sl.output.LayerNorm.weight, tl.output.LayerNorm.weight[ch])
    if cls is BertForSequenceClassification:
        assert torch.equal(s.pooler.dense.weight, kept(t.pooler.dense.weight, plan.pooler, ch))
        assert torch.equal(student.classifier.weight, teacher.classifier.weight[:, plan.pooler])
        assert torch.equal(student.classifier.bias, teacher.classifier.bias)
    else:  # token and QA heads read every kept hidden channel; their outputs (tags, start/end) are all kept
        head, t_head = ((student.classifier, teacher.classifier) if cls is BertForTokenClassification
                        else (student.qa_outputs, teacher.qa_outputs))
        assert plan.pooler is None  # these heads have no pooler
        assert torch.equal(head.weight, kept(t_head.weight, range(labels), ch))
        assert torch.equal(head.bias, t_head.bias)


def test_token_head_keeps_the_hidden_channels():
    teacher = teacher_of(BertForTokenClassification, num_labels=5)
    student = BertForTokenClassification(shaped(hidden_size=16, num_attention_heads=4, num_labels=5)).eval()
    plan = prune.prune(teacher, student, batches())
    assert torch.equal(student.classifier.weight, teacher.classifier.weight[:, plan.channels])


def test_importance_scores_as_defined_by_hand():
    """Each score recomputed here from the teacher's own modules, real tokens only."""
    teacher = teacher_of(BertModel)
    bs = batches()
    imp = prune.measure(teacher, bs)
    n_heads, d = 4, 8
    infl = torch.zeros(3, dtype=torch.float64)
    ffn = torch.zeros(3, 48, dtype=torch.float64)
    heads = torch.zeros(3, n_heads, dtype=torch.float64)
    channels = torch.zeros(32, dtype=torch.float64)
    tokens = 0
    with torch.no_grad():
        for b in bs:
            m = b["attention_mask"].bool()
            hs = teacher(**b, output_hidden_states=True).hidden_states
            tokens += int(m.sum())
            channels += hs[0][m].double().abs().sum(0)  # the embedding LayerNorm's output is hidden_states[0]
            ext = (1.0 - b["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
            for i, layer in enumerate(teacher.encoder.layer):
                x = hs[i]
                infl[i] += sum(1 - torch.dot(u, w) / (u.norm() * w.norm()) for u, w in zip(x[m].double(), hs[i + 1][m].double()))
                q = layer.attention.self.query(x).view(4, 12, n_heads, d).transpose(1, 2)
                k = layer.attention.self.key(x).view(4, 12, n_heads, d).transpose(1, 2)
                v = layer.attention.self.value(x).view(4, 12, n_heads, d).transpose(1, 2)
                probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + ext, dim=-1)
                ctx = (probs @ v).transpose(1, 2)  # (B, L, heads, d)
                heads[i] += ctx[m].double().norm(dim=-1).sum(0)
                attn_out = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx.reshape(4, 12, 32)) + x)
                channels += attn_out[m].double().abs().sum(0) + hs[i + 1][m].double().abs().sum(0)
                ffn[i] += F.gelu(layer.intermediate.dense(attn_out))[m].double().abs().sum(0)
    assert imp.tokens == tokens == sum(int(b["attention_mask"].sum()) for b in bs)
    assert torch.allclose(imp.layers, infl / tokens, atol=1e-6)
    assert torch.allclose(imp.neurons, ffn / tokens, atol=1e-6)
    assert torch.allclose(imp.heads, heads / tokens, atol=1e-5)
    assert torch.allclose(imp.channels, channels / tokens, atol=1e-5)


def test_padding_does_not_change_the_scores():
    teacher = teacher_of(BertModel)
    bs = batches()
    other = [{**b, "input_ids": torch.where(b["attention_mask"].bool(), b["input_ids"], 7)} for b in bs]
    a, b = prune.measure(teacher, bs), prune.measure(teacher, other)
    for field in ("layers", "channels", "heads", "qk_dims", "v_dims", "neurons"):
        assert torch.allclose(getattr(a, field), getattr(b, field)), field


def test_ranking_keeps_the_top_units_in_order():
    assert prune.top(torch.tensor([0.1, 0.9, 0.5, 0.9, 0.0]), 3) == [1, 2, 3]
    imp = prune.Importance(layers=torch.tensor([0.3, 0.1, 0.2]), channels=torch.arange(32.0),
                           heads=torch.tensor([[1.0, 4, 3, 2]] * 3), qk_dims=torch.arange(32.0).view(1, 4, 8).repeat(3, 1, 1),
                           v_dims=-torch.arange(32.0).view(1, 4, 8).repeat(3, 1, 1), neurons=torch.arange(48.0).repeat(3, 1),
                           pooler=None, tokens=1)
    p = prune.plan(imp, shaped(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=4))
    assert p.layers == [0, 2]  # the two most influential layers, in the teacher's order
    assert p.channels == list(range(24, 32))
    assert p.heads == [[1, 2], [1, 2]]
    assert p.qk_dims[0] == [[4, 5, 6, 7], [4, 5, 6, 7]] and p.v_dims[0] == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert p.neurons[0] == [44, 45, 46, 47]
    assert prune.plan(imp, shaped(num_hidden_layers=2), layers=[2, 3]).layers == [1, 2]  # student.init_layers


@pytest.mark.parametrize("kw, match", [
    (dict(num_hidden_layers=4), r"student.num_layers=4, but the teacher has 3"),
    (dict(hidden_size=64, num_attention_heads=8), r"student.hidden_size=64, but the teacher has 32"),
    (dict(intermediate_size=64), r"student.intermediate_size=64"),
    (dict(hidden_size=32, num_attention_heads=2), r"head size is 32 / 2 = 16, larger than the teacher's 8"),
])
def test_shapes_pruning_cannot_reach_are_refused(kw, match):
    with pytest.raises(TinyKDError, match=match):
        prune.check_shape(shaped(**kw), shaped())


def test_a_non_bert_teacher_is_refused():
    t = DistilBertModel(DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=48))
    with pytest.raises(TinyKDError, match="prunes a BERT teacher; this teacher is distilbert"):
        prune.prune(t, BertModel(shaped(hidden_size=16)), batches())


def test_the_general_stage_starts_from_the_pruned_teacher(make_cfg):
    """Smoke run with lr=0: the exported student holds the teacher's weights, channel for channel."""
    t0 = time.perf_counter()
    res = run_stage(make_cfg("stage=general", "student.init=pruned", "debug=smoke", "train.general.lr=0"))
    assert time.perf_counter() - t0 < 60
    cfg = make_cfg("stage=general", "debug=smoke")
    from tinykd import build

    teacher = BertModel.from_pretrained(build.teacher_source(cfg))
    student = BertModel.from_pretrained(res["export"])
    t_words, s_words = teacher.embeddings.word_embeddings.weight, student.embeddings.word_embeddings.weight
    assert s_words.shape[1] == 32 < t_words.shape[1]
    columns = [next(j for j in range(t_words.shape[1]) if torch.equal(s_words[:, i], t_words[:, j]))
               for i in range(s_words.shape[1])]  # each student channel is one of the teacher's
    assert columns == sorted(set(columns))
    assert torch.equal(student.encoder.layer[-1].output.dense.bias, teacher.encoder.layer[-1].output.dense.bias[columns])


def test_a_calibration_sample_larger_than_the_corpus_is_refused(make_cfg):
    with pytest.raises(TinyKDError, match=r"student.prune_examples=100000 asks for more calibration examples than "
                                          r"there are: \d+\.") as e:
        run_stage(make_cfg("stage=general", "student.init=pruned", "debug=smoke", "student.prune_examples=100000"))
    assert "set student.prune_examples to at most" in e.value.fix


@pytest.mark.slow
@pytest.mark.parametrize("task, arch", [("sst2", "BertForSequenceClassification"),
                                        ("wnut17", "BertForTokenClassification"),
                                        ("squad", "BertForQuestionAnswering")])
def test_the_task_stage_prunes_the_finetuned_teacher(make_cfg, task, arch):
    """Every task family starts a pruned student from its fine-tuned teacher, scores it before training, and
    distils it with the kept layer map."""
    run_stage(make_cfg("stage=teacher", f"task={task}", "debug=smoke"))
    res = run_stage(make_cfg("stage=task", f"task={task}", "student.init=pruned", "distill.layer_map=kept",
                             "debug=smoke"))
    assert res["init_dev"] is not None and res["init_dev"].keys() == res["dev"].keys()
    config = json.loads((Path(res["export"]) / "config.json").read_text())
    assert config["architectures"] == [arch] and config["hidden_size"] == 32
    card = (Path(res["export"]) / "README.md").read_text()
    assert "pruned to the student's shape" in card


@pytest.mark.parametrize("overrides, match", [
    (("student=bilstm", "student.init=pruned", "stage=task"), "student.arch=bilstm"),
    (("student=distilbert", "student.init=pruned", "stage=general"), "student.arch=distilbert"),
    (("distill=distilbert", "student.general_init=pruned", "stage=general"), "distill=distilbert"),
    (("distill.layer_map=kept", "stage=task"), r"this student is not pruned here \(student.init=general\)"),
])
def test_impossible_combinations_are_refused_at_start_up(make_cfg, overrides, match):
    from tinykd import config

    with pytest.raises(TinyKDError, match=match):
        config.check(make_cfg(*overrides, "task=sst2", "debug=smoke"))


def test_the_kept_layer_map_follows_the_pruned_layers(make_cfg):
    from tinykd import build, config

    cfg = make_cfg("stage=task", "task=sst2", "student.init=pruned", "distill.layer_map=kept", "debug=smoke")
    config.check(cfg)
    found = build.matches(cfg, 4, 2, kept=[1, 3])
    assert sorted({(m.student_layer, m.teacher_layer) for m in found if m.feature == "hidden"}) == [(1, 1), (2, 3)]
