"""Distillation losses as pure functions.

Shapes: B batch, L sequence, H heads, D width, C classes. `mask` is the (B, L) attention
mask (1 = real token, 0 = padding). Every function returns a scalar tensor.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from tinykd.choices import ATTENTION_HEADS, MULTI_LABEL, PRED_LOSSES, QA, REGRESSION, RELATIONS, SEQUENCE, TOKEN

IGNORE = -100  # a token's label that no loss or metric reads (special tokens; a word's later sub-tokens)


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean squared error over real tokens.

    student, teacher: (B, L, D), same width (project the student first). With `mask`,
    the mean runs over the B·L_real·D entries of non-padded tokens; without, over all
    B·L·D entries (TinyBERT's reference code, which includes padding).
    """
    if mask is None or bool(mask.all()):  # no padding: the plain mean, one fused kernel each way
        return F.mse_loss(student, teacher)
    keep = mask.bool().unsqueeze(-1)
    # padded tokens take the teacher's value (a zero difference, no gradient); the sum is over the rest
    sq_sum = F.mse_loss(torch.where(keep, student, teacher), teacher, reduction="sum")
    return sq_sum / (mask.to(student.dtype).sum() * student.size(-1)).clamp_min(1.0)


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor],
                  heads: str = "match") -> torch.Tensor:
    """MSE between attention maps (pre-softmax scores or probabilities).

    student, teacher: (B, H, L, L) — query × key. With `mask`, only pairs where both the
    query and the key are real tokens count: the mean runs over B·H·(pairs) entries.
    heads="match" compares head h with head h (needs equal head counts); heads="mean"
    averages each model's heads first, so any head counts work (H becomes 1).
    """
    if heads not in ATTENTION_HEADS:
        raise ValueError(f"attention heads {heads!r}: use one of {ATTENTION_HEADS}")
    if heads == "mean":
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    elif student.shape != teacher.shape:
        raise ValueError(f"attention shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    if mask is None or bool(mask.all()):  # no padding: the plain mean, one fused kernel each way
        return F.mse_loss(student, teacher)
    m = mask.bool()
    pair = (m[:, :, None] & m[:, None, :]).unsqueeze(1)  # (B, 1, L, L)
    sq_sum = F.mse_loss(torch.where(pair, student, teacher), teacher, reduction="sum")
    return sq_sum / (pair.sum().to(student.dtype) * student.size(1)).clamp_min(1.0)


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor],
                heads: int) -> torch.Tensor:
    """MiniLMv2's loss for one self-attention relation (Wang et al., 2021): KL(R_T ‖ R_S).

    student: (B, L, D_S), teacher: (B, L, D_T), one kind of vector per token (queries, keys or
    values); the widths may differ, but `heads` (R) must divide both. Each is split into R
    relation heads A_a of width d = D/R, and R_a = softmax(A_a A_aᵀ / √d) over the key axis,
    (B, R, L, L). The loss is Σ_k R_T log(R_T / R_S) per (batch, head, query row), averaged over
    the R heads and over the query positions: with `mask`, padded keys are left out of both
    softmaxes (probability exactly 0) and padded query rows out of the mean, which runs over the
    batch's real tokens; without, over all B·L. Computed in fp32 (autocast off).
    """
    for name, x in (("student", student), ("teacher", teacher)):
        if x.size(-1) % heads:
            raise ValueError(f"{heads} relation heads do not divide the {name}'s width {x.size(-1)}")
    keep = None if mask is None else mask.bool()

    def log_relation(x: torch.Tensor) -> torch.Tensor:
        b, length, width = x.shape
        a = x.float().view(b, length, heads, width // heads).transpose(1, 2)  # (B, R, L, d)
        scores = a @ a.transpose(-1, -2) / math.sqrt(width // heads)  # (B, R, L, L)
        if keep is not None:  # exp(-1e30 - max) is exactly 0, and 0 · (a finite log-ratio) no NaN
            scores = scores.masked_fill(~keep[:, None, None, :], -1e30)
        return F.log_softmax(scores, dim=-1)

    with torch.autocast(student.device.type, enabled=False):  # autocast would run the products in bf16
        log_t, log_s = log_relation(teacher), log_relation(student)
        kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean(1)  # (B, L): summed over keys, averaged over heads
        if keep is None:
            return kl.mean()
        m = keep.to(kl.dtype)
        return (kl * m).sum() / m.sum().clamp_min(1.0)


def attention_relations(student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor],
                        mask: Optional[torch.Tensor], heads: int,
                        relations: Sequence[str] = RELATIONS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MiniLMv2's self-attention relation loss: Σ over `relations` (qq, kk, vv) of `relation_kl`.

    student, teacher: {"q", "k", "v"} → (B, L, D) one layer's queries, keys and values (only those
    the relations read need be there); relation "qq" compares the query-query relations, and so on.
    Returns (total, {relation: its loss}), the parts detached.
    """
    total, parts = None, {}
    for r in relations:
        if r not in RELATIONS:
            raise ValueError(f"unknown relation {r!r}: use one of {RELATIONS}")
        loss = relation_kl(student[r[0]], teacher[r[0]], mask, heads)
        parts[r] = loss.detach()
        total = loss if total is None else total + loss
    if total is None:
        raise ValueError("no relation to distil: give at least one of qq, kk, vv")
    return total, parts


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """TinyBERT's prediction-layer loss: −Σ_c softmax(z_T/T)_c · log softmax(z_S/T)_c, mean over the batch.

    No T² factor (as in TinyBERT). logits: (B, C).
    """
    t = F.softmax(teacher_logits / temperature, dim=-1)
    return -(t * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def kl_div_t2(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al./DistilBERT: T² · KL(softmax(z_T/T) ‖ softmax(z_S/T)), mean over the batch.

    T² keeps gradient magnitudes comparable across temperatures. logits: (B, C).
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def binary_soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    """Multi-label prediction-layer loss: each label is its own two-outcome problem, distilled as
    TinyBERT distils a softmax. With p = σ(z_T/T) and q = σ(z_S/T),
    −[p·log q + (1 − p)·log(1 − q)], the mean over the batch and the labels (the mean, as
    `BCEWithLogitsLoss` on gold labels, so that the two are on one scale). No T² factor. logits: (B, C).
    """
    target = torch.sigmoid(teacher_logits / temperature)
    return F.binary_cross_entropy_with_logits(student_logits / temperature, target)


def binary_kl_t2(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label KL·T²: T² · KL(Bernoulli(σ(z_T/T)) ‖ Bernoulli(σ(z_S/T))), the mean over the
    batch and the labels: the binary soft cross-entropy less the teacher's own binary entropy."""
    t = teacher_logits / temperature
    target = torch.sigmoid(t)
    entropy = F.binary_cross_entropy_with_logits(t, target)
    return temperature**2 * (F.binary_cross_entropy_with_logits(student_logits / temperature, target) - entropy)


def span_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, kind: str,
              temperature: float) -> torch.Tensor:
    """Distillation of one answer-boundary distribution (start or end) over a window's tokens.

    logits: (B, L); mask: (B, L), 1 = a real token. Padding is left out of both softmaxes (it is no
    answer position, and how much of it a window gets depends only on the batch). soft_ce:
    −Σ_l softmax(z_T/T)_l · log softmax(z_S/T)_l; kl: T² · KL(softmax(z_T/T) ‖ softmax(z_S/T));
    each the mean over the B windows. mse: the mean over the real positions of (z_S − z_T)².
    Computed in fp32.
    """
    keep = mask.bool()
    s, t = student_logits.float(), teacher_logits.float()
    if kind == "mse":
        return F.mse_loss(s[keep], t[keep])
    # -1e30 after the division by T: exp() of it is exactly 0 whatever T, and 0 · (-1e30) is no NaN
    log_s = F.log_softmax((s / temperature).masked_fill(~keep, -1e30), dim=-1)
    log_t = F.log_softmax((t / temperature).masked_fill(~keep, -1e30), dim=-1)
    p_t = log_t.exp()
    if kind == "soft_ce":
        return -(p_t * log_s).sum(-1).mean()
    return temperature**2 * (p_t * (log_t - log_s)).sum(-1).mean()


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float,
                    problem_type: str, task_type: str = SEQUENCE, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Prediction-layer distillation, by `distill.pred_loss` (`kind`), the task's problem type and task type.

    Text (pair) tasks, logits (B, C): regression (C = 1): MSE whatever `kind`. single-label: soft CE
    at T (TinyBERT), KL·T², or MSE between the logits (mean over B·C; no temperature). multi-label:
    the same three with a sigmoid per label in place of the softmax (`binary_soft_cross_entropy`,
    `binary_kl_t2`; mse is unchanged).
    Token classification, logits (B, L, C), `mask` (B, L) the labelled tokens (a word's first
    sub-token): the single-label loss over the N labelled tokens, each a row (mean over the N).
    Extractive QA, logits (B, L, 2) (start, end), `mask` (B, L) the real tokens: `span_loss` on the
    start and on the end distribution, averaged (DistilBERT's SQuAD distillation; Hugging Face's QA
    heads average their two gold losses alike)."""
    if kind not in PRED_LOSSES:
        raise ValueError(f"unknown prediction loss {kind!r}: use one of {PRED_LOSSES}")
    if task_type == QA:
        return (span_loss(student_logits[..., 0], teacher_logits[..., 0], mask, kind, temperature)
                + span_loss(student_logits[..., 1], teacher_logits[..., 1], mask, kind, temperature)) / 2
    if task_type == TOKEN:
        keep = mask.bool()
        if not bool(keep.any()):  # no labelled token in the batch: nothing to distil
            return student_logits.sum() * 0
        student_logits, teacher_logits = student_logits[keep], teacher_logits[keep]  # (N, C)
    if problem_type == REGRESSION:
        return F.mse_loss(student_logits.view(-1), teacher_logits.view(-1))
    if kind == "mse":  # Ba & Caruana (2014), Tang et al. (2019): regress the logits themselves
        return F.mse_loss(student_logits, teacher_logits)
    if problem_type == MULTI_LABEL:
        loss = binary_soft_cross_entropy if kind == "soft_ce" else binary_kl_t2
    else:
        loss = soft_cross_entropy if kind == "soft_ce" else kl_div_t2
    return loss(student_logits, teacher_logits, temperature)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str, task_type: str = SEQUENCE) -> torch.Tensor:
    """Gold-label loss, as Hugging Face's heads compute it: cross-entropy (single-label), MSE
    (regression), binary cross-entropy with logits, mean over B·C (multi-label); token classification:
    cross-entropy over the tokens whose label is not IGNORE (logits (B, L, C), labels (B, L)); extractive
    QA: the mean of the start and the end cross-entropy over the window's positions (logits (B, L, 2),
    labels (B, 2) start and end positions; a position outside [0, L) is ignored, as HF clamps it)."""
    if task_type == QA:
        length = logits.size(1)
        pos = labels.clamp(0, length)  # HF: out-of-window positions become `length`, its ignored index
        return (F.cross_entropy(logits[..., 0], pos[:, 0], ignore_index=length)
                + F.cross_entropy(logits[..., 1], pos[:, 1], ignore_index=length)) / 2
    if task_type == TOKEN:
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    if problem_type == REGRESSION:
        return F.mse_loss(logits.view(-1), labels.to(logits.dtype).view(-1))
    if problem_type == MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def cosine_hidden_loss(student: torch.Tensor, teacher: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """DistilBERT's cosine embedding loss: the mean over real tokens of 1 − cos(h_S, h_T).

    student, teacher: (B, L, D), the same width (DistilBERT keeps the teacher's). With `mask`
    the mean runs over the tokens where it is 1; without, over all B·L tokens.
    """
    distance = 1 - F.cosine_similarity(student, teacher, dim=-1)  # (B, L)
    if mask is None:
        return distance.mean()
    m = mask.to(distance.dtype)
    return (distance * m).sum() / m.sum().clamp_min(1.0)


def distilbert_triple(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: Optional[torch.Tensor], *,
                      temperature: float, alpha_ce: float, alpha_mlm: float, alpha_cos: float):
    """DistilBERT's triple loss (Sanh et al., 2019):
    alpha_ce · T²·KL(softmax(z_T/T) ‖ softmax(z_S/T)) + alpha_mlm · CE(z_S, masked tokens)
    + alpha_cos · (1 − cos(h_S, h_T)).

    student_logits, teacher_logits: (N, V), the vocabulary logits at the N tokens the KL term
    covers (every real token, or only the masked ones); the KL is averaged over those N rows.
    targets: (N,) the original token at rows chosen for the masked-LM task, −100 elsewhere; the
    masked-LM loss is the mean cross-entropy over the chosen rows (0 when there are none).
    student_hidden, teacher_hidden: (B, L, D) last hidden states; mask (B, L) real tokens.
    Returns (total, {"ce", "mlm", "cos"}), the parts unweighted.
    """
    ce = kl_div_t2(student_logits.float(), teacher_logits.float(), temperature)
    chosen = targets != -100
    mlm = (F.cross_entropy(student_logits[chosen].float(), targets[chosen]) if bool(chosen.any())
           else student_logits.sum() * 0)
    cos = cosine_hidden_loss(student_hidden, teacher_hidden, mask)
    total = alpha_ce * ce + alpha_mlm * mlm + alpha_cos * cos
    return total, {"ce": ce.detach(), "mlm": mlm.detach(), "cos": cos.detach()}


# ----------------------------------------------------------------------------- a batch's loss targets


def gold_labels(batch: dict, task_type: str) -> torch.Tensor:
    """A batch's gold labels as `task_loss` takes them: QA's start and end positions as (B, 2)."""
    if task_type == QA:
        return torch.stack((batch["start_positions"], batch["end_positions"]), dim=-1)
    return batch["labels"]


def gold_label_loss(logits: torch.Tensor, batch: dict, problem_type: str, task_type: str) -> torch.Tensor:
    """`task_loss` over the rows that carry gold labels: a batch's teacher-labelled transfer rows (`transfer` = 1,
    task.transfer) have none, so the mean runs over the others; 0 (with a gradient) when there are none."""
    labels = gold_labels(batch, task_type)
    if "transfer" in batch:
        gold = batch["transfer"] == 0
        if not bool(gold.any()):
            return logits.sum() * 0.0
        logits, labels = logits[gold], labels[gold]
    return task_loss(logits, labels, problem_type, task_type)


def prediction_mask(batch: dict, task_type: str) -> Optional[torch.Tensor]:
    """Where `prediction_loss` compares teacher and student: a token task's labelled tokens, a QA window's
    real tokens; None for a text task (one prediction per example)."""
    if task_type == TOKEN:
        return batch["labels"] != IGNORE
    if task_type == QA:
        return batch["attention_mask"].bool()
    return None
