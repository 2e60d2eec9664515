"""Token-classification and extractive-QA losses against values worked out by hand (as
tests/test_losses.py does for text tasks): which positions count, the softmax over a window's real
tokens only, the mean of start and end, the temperature and the T² factor."""

from __future__ import annotations

import math

import pytest
import torch

from tinykd import losses
from tinykd.choices import QA, SINGLE_LABEL, TOKEN

LN2, LN3 = math.log(2), math.log(3)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def close(value: torch.Tensor, expected: float) -> bool:
    return math.isclose(float(value), expected, rel_tol=1e-6, abs_tol=1e-9)


# soft CE of teacher (1/2, 1/2) against student (3/4, 1/4), and of (3/4, 1/4) against (1/2, 1/2)
CE_HALF_VS_QUARTERS = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
CE_QUARTERS_VS_HALF = LN2


def test_token_soft_ce_is_the_mean_over_labelled_tokens_only():
    # 1 sentence, 3 tokens, 2 tags; token 0 is unlabelled ([CLS] or a later sub-token): its logits are wild
    student = t([[[40.0, -40.0], [LN3, 0.0], [0.0, 0.0]]])
    teacher = t([[[-40.0, 40.0], [0.0, 0.0], [LN3, 0.0]]])
    labelled = torch.tensor([[False, True, True]])
    loss = losses.prediction_loss(student, teacher, "soft_ce", 1.0, SINGLE_LABEL, TOKEN, labelled)
    assert close(loss, (CE_HALF_VS_QUARTERS + CE_QUARTERS_VS_HALF) / 2)


def test_token_loss_counts_tokens_across_sentences_not_sentences():
    # 2 sentences: one labelled token in the first, two in the second -> the mean runs over 3 tokens
    student = t([[[LN3, 0.0], [9.0, 9.0]], [[0.0, 0.0], [0.0, 0.0]]])
    teacher = t([[[0.0, 0.0], [1.0, 5.0]], [[LN3, 0.0], [LN3, 0.0]]])
    labelled = torch.tensor([[True, False], [True, True]])
    loss = losses.prediction_loss(student, teacher, "soft_ce", 1.0, SINGLE_LABEL, TOKEN, labelled)
    assert close(loss, (CE_HALF_VS_QUARTERS + 2 * CE_QUARTERS_VS_HALF) / 3)


