"""Capturing TinyBERT's attention targets through transformers' own extension points.

HF's `output_attentions` returns post-softmax probabilities (after dropout, in eager mode).
TinyBERT distils the pre-softmax scores Q·Kᵀ/√d. We register two attention functions
with `AttentionInterface`; both compute the same attention output as eager attention and
differ only in what they hand back as "attention weights" (which HF then returns as
`outputs.attentions`):

- ``tinykd_scores``: raw scores Q·Kᵀ/√d, *before* the padding mask is added (padded
  positions are excluded in the loss, not by a magic large negative number);
- ``tinykd_probs``: softmax probabilities before dropout.

An attention function registered under a new name gets no padding mask unless a mask
function is registered for the same name in `AttentionMaskInterface`; we register the
eager (additive) mask, so padding is honoured exactly as in eager attention.

Speed (one distillation step is mostly these functions): the query is scaled before Q·Kᵀ (a
(B, H, L, d) product instead of a (B, H, L, L) one); a layer whose map nobody reads
(`capture_layers`: e.g. teacher layers 1 and 4 of a 6 -> 4 map) runs PyTorch's fused
`scaled_dot_product_attention` and returns an empty placeholder; and a teacher (no gradient, no dropout)
computes its scores with one product and its output with the fused kernel, so its
probabilities are never materialised. With `engine.fast_dropout` (tinykd/dropout.py) the dropout on
the probabilities draws its mask 15 bits at a time on the CPU; a layer nobody reads then runs
unfused in training too, since the fused CPU kernel's dropout is the slow per-element kind.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from tinykd import dropout as _dropout
from tinykd.choices import ATTENTION_TARGETS

SCORES = "tinykd_scores"
PROBS = "tinykd_probs"


def _fused(module, query, key, value, attention_mask, scaling, dropout):
    out = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                     dropout_p=dropout if module.training else 0.0, scale=scaling)
    return out.transpose(1, 2).contiguous()


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, return_scores=True, **kwargs):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    fast = getattr(module, "tinykd_fast_dropout", False) and query.device.type == "cpu"
    drop = dropout if module.training else 0.0
    if not getattr(module, "tinykd_capture", True) and not (fast and drop):  # nobody reads this layer's map
        # an empty placeholder, not None: transformers drops None maps, which would shift the layers' positions
        return _fused(module, query, key, value, attention_mask, scaling, dropout), query.new_empty(0)
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if return_scores and not torch.is_grad_enabled() and not (module.training and dropout):
        # a teacher: the scores are the output; the attention itself through the fused kernel
        return _fused(module, query, key, value, attention_mask, scaling, dropout), scores
    masked = scores if attention_mask is None else scores + attention_mask
    probs = nn.functional.softmax(masked, dim=-1)
    attn_output = torch.matmul(_dropout.dropout(probs, drop, module.training, fast), value)
    attn_output = attn_output.transpose(1, 2).contiguous()
    if not getattr(module, "tinykd_capture", True):
        return attn_output, query.new_empty(0)
    return attn_output, (scores if return_scores else probs)


def scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    return _attention(module, query, key, value, attention_mask, scaling, dropout, True)


def probs_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    return _attention(module, query, key, value, attention_mask, scaling, dropout, False)


def register() -> None:
    AttentionInterface.register(SCORES, scores_attention)
    AttentionInterface.register(PROBS, probs_attention)
    AttentionMaskInterface.register(SCORES, eager_mask)
    AttentionMaskInterface.register(PROBS, eager_mask)


def capture_layers(model, layers) -> None:
    """Make only `layers` (1-based; None: all) return attention maps; the others run fused."""
    for m in model.modules():
        idx = getattr(m, "layer_idx", None)
        if idx is not None and hasattr(m, "scaling"):
            m.tinykd_capture = layers is None or idx + 1 in set(layers)


def implementation_for(target: str) -> str:
    """The registered attention implementation for distill.attention_target."""
    register()
    return dict(zip(ATTENTION_TARGETS, (SCORES, PROBS)))[target]  # choices.ATTENTION_TARGETS: scores, probs


register()
