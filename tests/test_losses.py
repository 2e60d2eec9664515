"""Losses and the distiller against values worked out by hand.

Every expected value below is plain arithmetic on the numbers in the test, written out
term by term, so a wrong mask, denominator, temperature or T² factor shows up as a
different number rather than as the same formula evaluated twice.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from tinykd.choices import REGRESSION, SINGLE_LABEL
from tinykd import losses
from tinykd.distiller import Distiller
from tinykd.layermap import LayerMatch, resolve_matches


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def close(value: torch.Tensor, expected: float) -> bool:
    return math.isclose(float(value), expected, rel_tol=1e-9, abs_tol=1e-12)


# ----------------------------------------------------------------------------- masked_mse

# (B=2, L=3, D=2); the last token of example 0 and the last two of example 1 are padding,
# and their values are far off so that counting them would change the result a lot.
S = [[[1, 2], [3, 4], [9, 9]],
     [[0, 1], [7, 7], [7, 7]]]
T = [[[0, 0], [1, 1], [0, 0]],
     [[2, 2], [0, 0], [0, 0]]]
MASK = [[1, 1, 0],
        [1, 0, 0]]


def test_masked_mse_counts_real_tokens_only():
    # real tokens: (0,0): diffs 1,2; (0,1): 2,3; (1,0): -2,-1
    numerator = (1**2 + 2**2) + (2**2 + 3**2) + (2**2 + 1**2)  # 23
    denominator = 3 * 2  # 3 real tokens × width 2
    assert close(losses.masked_mse(t(S), t(T), t(MASK)), numerator / denominator)


def test_masked_mse_ignores_values_at_padded_positions():
    changed = [[[1, 2], [3, 4], [-100, 55]],
               [[0, 1], [1e6, 3], [0, 0]]]
    assert close(losses.masked_mse(t(changed), t(T), t(MASK)), 23 / 6)


def test_masked_mse_without_mask_is_mean_over_every_entry():
    real = 23
    padded = (9**2 + 9**2) + (7**2 + 7**2) + (7**2 + 7**2)  # 162 + 98 + 98
    assert close(losses.masked_mse(t(S), t(T), None), (real + padded) / (2 * 3 * 2))


def test_masked_mse_all_ones_mask_equals_plain_mean():
    ones = [[1, 1, 1], [1, 1, 1]]
    assert close(losses.masked_mse(t(S), t(T), t(ones)), float(losses.masked_mse(t(S), t(T), None)))
    assert close(losses.masked_mse(t(S), t(T), t(ones)), 381 / 12)


def test_masked_mse_accepts_integer_mask():
    assert close(losses.masked_mse(t(S), t(T), torch.tensor(MASK)), 23 / 6)


# ----------------------------------------------------------------------------- attention_mse


def test_attention_mse_counts_pairs_of_real_query_and_key():
    # (B=1, H=2, L=3, L=3); token 2 is padding, so its row and column (the 50s) are excluded.
    student = [[[[1, 2, 50], [3, 4, 50], [50, 50, 50]],
                [[0, 0, 50], [0, 2, 50], [50, 50, 50]]]]
    teacher = [[[[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                [[1, 1, 0], [1, 1, 0], [0, 0, 0]]]]
    mask = [[1, 1, 0]]
    head0 = 1**2 + 2**2 + 3**2 + 4**2  # 30
    head1 = 1**2 + 1**2 + 1**2 + 1**2  # 4
    pairs, heads = 2 * 2, 2
    assert close(losses.attention_mse(t(student), t(teacher), t(mask)), (head0 + head1) / (pairs * heads))


def test_attention_mse_denominator_is_pairs_over_batch_times_heads():
    # B=2, H=3, L=3. Example 0 differs by 1 everywhere, example 1 by 3.
    student = torch.cat([torch.full((1, 3, 3, 3), 1.0), torch.full((1, 3, 3, 3), 3.0)]).double()
    teacher = torch.zeros(2, 3, 3, 3, dtype=torch.float64)
    mask = [[1, 1, 0],   # 2 real tokens -> 4 pairs
            [1, 0, 0]]   # 1 real token  -> 1 pair
    numerator = 3 * (4 * 1**2 + 1 * 3**2)  # 3 heads × (4 pairs·1 + 1 pair·9) = 39
    denominator = (4 + 1) * 3  # 15
    assert close(losses.attention_mse(student, teacher, t(mask)), numerator / denominator)


def test_attention_mse_without_mask_is_plain_mean():
    student = [[[[1, 2], [3, 4]]]]
    teacher = [[[[0, 0], [0, 0]]]]
    assert close(losses.attention_mse(t(student), t(teacher), None), (1 + 4 + 9 + 16) / 4)


def test_attention_mse_mean_heads_allows_different_head_counts():
    # student 2 heads -> mean [[2,4],[6,8]]; teacher 4 constant heads 1,2,3,6 -> mean 3
    student = [[[[1, 3], [5, 7]], [[3, 5], [7, 9]]]]
    teacher = [[[[c, c], [c, c]] for c in (1, 2, 3, 6)]]
    # diffs [[-1, 1], [3, 5]]
    assert close(losses.attention_mse(t(student), t(teacher), None, heads="mean"), (1 + 1 + 9 + 25) / 4)
    # with token 1 padded only the (0,0) pair counts; H is 1 after averaging
    assert close(losses.attention_mse(t(student), t(teacher), t([[1, 0]]), heads="mean"), 1 / (1 * 1))


def test_attention_mse_shape_mismatch_raises():
    student = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="attention shapes differ"):
        losses.attention_mse(student, torch.zeros(1, 4, 3, 3), None)
    with pytest.raises(ValueError, match="attention shapes differ"):
        losses.attention_mse(student, torch.zeros(1, 2, 4, 4), None, heads="match")


# ----------------------------------------------------------------------------- prediction losses

# Logits chosen so that the softmaxes have closed forms:
#   softmax([0, 0]) = [1/2, 1/2]; softmax([0, ln 3]) = [1/4, 3/4]; softmax([ln 3, 0]) = [3/4, 1/4];
#   at T=2 the ln 3 becomes ln √3, e.g. softmax([0, ln √3]) = [1/(1+√3), √3/(1+√3)].
LN3 = math.log(3)
R3 = math.sqrt(3)
STUDENT = [[0.0, LN3], [0.0, LN3]]
TEACHER = [[0.0, 0.0], [LN3, 0.0]]


def test_soft_cross_entropy_t1():
    ex0 = -(1 / 2 * math.log(1 / 4) + 1 / 2 * math.log(3 / 4))
    ex1 = -(3 / 4 * math.log(1 / 4) + 1 / 4 * math.log(3 / 4))
    assert close(losses.soft_cross_entropy(t(STUDENT), t(TEACHER), 1.0), (ex0 + ex1) / 2)


def test_soft_cross_entropy_t2_has_no_t_squared_factor():
    s = [1 / (1 + R3), R3 / (1 + R3)]  # student at T=2 (both rows)
    ex0 = -(1 / 2 * math.log(s[0]) + 1 / 2 * math.log(s[1]))
    ex1 = -(R3 / (1 + R3) * math.log(s[0]) + 1 / (1 + R3) * math.log(s[1]))
    assert close(losses.soft_cross_entropy(t(STUDENT), t(TEACHER), 2.0), (ex0 + ex1) / 2)


def test_kl_div_t2_includes_t_squared():
    # T=1: KL(t ‖ s) = Σ t (ln t − ln s)
    ex0 = 1 / 2 * math.log((1 / 2) / (1 / 4)) + 1 / 2 * math.log((1 / 2) / (3 / 4))
    ex1 = 3 / 4 * math.log((3 / 4) / (1 / 4)) + 1 / 4 * math.log((1 / 4) / (3 / 4))
    assert close(losses.kl_div_t2(t(STUDENT), t(TEACHER), 1.0), (ex0 + ex1) / 2)

    # T=2: student [1/(1+√3), √3/(1+√3)], teachers [1/2, 1/2] and [√3/(1+√3), 1/(1+√3)], times T² = 4
    s0, s1 = 1 / (1 + R3), R3 / (1 + R3)
    ex0 = 1 / 2 * math.log((1 / 2) / s0) + 1 / 2 * math.log((1 / 2) / s1)
    ex1 = s1 * math.log(s1 / s0) + s0 * math.log(s0 / s1)
    assert close(losses.kl_div_t2(t(STUDENT), t(TEACHER), 2.0), 2.0**2 * (ex0 + ex1) / 2)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kl_div_t2_is_zero_for_identical_logits(temperature):
    logits = t([[0.3, -1.2, 2.0], [5.0, 5.0, -3.0]])
    assert abs(float(losses.kl_div_t2(logits, logits.clone(), temperature))) < 1e-12


def test_prediction_loss_dispatches_on_kind():
    s, te = t(STUDENT), t(TEACHER)
    assert close(losses.prediction_loss(s, te, "soft_ce", 2.0, problem_type=SINGLE_LABEL),
                 float(losses.soft_cross_entropy(s, te, 2.0)))
    assert close(losses.prediction_loss(s, te, "kl", 2.0, problem_type=SINGLE_LABEL), float(losses.kl_div_t2(s, te, 2.0)))
    with pytest.raises(ValueError, match="unknown prediction loss"):
        losses.prediction_loss(s, te, "hinge", 1.0, problem_type=SINGLE_LABEL)


def test_prediction_loss_mse_regresses_the_logits_with_no_temperature():
    # (0-0)², (ln3-0)², (0-ln3)², (ln3-0)² over the 4 entries, whatever T
    expected = 3 * LN3**2 / 4
    for temp in (1.0, 4.0):
        assert close(losses.prediction_loss(t(STUDENT), t(TEACHER), "mse", temp, problem_type=SINGLE_LABEL), expected)


def test_prediction_loss_regression_is_mse_and_ignores_temperature():
    student = [[1.0], [2.0], [3.0]]
    teacher = [[1.5], [2.0], [5.0]]
    expected = (0.5**2 + 0**2 + 2**2) / 3
    for kind, temp in [("soft_ce", 1.0), ("kl", 4.0)]:
        assert close(losses.prediction_loss(t(student), t(teacher), kind, temp, problem_type=REGRESSION), expected)


def test_task_loss_classification_is_cross_entropy():
    logits = t([[0.0, LN3], [0.0, LN3]])
    labels = torch.tensor([1, 0])
    expected = (-math.log(3 / 4) - math.log(1 / 4)) / 2
    assert close(losses.task_loss(logits, labels, problem_type=SINGLE_LABEL), expected)


def test_task_loss_regression_is_mse_with_integer_labels_cast():
    logits = t([[1.0], [2.0]])
    assert close(losses.task_loss(logits, t([0.5, 4.0]), problem_type=REGRESSION), (0.5**2 + 2**2) / 2)
    assert close(losses.task_loss(logits, torch.tensor([1, 3]), problem_type=REGRESSION), (0**2 + 1**2) / 2)


# ----------------------------------------------------------------------------- Distiller

# Student width 2, teacher width 3, one student layer learning from teacher layer 2.
# B=1, L=2; token 1 is padding (its values would change every loss if counted).
MASK_D = torch.tensor([[1, 0]])
W_E = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]  # (teacher, student)
B_E = [0.0, 0.0, 1.0]
W_H = [[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]


def distiller_with_known_projections(weights, mask_padding=True) -> Distiller:
    matches = resolve_matches("list", n_teacher=2, n_student=1, weights=weights, layers=[2])
    d = Distiller(matches, student_width=2, teacher_width=3, mask_padding=mask_padding)
    assert isinstance(d.embedding_proj, nn.Linear) and isinstance(d.hidden_proj, nn.Linear)
    with torch.no_grad():
        d.embedding_proj.weight.copy_(torch.tensor(W_E))
        d.embedding_proj.bias.copy_(torch.tensor(B_E))
        d.hidden_proj.weight.copy_(torch.tensor(W_H))
        nn.init.zeros_(d.hidden_proj.bias)
    return d


def outputs():
    student = BaseModelOutput(
        hidden_states=(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]),     # embeddings
                       torch.tensor([[[1.0, -1.0], [9.0, 9.0]]])),   # after student layer 1
        attentions=(torch.tensor([[[[1.0, 7.0], [7.0, 7.0]]]]),),    # (1, H=1, 2, 2)
    )
    teacher = BaseModelOutput(
        hidden_states=(torch.tensor([[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]]),   # embeddings
                       torch.tensor([[[2.0, -2.0, 0.0], [0.0, 0.0, 0.0]]]),  # layer 1: would give 0 if picked
                       torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])),  # layer 2: the target
        attentions=(torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]),              # layer 1: would give 0
                    torch.tensor([[[[3.0, 0.0], [0.0, 0.0]]]])),             # layer 2: the target
    )
    return student, teacher


# W_e·[1, 2] + b = [1, 2, 1+2+1] = [1, 2, 4] vs teacher [1, 2, 3]: (0 + 0 + 1) / (1 token × 3)
EMB = (0**2 + 0**2 + 1**2) / 3
# W_h·[1, −1] = [2, −2, 0] vs teacher layer 2 [0, 0, 0]: (4 + 4 + 0) / 3
HID = (2**2 + 2**2 + 0**2) / 3
# only the (0, 0) pair is real: (1 − 3)² / (1 pair × 1 head)
ATT = (1 - 3) ** 2 / 1


def test_distiller_projects_student_and_parts_are_unweighted():
    weights = {"embedding": 2.0, "attention": 0.5, "hidden": 3.0}
    d = distiller_with_known_projections(weights)
    student, teacher = outputs()
    total, parts = d(student, teacher, MASK_D)
    assert set(parts) == {"embedding/0", "attention/1", "hidden/1"}
    assert math.isclose(float(parts["embedding/0"]), EMB, rel_tol=1e-6)
    assert math.isclose(float(parts["hidden/1"]), HID, rel_tol=1e-6)
    assert math.isclose(float(parts["attention/1"]), ATT, rel_tol=1e-6)
    assert math.isclose(total.item(), 2.0 * EMB + 0.5 * ATT + 3.0 * HID, rel_tol=1e-6)


def test_distiller_total_is_differentiable_and_parts_detached():
    d = distiller_with_known_projections({"embedding": 1.0, "hidden": 1.0})
    student, teacher = outputs()
    total, parts = d(student, teacher, MASK_D)
    assert total.requires_grad and not any(p.requires_grad for p in parts.values())
    total.backward()
    # d/dW_h of (1/3)·Σ_i (W_h x − 0)_i² at x=[1,−1] = (2/3)·(W_h x) xᵀ
    expected = [[(2 / 3) * 2 * 1, (2 / 3) * 2 * -1], [(2 / 3) * -2 * 1, (2 / 3) * -2 * -1], [0.0, 0.0]]
    assert torch.allclose(d.hidden_proj.weight.grad, torch.tensor(expected))


def test_distiller_weight_zero_feature_is_absent_and_changing_weights_scales_total():
    student, teacher = outputs()
    total1, parts1 = distiller_with_known_projections({"embedding": 1.0, "hidden": 1.0})(student, teacher, MASK_D)
    total2, parts2 = distiller_with_known_projections({"embedding": 10.0, "hidden": 1.0})(student, teacher, MASK_D)
    assert "attention/1" not in parts1
    assert math.isclose(total1.item(), EMB + HID, rel_tol=1e-6)
    assert math.isclose(total2.item(), 10 * EMB + HID, rel_tol=1e-6)
    assert float(parts1["embedding/0"]) == float(parts2["embedding/0"])


def test_distiller_mask_padding_false_counts_padded_tokens():
    d = distiller_with_known_projections({"embedding": 1.0}, mask_padding=False)
    student, teacher = outputs()
    _, parts = d(student, teacher, MASK_D)
    # token 1: W_e·[3, 4] + b = [3, 4, 8] vs [3, 4, 5] -> 9; mean over 2 tokens × 3
    assert math.isclose(float(parts["embedding/0"]), (1 + 9) / 6, rel_tol=1e-6)


def test_distiller_equal_widths_uses_identity_without_parameters():
    matches = [LayerMatch("embedding", 0, 0, 1.0), LayerMatch("hidden", 1, 2, 1.0)]
    d = Distiller(matches, student_width=3, teacher_width=3)
    assert isinstance(d.embedding_proj, nn.Identity) and isinstance(d.hidden_proj, nn.Identity)
    assert sum(p.numel() for p in d.parameters()) == 0
    student = BaseModelOutput(hidden_states=(torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[[0.0, 0.0, 0.0]]])))
    teacher = BaseModelOutput(hidden_states=(torch.tensor([[[1.0, 2.0, 5.0]]]), torch.tensor([[[9.0, 9.0, 9.0]]]),
                                             torch.tensor([[[1.0, 1.0, 1.0]]])))
    total, parts = d(student, teacher, torch.tensor([[1]]))
    assert math.isclose(float(parts["embedding/0"]), 4 / 3, rel_tol=1e-6)
    assert math.isclose(float(parts["hidden/1"]), 3 / 3, rel_tol=1e-6)
    assert math.isclose(total.item(), 4 / 3 + 1, rel_tol=1e-6)


# --- multi-label: a sigmoid per label (teacher z_T = [0, ln 3] -> p = [1/2, 3/4]; student [ln 3, 0] -> q = [3/4, 1/2])


def _bce(p: float, q: float) -> float:
    return -(p * math.log(q) + (1 - p) * math.log(1 - q))


def test_binary_soft_cross_entropy_by_hand_at_t1():
    s, te = t([[LN3, 0.0]]), t([[0.0, LN3]])
    expected = (_bce(0.5, 0.75) + _bce(0.75, 0.5)) / 2  # the mean over the 2 labels of 1 example
    assert close(losses.binary_soft_cross_entropy(s, te, 1.0), expected)
    from tinykd.choices import MULTI_LABEL

    assert close(losses.prediction_loss(s, te, "soft_ce", 1.0, problem_type=MULTI_LABEL), expected)


def test_binary_soft_cross_entropy_divides_both_logits_by_t():
    s, te = t([[LN3, 0.0]]), t([[0.0, LN3]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # T = 2: p = [σ(0), σ(ln3 / 2)] = [1/2, √3/(1+√3)], q = [σ(ln3 / 2), 1/2]
    p2 = sig(LN3 / 2)
    assert abs(p2 - math.sqrt(3) / (1 + math.sqrt(3))) < 1e-12
    expected = (_bce(0.5, p2) + _bce(p2, 0.5)) / 2
    assert close(losses.binary_soft_cross_entropy(s, te, 2.0), expected)


def test_binary_kl_t2_is_soft_ce_less_teacher_entropy_times_t2():
    s, te = t([[LN3, 0.0]]), t([[0.0, LN3]])
    from tinykd.choices import MULTI_LABEL

    ce = (_bce(0.5, 0.75) + _bce(0.75, 0.5)) / 2
    entropy = (_bce(0.5, 0.5) + _bce(0.75, 0.75)) / 2
    assert close(losses.prediction_loss(s, te, "kl", 1.0, problem_type=MULTI_LABEL), ce - entropy)
    assert abs(float(losses.binary_kl_t2(te, te.clone(), 3.0))) < 1e-6  # zero for the teacher itself


def test_task_loss_multi_label_is_mean_binary_cross_entropy():
    from tinykd.choices import MULTI_LABEL

    logits = t([[0.0, LN3], [LN3, 0.0]])
    labels = t([[1.0, 0.0], [1.0, 1.0]])
    expected = (-math.log(0.5) - math.log(0.25) - math.log(0.75) - math.log(0.5)) / 4
    assert close(losses.task_loss(logits, labels, problem_type=MULTI_LABEL), expected)
