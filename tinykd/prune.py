"""Structured pruning of a BERT teacher to a student's shape: the student starts from the teacher's own
weights for everything it keeps (`student.init=pruned`).

One calibration pass of the teacher over a sample of the stage's own data measures how much each part
is used (activation-based importance, as in Minitron, Muralidharan et al., 2024; Sheared-LLaMA and
CoFi prune the same units by learned masks instead). Every score is a mean over the real (non-padding)
tokens of the sample:

- **layers** (depth): block influence, 1 − cos(h_{l−1}, h_l) between a layer's input and output
  (ShortGPT, Men et al., 2024); the least influential whole layers are dropped, the rest keep their
  order. `layers` given explicitly overrides the ranking.
- **hidden channels** (width of the residual stream): the sum over every LayerNorm of the model
  (embeddings, and the two of each layer) of the mean |LayerNorm output| of the channel. The same
  channels are kept in the embeddings, every layer's input and output projections, every LayerNorm,
  and the token/QA head's input.
- **attention heads**, per kept layer: the mean L2 norm of the head's context vector (its share of the
  attention output before the output projection); the top `num_heads` are kept, in order.
- **head dimensions**, when the student's head size is smaller than the teacher's: in each kept head,
  the query/key dimensions ranked by mean|q_d| × mean|k_d| (their mean contribution |q_d·k_d| to the
  attention scores over all query-key pairs), the value dimensions by mean |context_d|. The kept
  queries are scaled by sqrt(d_student / d_teacher), so that the student's scaling 1/sqrt(d_student)
  gives the kept dimensions the teacher's 1/sqrt(d_teacher).
- **feed-forward neurons**, per kept layer: mean |GELU output|.
- **pooler outputs** (a sequence classifier): mean |tanh output| at the first token; the classifier
  keeps the matching input columns.

What a student shape must satisfy: a BERT student (`student.arch=bert`) of a BERT teacher; no more
layers, hidden channels, heads or feed-forward neurons than the teacher; a head size (hidden_size /
num_heads) that divides its width and is no larger than the teacher's. Pruned to the teacher's own
shape, the student is the teacher (the same outputs); otherwise each kept row and column is the
teacher's (the queries scaled as above when head dimensions are pruned). LayerNorm then normalises over
the kept channels only: the one place where a smaller student computes something the teacher did not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tinykd.errors import TinyKDError


@dataclass
class Importance:
    """Activation statistics of one calibration pass (teacher layers numbered from 0)."""

    layers: torch.Tensor  # (N,) block influence of each layer
    channels: torch.Tensor  # (H,) hidden-channel importance
    heads: torch.Tensor  # (N, n_heads) head importance
    qk_dims: torch.Tensor  # (N, n_heads, d_head) query/key dimension importance
    v_dims: torch.Tensor  # (N, n_heads, d_head) value dimension importance
    neurons: torch.Tensor  # (N, I) feed-forward neuron importance
    pooler: Optional[torch.Tensor]  # (H,) pooler output importance, or None without a pooler
    tokens: int  # real tokens measured


@dataclass(frozen=True)
class PrunePlan:
    """Which of the teacher's units the student keeps (indices into the teacher's, ascending)."""

    layers: list[int]  # teacher layers (from 0), in order
    channels: list[int]  # hidden channels
    heads: list[list[int]]  # per kept layer: teacher heads
    qk_dims: list[list[list[int]]]  # per kept layer, per kept head: query/key dimensions within the head
    v_dims: list[list[list[int]]]  # per kept layer, per kept head: value dimensions within the head
    neurons: list[list[int]]  # per kept layer: feed-forward neurons
    pooler: Optional[list[int]]  # pooler outputs (None without a pooler)

    def summary(self) -> str:
        return (f"teacher layers {[i + 1 for i in self.layers]}, {len(self.channels)} hidden channels, "
                f"{len(self.heads[0])} heads x {len(self.qk_dims[0][0])} dims, "
                f"{len(self.neurons[0])} feed-forward neurons per layer")


def encoder_of(model: nn.Module) -> nn.Module:
    """The BertModel inside a BERT model with or without a head."""
    return getattr(model, "base_model", model)


def check_shape(student_config, teacher_config) -> None:
    """Refuse, naming the key and the fix, a student shape that pruning cannot reach."""
    tc, sc = teacher_config, student_config
    if tc.model_type != "bert":
        raise TinyKDError(f"student.init=pruned prunes a BERT teacher; this teacher is {tc.model_type}.",
                          "use student.init=general, random or teacher_layers for this teacher.")
    if sc.model_type != "bert":
        raise TinyKDError(f"student.init=pruned builds a BERT student; student.arch gives {sc.model_type}.",
                          "set student.arch=bert (e.g. student=tinybert4 or bert_l4_192).")
    t_head = tc.hidden_size // tc.num_attention_heads
    s_head = sc.hidden_size // sc.num_attention_heads
    too_big = [(key, s, t) for key, s, t in (
        ("student.num_layers", sc.num_hidden_layers, tc.num_hidden_layers),
        ("student.hidden_size", sc.hidden_size, tc.hidden_size),
        ("student.num_heads", sc.num_attention_heads, tc.num_attention_heads),
        ("student.intermediate_size", sc.intermediate_size, tc.intermediate_size)) if s > t]
    if too_big:
        key, s, t = too_big[0]
        raise TinyKDError(f"student.init=pruned keeps a subset of the teacher: {key}={s}, but the teacher has {t}.",
                          f"set {key} to at most {t}, or student.init=general or random.")
    if s_head > t_head:
        fit = math.ceil(sc.hidden_size / t_head)
        raise TinyKDError(
            f"student.init=pruned keeps dimensions of the teacher's heads: the student's head size is "
            f"{sc.hidden_size} / {sc.num_attention_heads} = {s_head}, larger than the teacher's {t_head}.",
            f"set student.num_heads to at least {fit} (a head size of {t_head} or less) with a hidden size it divides.")
    if tc.hidden_act != sc.hidden_act:
        raise TinyKDError(f"student.init=pruned copies feed-forward neurons: the teacher's activation is "
                          f"{tc.hidden_act}, the student's {sc.hidden_act}.", "give the student the teacher's activation.")


@torch.no_grad()
def measure(model: nn.Module, batches: Iterable[dict], device: torch.device | str = "cpu") -> Importance:
    """One pass of `model` (a BERT model, with or without a head) over `batches` (input_ids,
    attention_mask, token_type_ids), hooking the activations the importance scores read."""
    enc = encoder_of(model)
    cfg = enc.config
    n, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    d_head = cfg.hidden_size // n_heads
    model.to(device).eval()
    sums: dict[str, torch.Tensor] = {}  # per name: the sum over real tokens (the pooler: sentences)
    mask: dict[str, torch.Tensor] = {}  # the current batch's (B, L) mask: hooks read real tokens only

    def add(name: str, x: torch.Tensor) -> None:
        x = x.double().sum(0)
        sums[name] = sums[name] + x if name in sums else x

    def abs_output(name: str):  # |output| at real tokens
        def on_output(module, args, out):
            add(name, (out[0] if isinstance(out, tuple) else out)[mask["m"]].abs())
        return on_output

    def context(i: int):  # the attention output before its projection: per-head norms and |dims|
        def on_input(module, args):
            x = args[0][mask["m"]].view(-1, n_heads, d_head)
            add(f"head{i}", x.norm(dim=-1))
            add(f"ctx{i}", x.abs())
        return on_input

    handles = [enc.embeddings.LayerNorm.register_forward_hook(abs_output("ln/emb"))]
    for i, layer in enumerate(enc.encoder.layer):
        handles += [
            layer.attention.output.LayerNorm.register_forward_hook(abs_output(f"ln/attn{i}")),
            layer.output.LayerNorm.register_forward_hook(abs_output(f"ln/out{i}")),
            layer.attention.self.query.register_forward_hook(abs_output(f"q{i}")),
            layer.attention.self.key.register_forward_hook(abs_output(f"k{i}")),
            layer.attention.output.dense.register_forward_pre_hook(context(i)),
            layer.intermediate.register_forward_hook(abs_output(f"ffn{i}")),
        ]
    pooler = getattr(enc, "pooler", None)
    if pooler is not None:  # (B, H): one row per sentence
        handles.append(pooler.register_forward_hook(lambda module, args, out: add("pooler", out.abs())))
    influence = torch.zeros(n, dtype=torch.float64)
    tokens = sentences = 0
    try:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            mask["m"] = m = inputs["attention_mask"].bool()
            hs = enc(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            for i in range(n):  # block influence: 1 - cos(layer input, layer output) at each real token
                influence[i] += (1 - F.cosine_similarity(hs[i][m].double(), hs[i + 1][m].double(), dim=-1)).sum()
            tokens += int(m.sum())
            sentences += m.size(0)
    finally:
        for h in handles:
            h.remove()
    if tokens == 0:
        raise TinyKDError("The calibration sample for student.init=pruned has no tokens.",
                          "check the stage's data (the training split or the corpus) and student.prune_examples.")
    mean = {k: v / (sentences if k == "pooler" else tokens) for k, v in sums.items()}
    return Importance(
        layers=influence / tokens,
        channels=mean["ln/emb"] + sum(mean[f"ln/attn{i}"] + mean[f"ln/out{i}"] for i in range(n)),
        heads=torch.stack([mean[f"head{i}"] for i in range(n)]),
        qk_dims=torch.stack([mean[f"q{i}"].view(n_heads, d_head) * mean[f"k{i}"].view(n_heads, d_head)
                             for i in range(n)]),
        v_dims=torch.stack([mean[f"ctx{i}"] for i in range(n)]),
        neurons=torch.stack([mean[f"ffn{i}"] for i in range(n)]),
        pooler=mean.get("pooler"), tokens=tokens)


def top(scores: torch.Tensor, k: int) -> list[int]:
    """The indices of the k largest scores, ascending (ties: the lower index first)."""
    order = sorted(range(scores.numel()), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def plan(imp: Importance, student_config, layers: Optional[Sequence[int]] = None) -> PrunePlan:
    """What to keep for `student_config`'s shape, by `imp`'s ranking; `layers` (teacher layers numbered
    from 1, one per student layer) overrides the depth ranking."""
    sc = student_config
    n_heads_t, d_t = imp.qk_dims.shape[1:]
    d_s = sc.hidden_size // sc.num_attention_heads
    if layers is not None:
        kept_layers = [int(t) - 1 for t in layers]
    else:
        kept_layers = top(imp.layers, sc.num_hidden_layers)
    heads, qk, v, neurons = [], [], [], []
    for i in kept_layers:
        h = top(imp.heads[i], sc.num_attention_heads)
        heads.append(h)
        qk.append([top(imp.qk_dims[i, j], d_s) for j in h])
        v.append([top(imp.v_dims[i, j], d_s) for j in h])
        neurons.append(top(imp.neurons[i], sc.intermediate_size))
    return PrunePlan(layers=kept_layers, channels=top(imp.channels, sc.hidden_size), heads=heads, qk_dims=qk,
                     v_dims=v, neurons=neurons,
                     pooler=top(imp.pooler, sc.hidden_size) if imp.pooler is not None else None)


def _rows(src: torch.Tensor, idx) -> torch.Tensor:
    return src.index_select(0, torch.as_tensor(idx, dtype=torch.long, device=src.device))


def _take(linear: nn.Linear, rows, cols) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A Linear's weight restricted to output `rows` and input `cols` (None: all), and its bias's rows."""
    w = linear.weight
    if rows is not None:
        w = _rows(w, rows)
    if cols is not None:
        w = _rows(w.t(), cols).t()
    b = linear.bias
    if b is not None and rows is not None:
        b = _rows(b, rows)
    return w, b


