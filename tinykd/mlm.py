"""Masked-LM pieces shared by `stage=mlm_head` (and the masked-LM losses that build on it).

Masking is transformers' `DataCollatorForLanguageModeling.torch_mask_tokens` (BERT's 15% of
tokens, 80% [MASK] / 10% random / 10% kept), driven by a generator seeded per (seed, batch),
so that a resumed run masks exactly as an uninterrupted one would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from tinykd.errors import TinyKDError


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


def head_logits(model, rows: torch.Tensor) -> torch.Tensor:
    """A masked LM's vocabulary head applied to hidden rows (N, D) → (N, V): the head runs only
    where a loss reads it. BERT (`cls`), DistilBERT (`vocab_transform` → activation →
    `vocab_layer_norm` → `vocab_projector`) and RoBERTa-style (`lm_head`) models."""
    if hasattr(model, "cls"):
        return model.cls(rows)
    if hasattr(model, "vocab_projector"):
        x = model.vocab_layer_norm(model.activation(model.vocab_transform(rows)))
        return model.vocab_projector(x)
    if hasattr(model, "lm_head"):
        return model.lm_head(rows)
    raise TinyKDError(f"{type(model).__name__} has no masked-LM head this code knows (cls, vocab_projector, lm_head).",
                      "use a BERT, DistilBERT or RoBERTa *ForMaskedLM model.")
