"""Your own teacher: fine-tuned classifiers of other architectures, their classes matched to the
task's by name, and which architectures' attention tinykd can capture.

Every teacher is a tiny random `AutoModelForSequenceClassification` built from its config
(2-3 layers, hidden 64, 4 heads); the student is a BERT of width 48, so every hidden-state and
embedding loss goes through the distiller's projections. Weights are initialised with a large
range so that attention is far from uniform.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    DebertaV2Tokenizer,
    RobertaTokenizer,
)

from tinykd import attention, losses, models, teachers
from tinykd.choices import SINGLE_LABEL
from tinykd.distiller import Distiller, check_attention_capture, check_compatible, layer_outputs, use_attention_target
from tinykd.errors import TinyKDError
from tinykd.layermap import resolve_matches

WIDTH, HEADS, VOCAB, LAYERS = 64, 4, 300, 3
# model_type -> (extra config, whether its tokenizer emits token_type_ids)
ARCHS = {
    # type_vocab_size=1 as in roberta-base's and xlm-roberta-base's config.json (the class default is 2)
    "roberta": ({"type_vocab_size": 1}, False),
    "xlm-roberta": ({"type_vocab_size": 1}, False),
    # embedding_size differs from hidden_size: ELECTRA projects its embeddings before layer 1
    "electra": ({"embedding_size": 32}, True),
    "deberta-v2": ({}, True),  # type_vocab_size=0: no segment embeddings, but its tokenizer emits 0/1
    "mpnet": ({}, False),
}
CAPTURED = ["bert", "roberta", "xlm-roberta", "electra"]
NOT_CAPTURED = ["deberta-v2", "mpnet"]
LABELS = ("contradiction", "entailment", "neutral")


def teacher(model_type: str, num_labels: int = 3, **extra):
    torch.manual_seed(0)
    kw = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              intermediate_size=96, max_position_embeddings=80, initializer_range=0.3, num_labels=num_labels)
    cfg = AutoConfig.for_model(model_type, **(kw | ARCHS.get(model_type, ({}, True))[0] | extra))
    return models.freeze(AutoModelForSequenceClassification.from_config(cfg))


def student_for(tc, hidden: int = 48, heads: int = HEADS):
    cfg = models.student_config(tc, num_layers=2, hidden_size=hidden, num_heads=heads, intermediate_size=64,
                                dropout=0.0, num_labels=3, label_names=LABELS)
    return models.random_student(cfg, seed=1, head="classifier")


def batch(tc, segments: bool) -> dict:
    """Two sequences, the second padded with the teacher's pad id; token_type_ids only when the
    teacher's tokenizer emits them (as a pair: segment 1 after the first four tokens)."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (2, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[mask == 0] = tc.pad_token_id
    out = {"input_ids": ids, "attention_mask": mask}
    if segments:
        out["token_type_ids"] = (torch.arange(8) >= 4).long().expand(2, 8) * mask
    return out


# ----------------------------------------------------------------------------- a fine-tuned classifier


def test_is_finetuned_classifier_reads_the_saved_config(tmp_path):
    t = teacher("roberta")
    t.save_pretrained(tmp_path / "clf")  # writes architectures: ["RobertaForSequenceClassification"]
    cfg = AutoConfig.from_pretrained(tmp_path / "clf")
    assert teachers.is_finetuned_classifier(cfg, 3)
    assert not teachers.is_finetuned_classifier(cfg, 2)  # a head for another label set
    AutoModel.from_config(t.config).save_pretrained(tmp_path / "encoder")
    assert not teachers.is_finetuned_classifier(AutoConfig.from_pretrained(tmp_path / "encoder"), 3)
    assert not teachers.is_finetuned_classifier(AutoConfig.for_model("bert", num_labels=3), 3)  # no architectures


# ----------------------------------------------------------------------------- labels by name


def test_label_permutation_none_when_the_order_agrees_or_names_are_generic():
    assert teachers.label_permutation({0: " Contradiction", 1: "ENTAILMENT ", 2: "neutral"}, LABELS, source="t") is None
    assert teachers.label_permutation({"2": "LABEL_2", "0": "LABEL_0", "1": "LABEL_1"}, LABELS, source="t") is None
    assert teachers.label_permutation({0: "LABEL_0"}, None, source="t") is None  # regression


