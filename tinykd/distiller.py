"""The distiller: the layer matches plus the parameters that exist only for distillation.

Projections (TinyBERT's W_e for embeddings, W_h for hidden states) live here, beside the
student and never inside it, so the exported student is a plain Hugging Face model.
MiniLMv2's self-attention relations (`RelationMatch`) need no parameter of their own: they read
the query, key and value projections of one teacher layer and of the student's last layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from tinykd import attention, distributed, losses, models, teachers
from tinykd.errors import TinyKDError
from tinykd.layermap import LayerMatch


@dataclass(frozen=True)
class RelationMatch:
    """MiniLMv2's self-attention relation transfer (Wang et al., 2021), as a typed record: the
    `relations` (qq, kk, vv) of teacher layer `teacher_layer` (1..N) distilled into those of
    `student_layer` (the student's last), each split into `heads` relation heads."""

    teacher_layer: int
    student_layer: int
    heads: int
    relations: tuple[str, ...]
    weight: float

    def describe(self) -> str:
        return (f"attention relations {', '.join(self.relations)} (KL, {self.heads} relation heads): teacher layer "
                f"{self.teacher_layer} -> student layer {self.student_layer}, weight {self.weight:g}")


# model types whose layer l computes its queries, keys and values from hidden_states[l-1] itself (post-LayerNorm
# encoders: the layer's input is the previous layer's output, normalised); a pre-LayerNorm encoder
# (roberta-prelayernorm, megatron-bert, xlm-roberta-xl) normalises it first, so its projections would read
# the wrong input
QKV_MODULES = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra"),
                    ("encoder", "attention.self", ("query", "key", "value"))),
    "distilbert": ("transformer", "attention", ("q_lin", "k_lin", "v_lin")),
}


def qkv_projections(model: nn.Module, layer: int, role: str = "model") -> tuple[nn.Module, nn.Module, nn.Module]:
    """The query, key and value projections (Linear layers) of Transformer layer `layer` (1-based) of
    `model`, a model with or without a head. Applied to `hidden_states[layer - 1]` (the layer's input,
    from a forward with output_hidden_states=True) they give exactly the vectors the layer attends with,
    without a hook. `role` names the model in the error for an architecture without them."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in QKV_MODULES:
        raise TinyKDError(
            f"Attention-relation distillation (distill.weights.relation > 0) reads the {role}'s query, key and value "
            f"projections, but tinykd knows where they are only for {', '.join(QKV_MODULES)} (post-LayerNorm "
            f"encoders); the {role} is {type(model).__name__} (model_type {model_type}).",
            "set distill.weights.relation=0 (the TinyBERT losses and prediction-layer distillation still work), "
            "or use a BERT, RoBERTa, XLM-R, ELECTRA or DistilBERT model.",
        )
    stack, path, names = QKV_MODULES[model_type]
    attention_module = getattr(model.base_model, stack).layer[layer - 1]
    for part in path.split("."):
        attention_module = getattr(attention_module, part)
    return tuple(getattr(attention_module, n) for n in names)


class Distiller(nn.Module):
    def __init__(self, matches: Sequence[LayerMatch], student_width: int, teacher_width: int,
                 attention_heads: str = "match", mask_padding: bool = True, relation: Optional[RelationMatch] = None,
                 relation_projections: Optional[tuple[Sequence[nn.Module], Sequence[nn.Module]]] = None):
        """`relation_projections`: (the teacher's, the student's) query, key and value projections of the
        layers `relation` names (`qkv_projections`), needed with a `relation`."""
        super().__init__()
        self.matches = list(matches)
        self.attention_heads = attention_heads
        self.mask_padding = mask_padding
        # W_e and W_h map the student's width to the teacher's: identity when equal, or when no embedding or
        # hidden-state match would use them (the attention relations alone need no parameter)
        project = student_width != teacher_width and any(m.feature in ("embedding", "hidden") for m in self.matches)
        self.embedding_proj = nn.Linear(student_width, teacher_width) if project else nn.Identity()
        self.hidden_proj = nn.Linear(student_width, teacher_width) if project else nn.Identity()
        self.relation = relation
        if relation is not None and relation_projections is None:
            raise ValueError("a relation match needs relation_projections (the teacher's and the student's q, k, v)")
        # A plain dict, which nn.Module does not register: the projections belong to the teacher (frozen, outside
        # the optimizer) and to the student (saved with it), never to the distiller's parameters or checkpoint.
        self._qkv = ({} if relation_projections is None else
                     {role: dict(zip("qkv", p)) for role, p in zip(("teacher", "student"), relation_projections)})

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
        if self.relation is not None:
            loss, relation_parts = self.relation_loss(student_out, teacher_out, mask)
            parts.update({f"relation/{k}": v for k, v in relation_parts.items()})
            total = total + self.relation.weight * loss * per_token  # a mean over real query positions
        return total, parts

    def relation_loss(self, student_out, teacher_out, mask: Optional[torch.Tensor]):
        """MiniLMv2's relation loss (`losses.attention_relations`) and its parts. Each side's queries, keys
        and values are its layer's own projections of that layer's input, hidden_states[l - 1]."""
        r = self.relation
        kinds = [a for a in "qkv" if any(name[0] == a for name in r.relations)]  # only the vectors read
        t_in = teacher_out.hidden_states[r.teacher_layer - 1]
        s_in = student_out.hidden_states[r.student_layer - 1]
        with torch.no_grad():  # the teacher is frozen: no graph through its projections
            t = {a: self._qkv["teacher"][a](t_in) for a in kinds}
        s = {a: self._qkv["student"][a](s_in) for a in kinds}
        return losses.attention_relations(s, t, mask, r.heads, r.relations)


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
