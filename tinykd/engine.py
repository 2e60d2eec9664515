"""Training engines: what turns a loss into parameter updates.

A stage's loop is written against the small `Engine` protocol, so the single-process
torch engine here and the DeepSpeed engine satisfy the same calls:

    with engine.autocast():
        loss = ...
    engine.backward(loss)
    if engine.step():      # True at gradient-accumulation boundaries
        step += 1
"""

from __future__ import annotations

import contextlib
import math
from typing import ContextManager, Protocol

import torch
from torch import nn
from transformers import get_scheduler

from tinykd.errors import NonFiniteLossError, TinyKDError


class Engine(Protocol):
    module: nn.Module
    device: torch.device

    def autocast(self) -> ContextManager: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> bool: ...
    def lr(self) -> float: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (BERT's convention)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TorchEngine:
    """Single process: AdamW, warmup + decay from `transformers.get_scheduler`, gradient
    accumulation, clipping, fp32 (or bf16 autocast on GPU)."""

    def __init__(self, module: nn.Module, *, lr: float, weight_decay: float, warmup_ratio: float,
                 scheduler: str, total_steps: int, grad_accum: int, max_grad_norm: float,
                 precision: str = "fp32", device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.grad_accum = grad_accum
        self.max_grad_norm = max_grad_norm
        self.precision = precision
        self.optimizer = torch.optim.AdamW(param_groups(module, weight_decay), lr=lr)
        self.scheduler = get_scheduler(scheduler, self.optimizer, num_warmup_steps=int(warmup_ratio * total_steps),
                                       num_training_steps=total_steps)
        self.micro = 0
        self.last_grad_norm = float("nan")

    def autocast(self) -> ContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> bool:
        self.micro += 1
        if self.micro % self.grad_accum:
            return False
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.last_grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        if not math.isfinite(self.last_grad_norm):
            # Checked before the update, so the weights (and any checkpoint) stay as they were.
            raise NonFiniteLossError(
                f"The gradient norm became {self.last_grad_norm} (the loss itself was finite); training stopped "
                "before the update.",
                "lower the learning rate (train.<phase>.lr) or check the inputs; resume=true continues from the "
                "last checkpoint.",
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "micro": self.micro}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]


def build_engine(engine_cfg, phase_cfg, module: nn.Module, total_steps: int) -> Engine:
    """The engine named by `engine.name`, configured from one phase's hyperparameters."""
    if engine_cfg.name == "torch":
        return TorchEngine(
            module,
            lr=phase_cfg.lr,
            weight_decay=phase_cfg.weight_decay,
            warmup_ratio=phase_cfg.warmup_ratio,
            scheduler=phase_cfg.scheduler,
            total_steps=total_steps,
            grad_accum=phase_cfg.grad_accum,
            max_grad_norm=phase_cfg.max_grad_norm,
            precision=engine_cfg.precision,
            device=pick_device(engine_cfg.device),
        )
    raise TinyKDError(f"Unknown engine '{engine_cfg.name}'.", "use engine=torch.")
