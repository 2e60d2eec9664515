"""The one loop helper (tinykd/loop.py) on a linear model: cadence, budget, checkpoints, resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tinykd.data.batches import Batcher
from tinykd.engine import TorchEngine
from tinykd.errors import NonFiniteLossError, TinyKDError
from tinykd.loop import PhaseLoop, StepBudget
from tinykd.run import load_checkpoint, remaining_phases


def make_loop(tmp_path, parts, *, total=6, save_every=4, grad_accum=1, budget=None, resume_from=None,
              seed=0, name="phase", index=0):
    tok, ds, logger = parts
    torch.manual_seed(seed)
    module = nn.Linear(3, 1)
    engine = TorchEngine(module, lr=0.1, weight_decay=0.0, warmup_ratio=0.0, scheduler="constant", total_steps=total,
                         grad_accum=grad_accum, max_grad_norm=1.0)
    hp = SimpleNamespace(eval_every=2, save_every=save_every, log_every=1)
    loop = PhaseLoop(name, engine=engine, batcher=Batcher(ds, tok, 2, seed=0), hp=hp, total=total, run_dir=tmp_path,
                     logger=logger, budget=budget or StepBudget(), progress=False, index=index,
                     resume_from=resume_from)
    return loop, module


def train(loop, module, evals: list | None = None) -> None:
    for batch in loop:
        x = batch["input_ids"].float()
        loss = (module(x).squeeze(-1) - batch["labels"]).pow(2).mean()
        if loop.update(loss, {"mse": loss.detach()}, items=x.size(0)):
            if evals is not None and loop.eval_due:
                evals.append(loop.step)
            loop.checkpoint(note=loop.step)


def records(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_steps_logs_evals_and_checkpoints_on_their_cadence(tmp_path, parts, monkeypatch):
    import tinykd.loop

    saved = []
    real = tinykd.loop.save_checkpoint

    def spy(run_dir, engine, **kw):
        saved.append(kw["step"])
        return real(run_dir, engine, **kw)

    monkeypatch.setattr(tinykd.loop, "save_checkpoint", spy)
    loop, module = make_loop(tmp_path, parts, total=6, save_every=4)
    evals = []
    train(loop, module, evals)
    assert loop.step == 6 and loop.finished and not loop.interrupted
    assert evals == [2, 4, 6]  # every eval_every steps and at the last
    assert saved == [4, 6]  # every save_every steps and at the last
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) >= {"phase", "loss", "lr", "examples_per_s", "loss/mse"} for r in records(tmp_path))
    ckpt = load_checkpoint(tmp_path)
    assert (ckpt["phase"], ckpt["phase_index"], ckpt["step"], ckpt["state"]) == ("phase", 0, 6, {"note": 6})
    assert ckpt["model"].keys() == module.state_dict().keys()


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, parts):
    loop, module = make_loop(tmp_path, parts, total=3, grad_accum=2)
    train(loop, module)
    assert loop.step == 3 and loop.engine.micro == 6


def test_budget_spent_mid_phase_interrupts_and_saves(tmp_path, parts):
    budget = StepBudget(limit=3)
    loop, module = make_loop(tmp_path, parts, total=6, save_every=100, budget=budget)
    train(loop, module)
    assert loop.step == 3 and loop.interrupted
    assert load_checkpoint(tmp_path)["step"] == 3  # saved at the interruption, off the save cadence


def test_budget_spent_at_a_phases_last_step_takes_no_step_of_the_next(tmp_path, parts):
    budget = StepBudget(limit=6)
    first, module = make_loop(tmp_path, parts, total=6, budget=budget)
    train(first, module)
    assert first.finished and not first.interrupted
    second, module2 = make_loop(tmp_path, parts, total=6, budget=budget, name="next", index=1)
    train(second, module2)
    assert second.step == 0 and second.interrupted
    assert load_checkpoint(tmp_path)["phase"] == "phase"  # the next phase wrote nothing


def test_resume_from_the_checkpoint_equals_an_uninterrupted_loop(tmp_path, parts):
    whole, w_module = make_loop(tmp_path / "a", parts, total=6)
    (tmp_path / "a").mkdir()
    train(whole, w_module)
    (tmp_path / "b").mkdir()
    cut, c_module = make_loop(tmp_path / "b", parts, total=6, budget=StepBudget(limit=3))
    train(cut, c_module)
    resumed, r_module = make_loop(tmp_path / "b", parts, total=6, seed=123, resume_from=load_checkpoint(tmp_path / "b"))
    assert resumed.step == 3
    train(resumed, r_module)
    for k, v in w_module.state_dict().items():
        torch.testing.assert_close(r_module.state_dict()[k], v)


def test_forgetting_checkpoint_after_a_step_is_a_stage_bug(tmp_path, parts):
    loop, module = make_loop(tmp_path, parts)
    with pytest.raises(RuntimeError, match="call loop.checkpoint"):
        for batch in loop:
            loss = module(batch["input_ids"].float()).pow(2).mean()
            loop.update(loss, {}, items=1)


def test_non_finite_loss_stops_before_the_update(tmp_path, parts):
    loop, module = make_loop(tmp_path, parts)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match=r"Loss became nan at step 1 of phase phase \(non-finite parts: \['x'\]\)"):
        for _ in loop:
            loop.update(torch.tensor(float("nan"), requires_grad=True), {"x": torch.tensor(float("nan"))}, items=1)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_remaining_phases_skips_finished_ones_and_refuses_other_phases():
    ckpt = {"phase": "prediction", "phase_index": 1}
    assert [(i, n, r is ckpt) for i, n, r in remaining_phases(["intermediate", "prediction"], ckpt)] == \
        [(1, "prediction", True)]
    assert [(i, n, r) for i, n, r in remaining_phases(["intermediate", "prediction"], None)] == \
        [(0, "intermediate", None), (1, "prediction", None)]
    with pytest.raises(TinyKDError, match="written in phase 'prediction'"):
        list(remaining_phases(["finetune"], ckpt))
