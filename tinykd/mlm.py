"""Masked-LM pieces shared by `stage=mlm_head` (and the masked-LM losses that build on it).

Masking is transformers' `DataCollatorForLanguageModeling.torch_mask_tokens` (BERT's 15% of
tokens, 80% [MASK] / 10% random / 10% kept), driven by a generator seeded per (seed, batch),
so that a resumed run masks exactly as an uninterrupted one would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


class Masker:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, probability: float = 0.15, seed: int = 0):
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)
        self.specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.seed = seed

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: int):
        """(masked input ids, labels with -100 where nothing is predicted) for batch `index`."""
        special = torch.isin(input_ids, self.specials) | (attention_mask == 0)
        self.collator.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return self.collator.torch_mask_tokens(input_ids.clone(), special)


def masked_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden rows and target ids at masked positions only: the vocabulary head (hidden x
    vocab) then runs on ~15% of the tokens instead of all of them."""
    where = labels != -100
    return hidden[where], labels[where]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[int, int]:
    """How many targets are among the top-k logits of their row, for each k."""
    top = logits.topk(max(ks), dim=-1).indices
    hits = top == targets[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets)
