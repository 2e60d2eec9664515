"""The fast CPU dropout (tinykd/dropout.py): its rate, scale, gradient, repeatability and where it is used."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from tinykd import dropout
from tinykd.attention import implementation_for


def test_drop_rate_and_scale_match_p():
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = dropout.dropout(x, 0.1, True)
    k = dropout.drop_threshold(0.1)
    assert k == 3277  # round(0.1 * 32768)
    scale = 1 / (1 - k / 32768)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], scale))
    rate = 1 - kept.float().mean().item()
    # 400k Bernoulli(0.100006) draws: sd of the rate is 0.00047; 5 sd
    assert abs(rate - k / 32768) < 0.0024
    assert abs(y.mean().item() - 1.0) < 0.003  # inverted dropout keeps the expectation


def test_each_of_the_four_bit_pieces_is_uniform():
    """The mask cuts each 64-bit draw into four pieces: each piece position must drop at the same rate."""
    torch.manual_seed(1)
    m = dropout.keep_mask((4 * 200_000,), 0.5, torch.float32) == 0
    rates = m.view(-1, 4).float().mean(0)
    assert torch.allclose(rates, torch.full((4,), 0.5), atol=0.005), rates


def test_repeatable_under_a_seed_and_different_across_calls():
    torch.manual_seed(3)
    a = dropout.dropout(torch.ones(1000), 0.3, True)
    b = dropout.dropout(torch.ones(1000), 0.3, True)
    torch.manual_seed(3)
    assert torch.equal(dropout.dropout(torch.ones(1000), 0.3, True), a)
    assert not torch.equal(a, b)


def test_gradient_is_the_mask():
    torch.manual_seed(4)
    x = torch.randn(64, 64, requires_grad=True)
    y = dropout.dropout(x, 0.25, True)
    y.sum().backward()
    expected = torch.where(y != 0, torch.full_like(x, 1 / (1 - dropout.drop_threshold(0.25) / 32768)), 0.0)
    assert torch.allclose(x.grad, expected)


def test_eval_zero_p_and_p_one():
    x = torch.randn(10, 10)
    assert dropout.dropout(x, 0.1, False) is x
    assert dropout.dropout(x, 0.0, True) is x
    assert torch.equal(dropout.dropout(x, 1.0, True), torch.zeros_like(x))


def test_use_fast_dropout_swaps_modules_and_keeps_the_model_plain(tmp_path):
    torch.manual_seed(5)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                     num_labels=2, attn_implementation=implementation_for("probs"))
    model = BertForSequenceClassification(cfg)
    n_dropouts = sum(type(m) is nn.Dropout for m in model.modules())
    assert n_dropouts > 0
    dropout.use_fast_dropout(model)
    assert sum(type(m) is nn.Dropout for m in model.modules()) == 0
    fast = [m for m in model.modules() if isinstance(m, dropout.FastDropout)]
    assert len(fast) == n_dropouts and all(m.p == 0.1 for m in fast)
    ids = torch.randint(0, 50, (4, 12))
    model.eval()  # eval: identical to a model that never had its dropouts swapped
    plain = BertForSequenceClassification(cfg)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.allclose(model(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-6)
    model.train()  # training: the attention probabilities and hidden states are dropped, so outputs vary
    assert not torch.allclose(model(input_ids=ids).logits, model(input_ids=ids).logits)
    model.save_pretrained(tmp_path)
    assert "FastDropout" not in (tmp_path / "config.json").read_text()


def test_fast_off_is_torch_dropout():
    torch.manual_seed(6)
    a = dropout.dropout(torch.ones(100), 0.5, True, fast=False)
    torch.manual_seed(6)
    assert torch.equal(a, F.dropout(torch.ones(100), 0.5, True))
