"""The attention targets captured through transformers' AttentionInterface.

A tiny random BERT is built in each test. Weights are initialised with a large range so
that attention is far from uniform: otherwise a missing padding mask would change the
outputs by less than any tolerance and these tests could not fail.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel
from transformers.masking_utils import AttentionMaskInterface

from tinykd import attention
from tinykd.distiller import layer_outputs, use_attention_target

# Two sequences: the second is the first three tokens of a different sentence, padded.
IDS = torch.tensor([[2, 11, 12, 13, 14, 3],
                    [2, 21, 22, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 0, 0]])
REAL = MASK.bool()


def tiny_bert(attn_dropout: float = 0.0, hidden_dropout: float = 0.0) -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, initializer_range=0.5,
                     attention_probs_dropout_prob=attn_dropout, hidden_dropout_prob=hidden_dropout)
    return BertModel(cfg).eval()


def batch(ids=IDS, mask=MASK) -> dict:
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def test_mask_functions_registered_for_both_targets():
    # Without these, an attention function under a new name silently gets no padding mask.
    for name in (attention.SCORES, attention.PROBS):
        assert name in AttentionMaskInterface()


@torch.no_grad()
def test_scores_equal_manual_qk_over_sqrt_d_with_padding():
    model = tiny_bert()
    use_attention_target(model, "scores")
    out = layer_outputs(model, batch(), need_attentions=True)
    heads, d = 2, 16 // 2
    assert len(out.attentions) == 2
    for i, layer in enumerate(model.encoder.layer):
        h = out.hidden_states[i]  # input to layer i
        b, seq, _ = h.shape
        q = layer.attention.self.query(h).view(b, seq, heads, d).transpose(1, 2)
        k = layer.attention.self.key(h).view(b, seq, heads, d).transpose(1, 2)
        manual = q @ k.transpose(-1, -2) / d**0.5
        got = out.attentions[i]
        assert got.shape == (2, heads, 6, 6)
        # scores are taken before the padding mask is added: padded keys hold raw, finite scores
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, manual, rtol=1e-5, atol=1e-5)
        assert manual.abs().max() > 0.5  # not a degenerate near-zero map


@torch.no_grad()
@pytest.mark.parametrize("target", ["scores", "probs"])
def test_padding_is_honoured(target):
    model = tiny_bert()
    use_attention_target(model, target)
    padded = layer_outputs(model, batch(), need_attentions=False).last_hidden_state
    alone = layer_outputs(model, batch(IDS[1:, :4], MASK[1:, :4]), need_attentions=False).last_hidden_state
    torch.testing.assert_close(padded[1, :4], alone[0], rtol=1e-5, atol=1e-5)
    # the same padded batch with the mask ignored gives different real-token outputs,
    # so the comparison above can detect a dropped mask
    unmasked = model(input_ids=IDS, token_type_ids=torch.zeros_like(IDS)).last_hidden_state
    assert (unmasked[1, :4] - alone[0]).abs().max() > 1e-2


@torch.no_grad()
@pytest.mark.parametrize("target", ["scores", "probs"])
def test_outputs_equal_sdpa(target):
    ref_model = tiny_bert()
    ref_model.set_attn_implementation("sdpa")
    ref = ref_model(**batch(), output_hidden_states=True)
    model = copy.deepcopy(ref_model)
    use_attention_target(model, target)
    assert model.config._attn_implementation == {"scores": attention.SCORES, "probs": attention.PROBS}[target]
    out = layer_outputs(model, batch(), need_attentions=True)
    for got, want in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(got[REAL], want[REAL], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_probs_rows_sum_to_one_and_padded_keys_are_zero():
    model = tiny_bert()
    use_attention_target(model, "probs")
    out = layer_outputs(model, batch(), need_attentions=True)
    for probs in out.attentions:
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 6), rtol=0, atol=1e-6)
        assert (probs >= 0).all()
        # example 1: keys 4 and 5 are padding, for every head and every query
        assert probs[1, :, :, 4:].abs().max() < 1e-6
        assert probs[1, :, :, :4].min() > 0
    # and the probabilities are the softmax of the scores over the real keys
    use_attention_target(model, "scores")
    scores = layer_outputs(model, batch(), need_attentions=True).attentions
    for s, p in zip(scores, out.attentions):
        torch.testing.assert_close(p[1, :, :, :4], s[1, :, :, :4].softmax(-1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p[0], s[0].softmax(-1), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_probs_in_train_mode_are_taken_before_dropout():
    # Attention dropout only; no hidden dropout, so layer 0 sees the same input in both modes.
    model = tiny_bert(attn_dropout=0.5, hidden_dropout=0.0)
    use_attention_target(model, "probs")
    eval_probs = layer_outputs(model, batch(), need_attentions=True).attentions[0]
    eval_out = layer_outputs(model, batch(), need_attentions=False).hidden_states[1]

    model.train()
    torch.manual_seed(1)
    out = layer_outputs(model, batch(), need_attentions=True)
    train_probs = out.attentions[0]
    torch.testing.assert_close(train_probs.sum(-1), torch.ones(2, 2, 6), rtol=0, atol=1e-6)
    torch.testing.assert_close(train_probs, eval_probs, rtol=1e-5, atol=1e-6)
    # dropout is still applied to what multiplies the values: layer 0's output changes
    assert (out.hidden_states[1] - eval_out).abs().max() > 1e-2
    for p in out.attentions:
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 6), rtol=0, atol=1e-6)


@pytest.mark.parametrize("grad", [True, False])
def test_uncaptured_layers_run_fused_and_the_teacher_path_gives_the_same_scores(grad):
    """capture_layers: a layer nobody reads returns an empty map (fused kernel), the others their scores;
    without gradients (a teacher) the scores and outputs equal the full path's, padding included."""
    model = tiny_bert()
    use_attention_target(model, "scores")
    with torch.enable_grad():
        full = layer_outputs(model, batch(), need_attentions=True)
    attention.capture_layers(model, [2])
    with torch.set_grad_enabled(grad):
        fast = layer_outputs(model, batch(), need_attentions=True)
    assert len(fast.attentions) == 2 and fast.attentions[0].numel() == 0
    pair = (REAL[:, :, None] & REAL[:, None, :])[:, None].expand_as(full.attentions[1])
    torch.testing.assert_close(fast.attentions[1][pair], full.attentions[1][pair], rtol=1e-5, atol=1e-5)
    for got, want in zip(fast.hidden_states, full.hidden_states):
        torch.testing.assert_close(got[REAL], want[REAL], rtol=1e-5, atol=1e-5)
    attention.capture_layers(model, None)
    assert layer_outputs(model, batch(), need_attentions=True).attentions[0].shape == full.attentions[0].shape
