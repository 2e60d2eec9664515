"""A BiLSTM sentence classifier: the student of "Distilling BERT into Simple Neural Networks with
Unlabeled Transfer Data" (Mukherjee & Hassan Awadallah, 2019).

It reads the teacher's WordPiece ids (so that the teacher's tokenizer, vocabulary and input
embeddings serve it), runs a bidirectional LSTM over the real tokens (packed: padding never
enters either direction), max-pools over time, and maps the pooled vector through a dense
layer to the sentence representation that distillation matches against the teacher's; a linear
layer gives the logits.

It is a `PreTrainedModel` with a config of its own (`model_type="tinykd_bilstm"`), registered
with the Auto classes when `tinykd` is imported: `save_pretrained` writes config.json and
model.safetensors, and `AutoModelForSequenceClassification.from_pretrained(dir)` loads it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput

from tinykd.errors import TinyKDError


class BiLSTMConfig(PretrainedConfig):
    model_type = "tinykd_bilstm"

    def __init__(self, vocab_size: int = 30522, embedding_dim: int = 300, hidden_size: int = 300,
                 num_layers: int = 1, representation_size: int = 300, dropout: float = 0.1,
                 pad_token_id: int = 0, **kwargs):
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size  # per direction
        self.num_layers = num_layers
        self.representation_size = representation_size
        self.dropout = dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class BiLSTMForSequenceClassification(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        self.representation = nn.Linear(2 * config.hidden_size, config.representation_size)
        self.classifier = nn.Linear(config.representation_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.1)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def groups(self) -> list[nn.Module]:
        """The layers from the top down: the order in which gradual unfreezing releases them."""
        return [self.classifier, self.representation, self.lstm, self.embeddings]

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None) -> SequenceClassifierOutput:
        """input_ids (B, L); attention_mask (B, L), 1 for real tokens (padding may be anywhere
        after them). Returns logits (B, C) and, with output_hidden_states, the sentence
        representation (B, R) as `hidden_states[0]`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(1).clamp_min(1)
        x = self.dropout(self.embeddings(input_ids))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=input_ids.size(1))
        real = attention_mask[:, : out.size(1), None].bool()
        pooled = out.masked_fill(~real, torch.finfo(out.dtype).min).max(dim=1).values  # max over real tokens
        rep = torch.tanh(self.representation(self.dropout(pooled)))
        logits = self.classifier(self.dropout(rep))
        loss = None
        if labels is not None:
            loss = (nn.functional.mse_loss(logits.view(-1), labels.float().view(-1)) if self.config.num_labels == 1
                    else nn.functional.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits,
                                        hidden_states=(rep,) if output_hidden_states else None)


AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)


# ----------------------------------------------------------------------------- embeddings


def svd_reduce(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """The rows of `matrix` (V, D) projected on its top `dim` right singular vectors: (V, dim),
    the best rank-`dim` approximation's coordinates (E ≈ U_k S_k V_kᵀ, returns U_k S_k = E V_k)."""
    if dim > matrix.size(1):
        raise TinyKDError(f"student.embedding_dim={dim} is wider than the teacher's embeddings ({matrix.size(1)}).",
                          f"use student.embedding_dim <= {matrix.size(1)}.")
    m = matrix.detach().double()
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    return (m @ vh[:dim].T).float()


def glove_embeddings(vocab: dict[str, int], vectors, dim: int, seed: int) -> tuple[torch.Tensor, int]:
    """An embedding matrix for a WordPiece vocabulary from GloVe: each token that is a GloVe word
    (``##`` pieces by their bare form) takes its vector from `vectors` (an `augment.WordVectors`
    table: unit-length rows); the others are drawn from N(0, 0.1²), seeded, which gives rows of
    about the same length at 50 dimensions. Returns (matrix, tokens covered by GloVe)."""
    if vectors.vectors.size(1) != dim:
        raise TinyKDError(f"GloVe vectors are {vectors.vectors.size(1)}-dimensional but student.embedding_dim={dim}.",
                          f"set student.embedding_dim={vectors.vectors.size(1)} with student.embeddings=glove.")
    g = np.random.default_rng(seed)
    out = torch.from_numpy(g.normal(0.0, 0.1, (max(vocab.values()) + 1, dim)).astype(np.float32))
    covered = 0
    for token, i in vocab.items():
        word = token[2:] if token.startswith("##") else token
        j = vectors.index.get(word)
        if j is not None:
            out[i] = vectors.vectors[j]
            covered += 1
    return out, covered
