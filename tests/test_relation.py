"""MiniLMv2's self-attention relation distillation (`distill=minilm`).

Unit tier: `losses.relation_kl` against softmaxes and KL divergences written out by hand (plain
`math`, no torch), padding, widths and head counts that differ; the rule that layer l's queries,
keys and values are its own projections of hidden_states[l-1], checked against forward hooks on
tiny random models. The distiller built from the config on a tiny teacher and a narrower student
with other head counts. Stage tier: `distill=minilm` through the general and the task stage on smoke.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from conftest import run_stage
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from tinykd import build, config, losses, modelcard, models
from tinykd.distiller import Distiller, RelationMatch, layer_outputs, qkv_projections
from tinykd.errors import TinyKDError


# ----------------------------------------------------------------------------- by hand


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def relations_by_hand(rows: list[list[float]], heads: int) -> list[list[list[float]]]:
    """rows: one vector per (real) token. For each relation head a: row i is softmax_j(a_i · a_j / √d)."""
    d = len(rows[0]) // heads
    out = []
    for a in range(heads):
        part = [r[a * d:(a + 1) * d] for r in rows]
        head = []
        for q in part:
            e = [math.exp(sum(x * y for x, y in zip(q, k)) / math.sqrt(d)) for k in part]
            head.append([x / sum(e) for x in e])
        out.append(head)
    return out


def kl_by_hand(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def loss_by_hand(student: list[list[list[float]]], teacher: list[list[list[float]]], heads: int) -> float:
    """A batch of sequences, each its real tokens only: Σ over sequences, heads and query rows of
    KL(teacher row ‖ student row), over heads × the batch's real tokens."""
    total, rows = 0.0, 0
    for s, t in zip(student, teacher):
        rs, rt = relations_by_hand(s, heads), relations_by_hand(t, heads)
        total += sum(kl_by_hand(rt[a][i], rs[a][i]) for a in range(heads) for i in range(len(s)))
        rows += len(s)
    return total / (heads * rows)


