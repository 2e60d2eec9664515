"""Dropout whose mask costs a fraction of PyTorch's on the CPU (`engine.fast_dropout`, on by default).

PyTorch draws a CPU dropout mask one element at a time (`bernoulli_`), about 4-5 ns an element
here: for a TinyBERT4 student at batch 32 x 128 tokens, the masks on its attention probabilities
and hidden states cost ~0.15 s of a ~1.6 s distillation step. This module draws 64 random bits
per generator call instead and cuts them into four 15-bit numbers, so the mask for a
(32, 12, 128, 128) attention map takes ~9 ms instead of ~35-45 ms (`make bench-throughput`).

The arithmetic: a 15-bit number u is uniform on 0 .. 32767; an element is dropped when
u < k = round(p * 32768), so the drop rate is k / 32768 (p = 0.1: 0.100006) and the kept ones are
scaled by 1 / (1 - k / 32768), which keeps the expectation exact. The bits come from torch's
default generator, so `torch.manual_seed` makes runs repeat. Only CPU tensors take this path;
CUDA's dropout kernel is already fused and fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 1 << 15


def drop_threshold(p: float) -> int:
    """k: an element is dropped when its 15-bit number is below k (drop rate k / 32768)."""
    return round(p * _LEVELS)


def keep_mask(shape, p: float, dtype: torch.dtype) -> torch.Tensor:
    """The scaled keep mask: 1 / (1 - k/32768) where kept, 0 where dropped."""
    n = 1
    for s in shape:
        n *= s
    # random_() on int64 fills [0, 2^63): the low 63 bits are uniform, so each of the four 16-bit
    # pieces has 15 uniform low bits (the top piece's 16th bit is always 0, and is masked off).
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(shape)
    k = drop_threshold(p)
    return (bits.bitwise_and_(_LEVELS - 1) >= k).to(dtype).mul_(1.0 / (1.0 - k / _LEVELS))


def dropout(x: torch.Tensor, p: float, training: bool, fast: bool = True) -> torch.Tensor:
    """Inverted dropout; the fast mask on CPU tensors when `fast`, else F.dropout."""
    if not training or p == 0.0:
        return x
    if not fast or x.device.type != "cpu" or p >= 1.0 or drop_threshold(p) == 0:
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p, x.dtype)


class FastDropout(nn.Dropout):
    """nn.Dropout with the fast CPU mask (same `p`, same train/eval behaviour)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, True)
        return dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every nn.Dropout in `model` for FastDropout, and let tinykd's attention functions use the
    fast mask on their probabilities. No parameters change: the exported model is unaffected."""
    for module in list(model.modules()):
        module.tinykd_fast_dropout = True
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
    return model