def test_token_kl_has_t_squared_and_divides_logits_by_t():
    # T = 2: teacher (0, 2 ln 3)/2 -> (1/4, 3/4); student (0, 0) -> (1/2, 1/2)
    student, teacher = t([[[0.0, 0.0]]]), t([[[0.0, 2 * LN3]]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    loss = losses.prediction_loss(student, teacher, "kl", 2.0, SINGLE_LABEL, TOKEN, torch.tensor([[True]]))
    assert close(loss, 4 * kl)


def test_token_loss_without_labelled_tokens_is_zero_and_differentiable():
    student = t([[[1.0, 2.0]]]).requires_grad_()
    loss = losses.prediction_loss(student, t([[[0.0, 0.0]]]), "soft_ce", 1.0, SINGLE_LABEL, TOKEN,
                                  torch.tensor([[False]]))
    loss.backward()
    assert loss.item() == 0.0 and float(student.grad.abs().sum()) == 0.0


def test_token_gold_loss_ignores_minus_100():
    logits = t([[[5.0, -5.0], [LN3, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    # token 1: -log(1/4); token 2: -log(1/2); mean over the 2 labelled tokens
    assert close(losses.task_loss(logits, labels, SINGLE_LABEL, TOKEN), (math.log(4) + LN2) / 2)


def qa_logits(start, end) -> torch.Tensor:
    return torch.stack((t(start), t(end)), dim=-1)  # (B, L, 2)


def test_qa_soft_ce_is_the_mean_of_start_and_end_over_real_tokens():
    # window of 3 tokens, the last is padding (its logits must not matter)
    mask = torch.tensor([[1, 1, 0]])
    teacher = qa_logits([[0.0, LN3, 100.0]], [[0.0, 0.0, 7.0]])
    student = qa_logits([[0.0, 0.0, -50.0]], [[LN3, 0.0, 9.0]])
    # start: teacher (1/4, 3/4), student (1/2, 1/2) -> ln 2; end: teacher (1/2, 1/2), student (3/4, 1/4)
    loss = losses.prediction_loss(student, teacher, "soft_ce", 1.0, SINGLE_LABEL, QA, mask)
    assert close(loss, (LN2 + CE_HALF_VS_QUARTERS) / 2)


def test_qa_kl_at_t2_has_t_squared_and_is_zero_where_the_distributions_agree():
    mask = torch.tensor([[1, 1]])
    teacher = qa_logits([[0.0, 2 * LN3]], [[1.0, 1.0]])
    student = qa_logits([[0.0, 0.0]], [[3.0, 3.0]])  # end: both uniform -> KL 0
    kl_start = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    loss = losses.prediction_loss(student, teacher, "kl", 2.0, SINGLE_LABEL, QA, mask)
    assert close(loss, 4 * (kl_start + 0.0) / 2)


def test_qa_loss_is_the_mean_over_windows():
    mask = torch.tensor([[1, 1], [1, 0]])
    teacher = qa_logits([[0.0, LN3], [2.0, -3.0]], [[0.0, 0.0], [2.0, 8.0]])
    student = qa_logits([[0.0, 0.0], [7.0, 1.0]], [[LN3, 0.0], [-1.0, 4.0]])
    # window 2 has one real token: every distribution is (1) there -> 0 for start and end
    loss = losses.prediction_loss(student, teacher, "soft_ce", 1.0, SINGLE_LABEL, QA, mask)
    assert close(loss, ((LN2 + CE_HALF_VS_QUARTERS) / 2 + 0.0) / 2)


def test_qa_mse_is_over_real_positions_only():
    mask = torch.tensor([[1, 1, 0]])
    teacher = qa_logits([[0.0, 1.0, 50.0]], [[2.0, 0.0, 50.0]])
    student = qa_logits([[1.0, 1.0, 0.0]], [[0.0, 3.0, 0.0]])
    # start: (1² + 0²)/2 = 0.5; end: (2² + 3²)/2 = 6.5; mean 3.5
    assert close(losses.prediction_loss(student, teacher, "mse", 1.0, SINGLE_LABEL, QA, mask), 3.5)


def test_qa_gradient_never_reaches_padding_and_has_no_nan():
    mask = torch.tensor([[1, 1, 0]])
    student = qa_logits([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]).requires_grad_()
    teacher = qa_logits([[0.0, LN3, 0.0]], [[LN3, 0.0, 0.0]])
    loss = losses.prediction_loss(student, teacher, "soft_ce", 0.5, SINGLE_LABEL, QA, mask)
    loss.backward()
    assert torch.isfinite(student.grad).all() and float(student.grad[0, 2].abs().sum()) == 0.0


def test_qa_gold_loss_is_the_mean_of_start_and_end_cross_entropy():
    logits = qa_logits([[0.0, LN3, 0.0]], [[0.0, 0.0, 0.0]])
    positions = torch.tensor([[1, 2]])
    # start: -log(3/5); end: -log(1/3)
    assert close(losses.task_loss(logits, positions, SINGLE_LABEL, QA), (-math.log(3 / 5) + math.log(3)) / 2)


@pytest.mark.parametrize("kind", ["soft_ce", "kl", "mse"])
def test_qa_and_token_losses_are_zero_or_entropy_for_a_student_equal_to_its_teacher(kind):
    logits = qa_logits([[0.0, LN3]], [[0.0, 0.0]])
    loss = losses.prediction_loss(logits, logits, kind, 1.0, SINGLE_LABEL, QA, torch.tensor([[1, 1]]))
    # soft CE of a distribution with itself is its entropy: start (1/4, 3/4), end (1/2, 1/2)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) if kind == "soft_ce" else 0.0
    expected = (entropy + (LN2 if kind == "soft_ce" else 0.0)) / 2
    assert close(loss, expected)