def tensor(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# ----------------------------------------------------------------------------- the loss


def test_one_head_by_hand():
    """Teacher rows [1, 0], [0, 1]; student rows [1, 1], [1, 0]; D = 2, one head (d = 2), a = 1/√2.
    Teacher: row 0 softmax([a, 0]) = [σ(a), σ(−a)]; row 1 softmax([0, a]) = [σ(−a), σ(a)].
    Student: row 0 softmax([2a, a]) = [σ(a), σ(−a)] (the same: KL 0); row 1 softmax([a, a]) = [½, ½].
    Loss = (0 + σ(−a)·log 2σ(−a) + σ(a)·log 2σ(a)) / 2 rows."""
    a = 1 / math.sqrt(2)
    expected = (sigmoid(-a) * math.log(2 * sigmoid(-a)) + sigmoid(a) * math.log(2 * sigmoid(a))) / 2
    teacher, student = tensor([[[1, 0], [0, 1]]]), tensor([[[1, 1], [1, 0]]])
    for mask in (None, torch.tensor([[1, 1]])):
        assert losses.relation_kl(student, teacher, mask, heads=1).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(loss_by_hand([[[1, 1], [1, 0]]], [[[1, 0], [0, 1]]], 1), rel=1e-12)


def test_two_heads_by_hand():
    """The same teacher split into R = 2 heads of width 1: head 0 sees [1], [0] -> scores [[1, 0], [0, 0]],
    head 1 sees [0], [1] -> [[0, 0], [0, 1]]. A zero student is uniform everywhere, so each row's KL is
    Σ p·log 2p: h = σ(1)·log 2σ(1) + σ(−1)·log 2σ(−1) for head 0 row 0 and head 1 row 1, 0 for the two
    uniform rows; the mean over 2 heads × 2 rows is h/2."""
    h = sigmoid(1) * math.log(2 * sigmoid(1)) + sigmoid(-1) * math.log(2 * sigmoid(-1))
    loss = losses.relation_kl(tensor([[[0, 0], [0, 0]]]), tensor([[[1, 0], [0, 1]]]), None, heads=2)
    assert loss.item() == pytest.approx(h / 2, rel=1e-6)
    # one head of width 2 sees another relation: the head split matters
    assert losses.relation_kl(tensor([[[0, 0], [0, 0]]]), tensor([[[1, 0], [0, 1]]]), None, heads=1).item() \
        != pytest.approx(h / 2, rel=1e-3)


S3 = [[0.5, -1.0, 2.0, 0.0], [1.0, 0.5, -0.5, 1.5], [0.0, 2.0, 1.0, -1.0]]
T3 = [[1.0, 0.0, 0.5, -0.5, 2.0, 1.0], [0.0, 1.5, -1.0, 0.5, 0.0, 0.5], [2.0, -0.5, 0.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("heads", [1, 2])
def test_different_widths_and_a_padded_position_by_hand(heads):
    """Student 4 wide, teacher 6 wide (R = 1 or 2 divides both). Two sequences of 3 tokens, the second's
    last token padding: the mean runs over the batch's 5 real query rows, each a softmax over its own
    sequence's real keys."""
    student = tensor([S3, [S3[2], S3[0], [9.0, -9.0, 9.0, 9.0]]])
    teacher = tensor([T3, [T3[1], T3[2], [-7.0, 7.0, 7.0, 0.0, 3.0, 1.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = loss_by_hand([S3, [S3[2], S3[0]]], [T3, [T3[1], T3[2]]], heads)
    loss = losses.relation_kl(student, teacher, mask, heads)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # not the mean of the two sequences' means: the padded row is out of the mean, not a zero in it
    per_sequence = (loss_by_hand([S3], [T3], heads) + loss_by_hand([[S3[2], S3[0]]], [[T3[1], T3[2]]], heads)) / 2
    assert expected != pytest.approx(per_sequence, rel=1e-3)
    # the padded token's values, as a query or as a key, change nothing, and give no NaN however large
    for big in (1e4, -1e4):
        s, t = student.clone(), teacher.clone()
        s[1, 2], t[1, 2] = big, -big
        assert losses.relation_kl(s, t, mask, heads).item() == pytest.approx(expected, rel=1e-6)
    # without a mask every position counts: the 3-token rows of the second sequence by hand
    everything = loss_by_hand([student[0].tolist(), student[1].tolist()], [teacher[0].tolist(), teacher[1].tolist()],
                              heads)
    assert losses.relation_kl(student, teacher, None, heads).item() == pytest.approx(everything, rel=1e-5)


def test_padding_gets_no_gradient_and_no_nan():
    student = tensor([S3, [S3[2], S3[0], [9.0, -9.0, 9.0, 9.0]]]).requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    losses.relation_kl(student, tensor([T3, T3]), mask, 2).backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[1, 2].abs().sum() == 0 and student.grad[1, :2].abs().sum() > 0


def test_identical_relations_give_zero_and_the_loss_is_never_negative():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert losses.relation_kl(x, x, mask, 4).item() == pytest.approx(0.0, abs=1e-7)
    for seed in range(5):
        g.manual_seed(seed)
        s, t = torch.randn(2, 5, 8, generator=g) * 3, torch.randn(2, 5, 12, generator=g) * 3
        assert losses.relation_kl(s, t, mask, 4).item() >= 0
        assert losses.relation_kl(s, t, None, 2).item() >= 0


def test_heads_must_divide_both_widths():
    with pytest.raises(ValueError, match="student's width 4"):
        losses.relation_kl(torch.zeros(1, 2, 4), torch.zeros(1, 2, 6), None, heads=3)


def test_computed_in_fp32_under_autocast():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 4, 8, generator=g), torch.randn(2, 4, 8, generator=g)
    fp32 = losses.relation_kl(s, t, None, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = losses.relation_kl(s, t, None, 2)
    assert under.dtype == torch.float32 and under.item() == pytest.approx(fp32.item(), rel=1e-6)


def test_attention_relations_sums_the_relations_named():
    g = torch.Generator().manual_seed(2)
    s = {a: torch.randn(1, 3, 4, generator=g) for a in "qkv"}
    t = {a: torch.randn(1, 3, 6, generator=g) for a in "qkv"}
    total, parts = losses.attention_relations(s, t, None, 2)
    assert set(parts) == {"qq", "kk", "vv"}
    for r in ("qq", "kk", "vv"):
        assert parts[r].item() == pytest.approx(losses.relation_kl(s[r[0]], t[r[0]], None, 2).item())
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-6)
    total, parts = losses.attention_relations({"v": s["v"]}, {"v": t["v"]}, None, 2, ("vv",))
    assert set(parts) == {"vv"}
    with pytest.raises(ValueError, match="unknown relation"):
        losses.attention_relations(s, t, None, 2, ("qk",))


# ----------------------------------------------------------------------------- queries, keys, values


def tiny(model_type: str, head: bool = False, **extra):
    torch.manual_seed(0)
    if model_type == "distilbert":
        kw = dict(vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=48, max_position_embeddings=32)
    else:
        kw = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=32)
    cfg = AutoConfig.for_model(model_type, **(kw | extra))
    return (AutoModelForSequenceClassification if head else AutoModel).from_config(cfg)


def hooked_qkv(model, projections: dict, batch: dict):
    """One forward of `model` in train mode (dropout on) with hooks on the given projections: what each
    returned inside the layer, and the model's output."""
    seen = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, key=key: seen.__setitem__(key, out.detach()))
               for key, m in projections.items()]
    try:
        out = model(**batch, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return seen, out


BATCH = {"input_ids": torch.tensor([[5, 17, 42, 9, 3], [7, 8, 60, 0, 0]]),
         "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}


@pytest.mark.parametrize("model_type,head,extra", [
    ("bert", False, {}), ("bert", True, {}), ("distilbert", False, {}), ("distilbert", True, {}),
    ("roberta", False, {}), ("xlm-roberta", False, {}), ("camembert", False, {}),
    ("electra", False, {"embedding_size": 16}),  # ELECTRA projects its embeddings first
])
def test_each_layer_attends_with_its_projections_of_the_previous_hidden_states(model_type, head, extra):
    model = tiny(model_type, head, hidden_dropout_prob=0.1) if model_type != "distilbert" else tiny(
        model_type, head, dropout=0.1)
    model.train()
    projections = {(layer, i): m for layer in (1, 2, 3) for i, m in enumerate(qkv_projections(model, layer))}
    assert all(isinstance(m, torch.nn.Linear) for m in projections.values())
    seen, out = hooked_qkv(model, projections, BATCH)
    with torch.no_grad():
        for (layer, i), m in projections.items():
            torch.testing.assert_close(m(out.hidden_states[layer - 1]), seen[layer, i], rtol=0, atol=0)


def test_a_pre_layernorm_encoder_is_refused_by_name():
    """RoBERTa-PreLayerNorm shares BERT's module names, but its layers normalise their input before the
    projections: the rule would read the wrong vectors, so it is refused."""
    model = tiny("roberta-prelayernorm").train()
    self_attention = model.encoder.layer[0].attention.self
    seen, out = hooked_qkv(model, {"q": self_attention.query}, BATCH)
    with torch.no_grad():
        assert not torch.allclose(self_attention.query(out.hidden_states[0]), seen["q"])
    with pytest.raises(TinyKDError) as e:
        qkv_projections(model, 1, "teacher")
    assert "roberta-prelayernorm" in e.value.problem and "teacher" in e.value.problem
    assert "distill.weights.relation=0" in e.value.fix


# ----------------------------------------------------------------------------- the distiller


def teacher_and_student():
    """A frozen 3-layer, 64-wide, 4-head BERT teacher and a 2-layer, 48-wide, 6-head BERT student."""
    torch.manual_seed(0)
    tc = AutoConfig.for_model("bert", vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=96, max_position_embeddings=32, initializer_range=0.3)
    teacher = models.freeze(AutoModel.from_config(tc))
    sc = models.student_config(tc, num_layers=2, hidden_size=48, num_heads=6, intermediate_size=64, dropout=0.0)
    return teacher, models.random_student(sc, seed=1)


def distil(cfg, teacher, student):
    d = build.distiller(cfg, student, teacher)
    with torch.no_grad():
        t_out = layer_outputs(teacher, BATCH, d.needs_attentions)
    s_out = layer_outputs(student, BATCH, d.needs_attentions)
    total, parts = d(s_out, t_out, BATCH["attention_mask"])
    return d, total, parts


def test_the_distiller_trains_the_students_last_layer_and_holds_no_teacher(make_cfg):
    teacher, student = teacher_and_student()
    d, total, parts = distil(make_cfg("stage=general", "distill=minilm", "debug=smoke"), teacher, student)
    assert d.relation == RelationMatch(teacher_layer=3, student_layer=2, heads=4, relations=("qq", "kk", "vv"),
                                       weight=1.0)
    assert set(parts) == {"relation/qq", "relation/kk", "relation/vv"} and d.matches == []
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-6) and total.item() > 0
    total.backward()
    last = student.encoder.layer[-1].attention.self
    assert all(p.weight.grad.abs().sum() > 0 for p in (last.query, last.key, last.value))
    assert all(p.grad is None for p in teacher.parameters())
    # no W_e/W_h without a match that uses them; the projections read are neither parameters nor state
    assert list(d.parameters()) == [] and d.state_dict() == {}
    trainable = torch.nn.ModuleDict({"student": student, "distiller": d})
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in trainable.parameters()}


def test_the_relation_part_is_the_loss_of_the_hooked_vectors(make_cfg):
    """relation_layer=2, relations [qq]: the logged part equals relation_kl of what teacher layer 2's and
    the student's last layer's query projections returned inside their forward passes."""
    teacher, student = teacher_and_student()
    t_q, s_q = teacher.encoder.layer[1].attention.self.query, student.encoder.layer[1].attention.self.query
    t_seen, _ = hooked_qkv(teacher, {"q": t_q}, BATCH)
    s_seen, _ = hooked_qkv(student, {"q": s_q}, BATCH)
    cfg = make_cfg("stage=general", "distill=minilm", "debug=smoke", "distill.relation_layer=2",
                   "distill.relations=[qq]", "distill.relation_heads=2", "distill.weights.relation=3")
    d, total, parts = distil(cfg, teacher, student)
    expected = losses.relation_kl(s_seen["q"], t_seen["q"], BATCH["attention_mask"], 2).item()
    assert set(parts) == {"relation/qq"}
    assert parts["relation/qq"].item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(3 * expected, rel=1e-6)


def test_with_the_tinybert_losses(make_cfg):
    teacher, student = teacher_and_student()
    cfg = make_cfg("stage=general", "distill=minilm", "debug=smoke", "distill.weights.hidden=1")
    d, total, parts = distil(cfg, teacher, student)
    assert set(parts) == {"hidden/1", "hidden/2", "relation/qq", "relation/kk", "relation/vv"}
    assert isinstance(d.hidden_proj, torch.nn.Linear)
    assert total.item() == pytest.approx(sum(p.item() for p in parts.values()), rel=1e-5)


def test_a_distilbert_student(make_cfg):
    teacher, _ = teacher_and_student()
    student = models.random_student(models.distilbert_config(teacher.config, num_layers=2, dropout=0.0), seed=1)
    d, total, parts = distil(make_cfg("stage=general", "distill=minilm", "debug=smoke"), teacher, student)
    total.backward()
    assert student.transformer.layer[-1].attention.q_lin.weight.grad.abs().sum() > 0


def test_relation_heads_that_do_not_divide_a_width_are_refused(make_cfg):
    teacher, student = teacher_and_student()
    with pytest.raises(TinyKDError) as e:
        build.distiller(make_cfg("stage=general", "distill=minilm", "distill.relation_heads=5"), student=student,
                        teacher=teacher)
    assert "64" in e.value.problem and "48" in e.value.problem
    assert e.value.fix == "set distill.relation_heads to one of 1, 2, 4, 8, 16 (each divides both)."


def test_a_teacher_layer_out_of_range_is_refused(make_cfg):
    teacher, student = teacher_and_student()
    with pytest.raises(TinyKDError) as e:
        build.distiller(make_cfg("stage=general", "distill=minilm", "distill.relation_layer=4"), student, teacher)
    assert "distill.relation_layer=4" in e.value.problem and "1..3" in e.value.problem
    with pytest.raises(TinyKDError, match=r"distill.relation_layer=0 is out of range"):
        config.check(make_cfg("stage=general", "distill.relation_layer=0"))


def test_the_options_are_checked_and_read_where_they_act(make_cfg):
    overrides = ("stage=general", "distill=minilm", "distill.relations=[qq,vv]", "distill.relation_heads=2",
                 "distill.relation_layer=1", "distill.weights.relation=2")
    config.check(make_cfg(*overrides), overrides)  # the general stage reads every one of them
    with pytest.raises(TinyKDError, match="'qv' is not one of: qq, kk, vv"):
        config.check(make_cfg("stage=general", "distill.relations=[qq,qv]"))
    with pytest.raises(TinyKDError, match="distill.weights.relation"):  # the teacher stage never reads it
        config.check(make_cfg("stage=teacher", "distill.weights.relation=1"), ("distill.weights.relation=1",))


def test_no_relation_by_default(make_cfg):
    teacher, student = teacher_and_student()
    d = build.distiller(make_cfg("stage=general", "debug=smoke", "distill.attention_heads=mean"), student, teacher)
    assert d.relation is None
    with pytest.raises(ValueError, match="relation_projections"):
        Distiller([], 48, 64, relation=RelationMatch(3, 2, 4, ("qq",), 1.0))


# ----------------------------------------------------------------------------- the stages


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


RELATION_PARTS = {"loss/relation/qq", "loss/relation/kk", "loss/relation/vv"}


def test_general_stage_with_minilm_logs_the_relation_parts(make_cfg):
    res = run_stage(make_cfg("stage=general", "distill=minilm", "debug=smoke"))
    run_dir = Path(res["run_dir"])
    records = read_metrics(run_dir)
    assert {k for r in records for k in r if k.startswith("loss/")} == RELATION_PARTS
    assert all(math.isfinite(r[k]) and r[k] > 0 for r in records for k in RELATION_PARTS & set(r))
    assert records[-1]["loss"] < records[0]["loss"]
    # nothing of the distiller's in the checkpoint (no projection is needed), nothing of the teacher's
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert {k.split(".")[0] for k in ckpt["model"]} == {"student"}
    assert json.loads((run_dir / "student" / "config.json").read_text())["architectures"] == ["BertModel"]


@pytest.mark.slow  # the command line's own start-up on top of the stage (~20 s on 2 cores)
def test_general_stage_with_minilm_from_the_command_line(cli, tmp_path):
    t0 = time.perf_counter()
    proc = cli("stage=general", "distill=minilm", "debug=smoke", f"runs.general={tmp_path / 'general'}")
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"stage=general distill=minilm debug=smoke: {seconds:.1f} s")
    assert "attention relations qq, kk, vv (KL, 4 relation heads): teacher layer 4 -> student layer 2" in proc.stdout
    records = read_metrics(tmp_path / "general")
    assert {k for r in records for k in r if k.startswith("loss/")} == RELATION_PARTS
    assert (tmp_path / "general" / "student" / "config.json").is_file()


@pytest.mark.slow  # a teacher stage first, then task distillation with its model card (~20 s on 2 cores)
def test_task_stage_with_minilm(make_cfg):
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    res = run_stage(make_cfg("stage=task", "task=sst2", "distill=minilm", "debug=smoke", "student.init=random"))
    records = read_metrics(Path(res["run_dir"]))
    intermediate = {k for r in records if r.get("phase") == "intermediate" for k in r if k.startswith("loss/")}
    assert intermediate == RELATION_PARTS
    card = (Path(res["export"]) / modelcard.CARD).read_text()
    assert "MiniLMv2 attention relations qq/kk/vv, teacher layer last" in card
    assert "hidden states" not in card
