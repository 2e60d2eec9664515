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

Not every architecture dispatches through `AttentionInterface` (in transformers 5.24 DeBERTa-v2
and MPNet compute attention inline); for those, `set_attn_implementation` only logs a warning.
`dispatching_modules` tells them apart by running the model once with a third, recording function.

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

from typing import Optional

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from tinykd import dropout as _dropout
from tinykd.choices import ATTENTION_TARGETS

SCORES = "tinykd_scores"
PROBS = "tinykd_probs"
PROBE = "tinykd_probe"  # `dispatching_modules`: records who calls it, computes eager attention

_probed: Optional[list] = None  # the modules that called the probe, while `dispatching_modules` runs


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


def probe_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    if _probed is not None:
        _probed.append(module)
    return _attention(module, query, key, value, attention_mask, scaling, dropout, False)


def register() -> None:
    for name, fn in ((SCORES, scores_attention), (PROBS, probs_attention), (PROBE, probe_attention)):
        AttentionInterface.register(name, fn)
        AttentionMaskInterface.register(name, eager_mask)


@torch.no_grad()
def dispatching_modules(model) -> list[nn.Module]:
    """The distinct modules that call transformers' `AttentionInterface` in one forward pass of
    `model` on a 4-token example: the attention whose maps `tinykd_scores`/`tinykd_probs` can
    return. A model whose attention computes its scores inline (no dispatch) gives none, and
    then `set_attn_implementation` only logs a warning and `output_attentions` silently returns
    eager probabilities: this is how that case is told apart.

    The model comes back as it was: attention implementation, and train/eval mode per module
    (the pass runs in eval mode, so it draws no dropout and leaves the RNG untouched).
    """
    global _probed
    register()
    impl = model.config._attn_implementation
    modes = {m: m.training for m in model.modules()}
    ids = torch.arange(2, 6, device=model.device).remainder(model.config.vocab_size).unsqueeze(0)
    _probed = []
    try:
        model.set_attn_implementation(PROBE)
        model.eval()
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
        seen = list({id(m): m for m in _probed}.values())
    finally:
        _probed = None
        if model.config._attn_implementation != impl:
            model.set_attn_implementation(impl)
        for m, training in modes.items():
            m.training = training
    return seen


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
