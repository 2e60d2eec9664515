"""The distiller: the layer matches plus the parameters that exist only for distillation.

Projections (TinyBERT's W_e for embeddings, W_h for hidden states) live here, beside the
student and never inside it, so the exported student is a plain Hugging Face model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from tinykd import attention, distributed, losses, models, teachers
from tinykd.errors import TinyKDError
from tinykd.layermap import LayerMatch


class Distiller(nn.Module):
    def __init__(self, matches: Sequence[LayerMatch], student_width: int, teacher_width: int,
                 attention_heads: str = "match", mask_padding: bool = True):
        super().__init__()
        self.matches = list(matches)
        self.attention_heads = attention_heads
        self.mask_padding = mask_padding
        same = student_width == teacher_width
        # W_e and W_h map the student's width to the teacher's (identity when equal).
        self.embedding_proj = nn.Identity() if same else nn.Linear(student_width, teacher_width)
        self.hidden_proj = nn.Identity() if same else nn.Linear(student_width, teacher_width)

    @property
    def needs_attentions(self) -> bool:
        return any(m.feature == "attention" for m in self.matches)

    def forward(self, student_out, teacher_out, attention_mask: Optional[torch.Tensor]):
        """Weighted sum of the intermediate losses, and each part (unweighted) for logging.

        `*_out` are HF model outputs with `hidden_states` (embeddings first) and, when an
        attention match exists, `attentions` (one (B, H, L, L) map per layer).
        """
        mask = attention_mask if self.mask_padding else None
        total = torch.zeros((), device=student_out.hidden_states[0].device)
        parts: dict[str, torch.Tensor] = {}
        per_token, per_pair = rank_weights(mask, student_out.hidden_states[0].shape[:2], total.device)
        for m in self.matches:
            if m.feature == "embedding":
                s = self.embedding_proj(student_out.hidden_states[0])
                check_embedding_width(s.size(-1), teacher_out.hidden_states[0].size(-1))
                loss = losses.masked_mse(s, teacher_out.hidden_states[0], mask)
            elif m.feature == "hidden":
                s = self.hidden_proj(student_out.hidden_states[m.student_layer])
                loss = losses.masked_mse(s, teacher_out.hidden_states[m.teacher_layer], mask)
            elif m.feature == "attention":
                loss = losses.attention_mse(student_out.attentions[m.student_layer - 1],
                                            teacher_out.attentions[m.teacher_layer - 1], mask, self.attention_heads)
            else:
                raise ValueError(m.feature)
            parts[f"{m.feature}/{m.student_layer}"] = loss.detach()
            total = total + m.weight * loss * (per_pair if m.feature == "attention" else per_token)
        return total, parts


def check_embedding_width(projected: int, teacher: int) -> None:
    """W_e maps the student's embeddings to the teacher's hidden width. Every BERT-like teacher in
    transformers 5.24 returns hidden_states[0] at that width, even those with a narrower `embedding_size`
    (ELECTRA, DeBERTa-v2 and ALBERT project their embeddings before the first layer); one that does not
    is refused here, by name, rather than by a broadcasting error inside the loss."""
    if projected != teacher:
        raise TinyKDError(
            f"The teacher's embedding output (hidden_states[0]) is {teacher} wide, but the embedding loss "
            f"projects the student's embeddings to the teacher's hidden width, {projected}.",
            "set distill.weights.embedding=0 (the attention and hidden-state losses still work).",
        )


def rank_weights(mask: Optional[torch.Tensor], shape, device) -> tuple[float, float]:
    """With several ranks, what makes the ranks' averaged gradients those of one mean over the whole
    global batch: each loss is a mean over this rank's real tokens (or query-key pairs), and ranks
    hold different numbers of them, so rank r's loss is scaled by ranks x n_r / sum(n). One process:
    (1, 1). The parts logged stay this rank's plain means."""
    world = distributed.world_size()
    if world == 1 or not distributed.initialized():
        return 1.0, 1.0
    import torch.distributed as dist

    if mask is None:
        b, length = shape
        local = torch.tensor([b * length, b * length * length], dtype=torch.float64)
    else:
        lengths = mask.sum(1).to(torch.float64)
        local = torch.stack([lengths.sum(), lengths.pow(2).sum()])
    local = local.to(device)  # nccl reduces device tensors
    total = local.clone()
    dist.all_reduce(total)
    w = world * local / total
    return float(w[0]), float(w[1])


def check_compatible(student_config, teacher_config, matches: Sequence[LayerMatch], attention_heads: str,
                     attention_target: str) -> None:
    if any(m.feature == "attention" for m in matches) and attention_heads == "match":
        hs, ht = student_config.num_attention_heads, teacher_config.num_attention_heads
        if hs != ht:
            raise TinyKDError(
                f"Attention distillation ({attention_target}) compares head h with head h, but the student has "
                f"{hs} heads and the teacher {ht}.",
                "set distill.attention_heads=mean (average over heads), or student.num_heads="
                f"{ht}, or distill.weights.attention=0.",
            )


def check_attention_capture(model, matches: Sequence[LayerMatch], role: str) -> None:
    """Refuse attention distillation when `model` (the `role`: teacher or student) has an attention match
    but its attention maps cannot be captured (`teachers.attention_capture_problem`: DeBERTa-v2, MPNet);
    never a silent skip. Without an attention match nothing runs."""
    if not any(m.feature == "attention" for m in matches):
        return
    problem = teachers.attention_capture_problem(model)
    if problem:
        raise TinyKDError(
            f"Attention distillation (distill.weights.attention > 0) needs the {role}'s attention maps, but {problem}",
            "set distill.weights.attention=0: the embedding and hidden-state losses and the prediction-layer "
            "(logit) distillation still work.",
        )


def use_attention_target(model, target: str) -> None:
    """Make `outputs.attentions` hold the distillation target (pre-softmax scores or probabilities)."""
    model.set_attn_implementation(attention.implementation_for(target))


def layer_outputs(model, batch: dict, need_attentions: bool):
    """One forward pass returning hidden states (and attention maps when needed)."""
    return model(**models.model_inputs(model, batch), output_hidden_states=True, output_attentions=need_attentions,
                 return_dict=True)