def test_label_permutation_matches_by_name():
    # roberta-large-mnli's order, with JSON's string keys, against tinykd's MNLI order
    id2label = {"1": "NEUTRAL", "0": "CONTRADICTION", "2": "ENTAILMENT"}
    perm = teachers.label_permutation(id2label, LABELS, source="t")
    assert perm == [0, 2, 1]
    assert [id2label[str(p)].lower() for p in perm] == list(LABELS)
    assert teachers.label_permutation({0: "positive", 1: "negative"}, ("negative", "positive"), source="t") == [1, 0]


def test_label_permutation_refuses_another_number_of_classes():
    with pytest.raises(TinyKDError) as e:
        teachers.label_permutation({0: "negative", 1: "positive"}, LABELS, source="/models/sst2")
    assert "/models/sst2" in e.value.problem and "2 classes" in e.value.problem and "3" in e.value.problem
    assert "'negative'" in e.value.problem and "'neutral'" in e.value.problem
    assert "task.labels" in e.value.fix and "fine-tuned on this task" in e.value.fix
    with pytest.raises(TinyKDError):
        teachers.label_permutation({0: "LABEL_0", 1: "LABEL_1"}, None, source="t")  # a classifier for regression


def test_label_permutation_refuses_other_names_and_lists_both_sides():
    with pytest.raises(TinyKDError) as e:
        teachers.label_permutation({0: "neg", 1: "positive"}, ("negative", "positive"), source="/m")
    p = e.value.problem
    assert "/m" in p and "lacks ['negative']" in p and "lacks ['neg']" in p
    assert "task.labels" in e.value.fix and "id2label" in e.value.fix and "allow_weak_teacher" in e.value.fix
    with pytest.raises(TinyKDError) as e:
        teachers.label_permutation({0: "Yes", 1: "yes "}, ("yes", "no"), source="/m")
    assert "same name" in e.value.problem


@pytest.mark.parametrize("model_type, layer", [("bert", "classifier"), ("roberta", "classifier.out_proj"),
                                                ("electra", "classifier.out_proj"), ("deberta-v2", "classifier"),
                                                ("mpnet", "classifier.out_proj")])