def _set(linear: nn.Linear, w: torch.Tensor, b: Optional[torch.Tensor]) -> None:
    linear.weight.copy_(w)
    if b is not None:
        linear.bias.copy_(b)


def _set_norm(dst: nn.LayerNorm, src: nn.LayerNorm, channels) -> None:
    dst.weight.copy_(_rows(src.weight, channels))
    dst.bias.copy_(_rows(src.bias, channels))
    dst.eps = src.eps


@torch.no_grad()
def apply(student: nn.Module, teacher: nn.Module, p: PrunePlan) -> None:
    """Copy the teacher's kept weights into `student` (built from the student's config, with the same
    kind of head as the teacher, or none)."""
    t, s = encoder_of(teacher), encoder_of(student)
    d_t = t.config.hidden_size // t.config.num_attention_heads
    d_s = s.config.hidden_size // s.config.num_attention_heads
    ch = p.channels
    te, se = t.embeddings, s.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(se, name).weight.copy_(_rows(getattr(te, name).weight.t(), ch).t())
    _set_norm(se.LayerNorm, te.LayerNorm, ch)
    q_scale = math.sqrt(d_s / d_t)
    for s_layer, i, heads, qk, v, neurons in zip(s.encoder.layer, p.layers, p.heads, p.qk_dims, p.v_dims, p.neurons):
        tl = t.encoder.layer[i]
        qk_rows = [h * d_t + d for h, dims in zip(heads, qk) for d in dims]
        v_rows = [h * d_t + d for h, dims in zip(heads, v) for d in dims]
        w, b = _take(tl.attention.self.query, qk_rows, ch)
        _set(s_layer.attention.self.query, w * q_scale, None if b is None else b * q_scale)
        _set(s_layer.attention.self.key, *_take(tl.attention.self.key, qk_rows, ch))
        _set(s_layer.attention.self.value, *_take(tl.attention.self.value, v_rows, ch))
        _set(s_layer.attention.output.dense, *_take(tl.attention.output.dense, ch, v_rows))
        _set_norm(s_layer.attention.output.LayerNorm, tl.attention.output.LayerNorm, ch)
        _set(s_layer.intermediate.dense, *_take(tl.intermediate.dense, neurons, ch))
        _set(s_layer.output.dense, *_take(tl.output.dense, ch, neurons))
        _set_norm(s_layer.output.LayerNorm, tl.output.LayerNorm, ch)
    if getattr(t, "pooler", None) is not None and getattr(s, "pooler", None) is not None:
        _set(s.pooler.dense, *_take(t.pooler.dense, p.pooler, ch))
    _copy_head(student, teacher, p)


def _copy_head(student: nn.Module, teacher: nn.Module, p: PrunePlan) -> None:
    """A task head's input columns: the pooler's kept outputs (a sequence classifier reads the pooled first
    token) or the kept hidden channels (token classification, QA); its outputs, the task's, are all kept."""
    pooled = type(teacher).__name__.endswith("ForSequenceClassification")
    for name in ("classifier", "qa_outputs"):
        t_head, s_head = getattr(teacher, name, None), getattr(student, name, None)
        if isinstance(t_head, nn.Linear) and isinstance(s_head, nn.Linear):
            _set(s_head, *_take(t_head, None, p.pooler if pooled else p.channels))


def prune(teacher: nn.Module, student: nn.Module, batches: Iterable[dict], *, layers: Optional[Sequence[int]] = None,
          device: torch.device | str = "cpu") -> PrunePlan:
    """Measure the teacher on `batches`, plan the student's shape and copy the kept weights in."""
    check_shape(student.config, teacher.config)
    imp = measure(teacher, batches, device)
    p = plan(imp, student.config, layers)
    apply(student, teacher, p)
    return p
