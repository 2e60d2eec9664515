"""The torch engine: accumulation, clipping, schedule, non-finite gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinykd.engine import TorchEngine, param_groups
from tinykd.errors import NonFiniteLossError


def engine_for(module, **kw):
    args = dict(lr=0.1, weight_decay=0.0, warmup_ratio=0.0, scheduler="constant", total_steps=10, grad_accum=1,
                max_grad_norm=1e9)
    args.update(kw)
    return TorchEngine(module, **args)


def test_accumulation_steps_every_k_micro_batches_and_averages():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 1, bias=False), nn.Linear(3, 1, bias=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3)
    ea, eb = engine_for(a, grad_accum=2), engine_for(b, grad_accum=1)
    # two micro-batches of 2 with accumulation == one batch of 4
    ea.backward(a(x[:2]).pow(2).mean())
    assert ea.step() is False
    ea.backward(a(x[2:]).pow(2).mean())
    assert ea.step() is True
    eb.backward(b(x).pow(2).mean())
    assert eb.step() is True
    torch.testing.assert_close(a.weight, b.weight)


def test_linear_warmup_then_decay():
    m = nn.Linear(2, 1)
    e = engine_for(m, scheduler="linear", warmup_ratio=0.2, total_steps=10, lr=1.0)
    lrs = []
    for _ in range(10):
        e.backward(m(torch.ones(1, 2)).sum())
        e.step()
        lrs.append(e.lr())
    # warmup 2 steps (0 -> 1), then linear decay to 0 at step 10
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.0)
    assert all(x >= y for x, y in zip(lrs[1:], lrs[2:]))


def test_clipping_bounds_the_update():
    m = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(m.weight)
    e = engine_for(m, max_grad_norm=0.5, lr=1.0)
    e.backward(m(torch.tensor([[1000.0]])).sum() * 1000)  # gradient 1e6
    e.step()
    assert e.last_grad_norm == pytest.approx(1e6)  # reported before clipping
    # AdamW's first moment after one step is (1 - beta1) * the gradient it was given: the clipped one
    exp_avg = e.optimizer.state[m.weight]["exp_avg"]
    assert exp_avg.abs().item() == pytest.approx(0.1 * 0.5, rel=1e-5)


def test_non_finite_gradient_stops_before_the_update():
    m = nn.Linear(2, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    e = engine_for(m)
    e.backward(m(torch.tensor([[float("inf"), 1.0]])).sum())
    with pytest.raises(NonFiniteLossError, match="gradient norm"):
        e.step()
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_no_weight_decay_on_bias_and_layernorm():
    m = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    decay, no_decay = param_groups(m, 0.01)
    assert [p.shape for p in decay["params"]] == [torch.Size([2, 2])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0