def test_output_layer_is_the_heads_last_projection(model_type, layer):
    t = teacher(model_type)
    assert teachers.output_layer(t) is t.get_submodule(layer)


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_reorder_classifier_permutes_the_logits_exactly(model_type):
    t = teacher(model_type, id2label={0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    b = batch(t.config, segments=False)
    with torch.no_grad():
        before = t(**b).logits
    perm = teachers.align_labels(t, LABELS, source="t")
    assert perm == [0, 2, 1]
    with torch.no_grad():
        after = t(**b).logits
    assert torch.equal(after, before[:, perm])
    assert not torch.equal(after, before)
    assert t.config.id2label == {0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"}
    assert t.config.label2id == {"CONTRADICTION": 0, "ENTAILMENT": 1, "NEUTRAL": 2}
    assert teachers.align_labels(t, LABELS, source="t") is None  # now in the task's order


def test_reorder_classifier_refuses_a_model_without_a_classifier():
    with pytest.raises(TinyKDError) as e:
        teachers.reorder_classifier(AutoModel.from_config(teacher("bert", num_labels=2).config), [1, 0])
    assert "no classifier output layer" in e.value.problem


# ----------------------------------------------------------------------------- attention capture


@pytest.mark.parametrize("model_type", CAPTURED)
def test_attention_is_captured_for_dispatching_architectures(model_type):
    t = teacher(model_type)
    impl = t.config._attn_implementation
    assert teachers.attention_capture_problem(t) is None
    # every layer's self-attention called the recording function, once each
    seen = attention.dispatching_modules(t)
    assert seen == [layer.attention.self for layer in t.base_model.encoder.layer]
    # the probe puts the model back as it was
    assert t.config._attn_implementation == impl and not t.training
    s = student_for(t.config)
    s.train()
    assert teachers.attention_capture_problem(s) is None and s.training and s.bert.encoder.layer[0].training


@pytest.mark.parametrize("model_type", NOT_CAPTURED)
def test_attention_capture_refused_where_attention_does_not_dispatch(model_type):
    t = teacher(model_type)
    problem = teachers.attention_capture_problem(t)
    assert problem and type(t).__name__ in problem and f"0 of its {LAYERS} layers" in problem
    # what would otherwise happen silently: the implementation stays eager and the "scores" are probabilities
    use_attention_target(t, "scores")
    assert t.config._attn_implementation == "eager"
    out = layer_outputs(t, batch(t.config, segments=False), need_attentions=True)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, HEADS, 8))

    found = resolve_matches("uniform", LAYERS, 2, {"embedding": 1.0, "attention": 1.0, "hidden": 1.0})
    with pytest.raises(TinyKDError) as e:
        check_attention_capture(t, found, "teacher")
    assert "teacher's attention maps" in e.value.problem and type(t).__name__ in e.value.problem
    assert "distill.weights.attention=0" in e.value.fix
    check_attention_capture(t, [m for m in found if m.feature != "attention"], "teacher")  # no attention match: fine


@torch.no_grad()
def test_roberta_scores_are_q_k_over_sqrt_d():
    t = teacher("roberta")
    use_attention_target(t, "scores")
    b = batch(t.config, segments=False)
    out = layer_outputs(t, b, need_attentions=True)
    d = WIDTH // HEADS
    for i, layer in enumerate(t.roberta.encoder.layer):
        h = out.hidden_states[i]
        q = layer.attention.self.query(h).view(2, 8, HEADS, d).transpose(1, 2)
        k = layer.attention.self.key(h).view(2, 8, HEADS, d).transpose(1, 2)
        manual = q @ k.transpose(-1, -2) / d**0.5
        torch.testing.assert_close(out.attentions[i], manual, rtol=1e-5, atol=1e-5)
        assert manual.abs().max() > 0.5


# ----------------------------------------------------------------------------- distilling from each architecture


@pytest.mark.parametrize("model_type", list(ARCHS))
def test_student_config_follows_the_teacher(model_type):
    t = teacher(model_type)
    tc, sc = t.config, student_for(t.config).config
    assert sc.model_type == "bert"
    assert (sc.vocab_size, sc.max_position_embeddings, sc.pad_token_id) == \
        (tc.vocab_size, tc.max_position_embeddings, tc.pad_token_id)
    assert sc.hidden_size == 48 and sc.num_labels == 3
    # segment types: the teacher's when it has segment embeddings, else 2 (its tokenizer may emit 0/1)
    assert sc.type_vocab_size == {"roberta": 1, "xlm-roberta": 1, "electra": 2, "deberta-v2": 2, "mpnet": 2}[model_type]


def test_students_embed_what_the_teachers_tokenizers_return():
    """RoBERTa's tokenizer returns no token_type_ids; DeBERTa-v2's (a teacher without segment
    embeddings) returns segment 1 for a pair's second text. Both students take them."""
    vocab = {w: i for i, w in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "a", "b", "c"])}
    rob = RobertaTokenizer(vocab=vocab, merges=[])
    enc = rob(["a b", "c"], ["c", "a b c"], padding=True, return_tensors="pt")
    assert "token_type_ids" not in enc
    deb = DebertaV2Tokenizer(vocab=[(w, 0.0) for w in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁a", "▁b"]])
    enc2 = deb(["a b", "b"], ["a", "a b"], padding=True, return_tensors="pt")
    assert enc2["token_type_ids"].max() == 1
    for model_type, enc in (("roberta", enc), ("deberta-v2", enc2)):
        t = teacher(model_type)
        s = student_for(t.config)
        with torch.no_grad():
            assert torch.isfinite(layer_outputs(t, dict(enc), False).logits).all()
            out = layer_outputs(s, dict(enc), False)
        assert torch.isfinite(out.logits).all() and len(out.hidden_states) == 3


def distill_once(t, s, segments: bool, weights: dict, heads: str):
    """One TinyBERT intermediate-layer loss and one prediction-layer loss, as the task stage computes them."""
    found = resolve_matches("uniform", LAYERS, 2, weights)
    check_compatible(s.config, t.config, found, heads, "scores")
    for m, role in ((t, "teacher"), (s, "student")):
        check_attention_capture(m, found, role)
        use_attention_target(m, "scores")
    attention.capture_layers(t, [m.teacher_layer for m in found if m.feature == "attention"])
    attention.capture_layers(s, [m.student_layer for m in found if m.feature == "attention"])
    d = Distiller(found, s.config.hidden_size, t.config.hidden_size, heads)
    b = batch(t.config, segments)
    with torch.no_grad():
        t_out = layer_outputs(t, b, d.needs_attentions)
    s_out = layer_outputs(s, b, d.needs_attentions)
    assert len(t_out.hidden_states) == LAYERS + 1 and len(s_out.hidden_states) == 3
    assert {h.size(-1) for h in t_out.hidden_states} == {WIDTH}  # ELECTRA: embedding_size 32, projected first
    total, parts = d(s_out, t_out, b["attention_mask"])
    pred = losses.prediction_loss(s_out.logits, t_out.logits, "soft_ce", 1.0, SINGLE_LABEL)
    return found, d, total, parts, pred


@pytest.mark.parametrize("model_type", list(ARCHS))
def test_hidden_and_embedding_distillation_through_projections(model_type):
    t = teacher(model_type)
    s = student_for(t.config)
    found, d, total, parts, pred = distill_once(t, s, ARCHS[model_type][1], {"embedding": 1.0, "hidden": 1.0},
                                                "match")
    assert isinstance(d.embedding_proj, torch.nn.Linear) and d.embedding_proj.out_features == WIDTH
    assert set(parts) == {"embedding/0", "hidden/1", "hidden/2"}
    assert torch.isfinite(total) and total > 0 and torch.isfinite(pred)
    (total + pred).backward()
    assert d.hidden_proj.weight.grad.abs().sum() > 0 and d.embedding_proj.weight.grad.abs().sum() > 0
    assert s.classifier.weight.grad.abs().sum() > 0  # the logit loss reaches the student's head
    assert all(p.grad is None for p in t.parameters())


@pytest.mark.parametrize("model_type", [a for a in CAPTURED if a != "bert"])
@pytest.mark.parametrize("student_heads, heads", [(HEADS, "match"), (3, "mean")])
def test_attention_distillation_from_captured_architectures(model_type, student_heads, heads):
    t = teacher(model_type)
    s = student_for(t.config, heads=student_heads)
    weights = {"embedding": 1.0, "attention": 1.0, "hidden": 1.0}
    if heads == "mean":  # unequal head counts need distill.attention_heads=mean
        with pytest.raises(TinyKDError, match="attention_heads=mean"):
            distill_once(t, s, ARCHS[model_type][1], weights, "match")
    found, d, total, parts, pred = distill_once(t, s, ARCHS[model_type][1], weights, heads)
    assert {"attention/1", "attention/2"} <= set(parts)
    assert all(torch.isfinite(v) for v in parts.values()) and parts["attention/1"] > 0
    total.backward()
    assert s.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("model_type", NOT_CAPTURED)
def test_attention_distillation_is_refused_for_the_others(model_type):
    t = teacher(model_type)
    s = student_for(t.config)
    with pytest.raises(TinyKDError) as e:
        distill_once(t, s, ARCHS[model_type][1], {"embedding": 1.0, "attention": 1.0, "hidden": 1.0}, "match")
    assert "distill.weights.attention=0" in e.value.fix


def test_an_embedding_output_of_another_width_is_refused_by_name():
    found = resolve_matches("uniform", 2, 2, {"embedding": 1.0})
    d = Distiller(found, 48, WIDTH)

    class Out:
        def __init__(self, widths):
            self.hidden_states = [torch.zeros(1, 3, w) for w in widths]

    with pytest.raises(TinyKDError) as e:
        d(Out([48, 48, 48]), Out([32, WIDTH, WIDTH]), None)
    assert "32 wide" in e.value.problem and "distill.weights.embedding=0" in e.value.fix
