"""Training engines: what turns a loss into parameter updates.

The training loop (`tinykd.loop.PhaseLoop`) is written against the small `Engine` protocol, so
the single-process torch engine and the DeepSpeed engine satisfy the same calls:

    with engine.autocast():
        loss = ...
    engine.backward(loss)
    if engine.step():      # True at gradient-accumulation boundaries
        step += 1

Checkpoints: `save_state_collectively()` (every rank calls it) returns what the run's checkpoint
records for the engine, and `owns_module_state` says whether the module's weights are in there (the
engine's own files) or must be saved beside it (`tinykd.run.save_checkpoint` does that).

Only the trainable module (the student and the distiller's projections) goes into an engine;
the teacher stays outside it: frozen, replicated on every rank, never partitioned by ZeRO-3.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
from pathlib import Path
from typing import ContextManager, Optional, Protocol

import torch
from torch import nn
from transformers import get_scheduler

from tinykd import distributed
from tinykd.choices import ENGINES, PRECISIONS, ZERO_STAGES
from tinykd.errors import NonFiniteLossError, TinyKDError
from tinykd.run import DEEPSPEED_CHECKPOINTS


class Engine(Protocol):
    module: nn.Module  # what the engine trains
    device: torch.device
    micro: int  # micro-batches taken so far (the next one's index)
    # True: the module's weights travel in the engine's own checkpoint files (written by
    # save_state_collectively); False: the run's checkpoint must carry `module.state_dict()`.
    owns_module_state: bool

    def autocast(self) -> ContextManager: ...
    def backward(self, loss: torch.Tensor) -> None: ...
    def step(self) -> bool: ...
    def lr(self) -> float: ...
    def save_state_collectively(self) -> dict: ...
    def load_state(self, state: dict) -> None: ...
    def gathered(self) -> ContextManager: ...


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


def adamw(groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """torch's AdamW, fused (one kernel over all parameters, CPU or CUDA) where it is available: the
    update of a 30,522-row embedding table alone is otherwise a dozen passes over 40 MB a step."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, ValueError, TypeError):  # an older torch or another device
        return torch.optim.AdamW(groups, lr=lr)


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
        self.optimizer = adamw(param_groups(module, weight_decay), lr, self.device)
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

    owns_module_state = False  # the weights travel in the run's checkpoint

    def save_state_collectively(self) -> dict:
        """Optimizer, schedule and micro-batch count, in memory (one process: nothing to write)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "micro": self.micro}

    def load_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro = state["micro"]

    def gathered(self) -> ContextManager:
        return contextlib.nullcontext()


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def deepspeed_config(*, batch_size: int, grad_accum: int, max_grad_norm: float, precision: str, zero_stage: int,
                     world_size: int, user_json: Optional[str] = None) -> dict:
    """DeepSpeed's config from the Hydra config: batch sizes, accumulation, clipping, precision and
    ZeRO stage come from one place (train.<phase>, engine.*); `engine.config` (a JSON file) is merged on
    top, key by key, for anything else (bucket sizes, offload, ...). The learning rate and its schedule
    are tinykd's (a torch AdamW and transformers' scheduler handed to DeepSpeed)."""
    if zero_stage not in ZERO_STAGES:
        raise TinyKDError(f"engine.zero_stage={zero_stage} is not a ZeRO stage.", "use 0, 1, 2 or 3.")
    if precision not in PRECISIONS:
        raise TinyKDError(f"Unknown engine.precision '{precision}'.", f"use one of: {', '.join(PRECISIONS)}.")
    cfg = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": batch_size * grad_accum * world_size,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "zero_allow_untested_optimizer": True,  # a torch AdamW: DeepSpeed's fused ones need CUDA
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if user_json:
        path = Path(user_json)
        if not path.is_file():
            raise TinyKDError(f"engine.config {path} does not exist.", "give the path of a DeepSpeed JSON config, or null.")
        try:
            extra = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TinyKDError(f"engine.config {path} is not valid JSON ({e}).", "fix the file.") from e
        cfg = _merge(cfg, extra)
    return cfg


class DeepSpeedEngine:
    """A DeepSpeed ZeRO engine (stage 0-3) around the trainable module, with tinykd's AdamW and
    schedule. Loops call the module itself (DeepSpeed's hooks on it do ZeRO-3's gathering);
    `backward` and `step` go through DeepSpeed, which averages gradients over ranks, accumulates,
    clips and steps at the boundaries.

    Checkpoints are DeepSpeed's own (every rank saves its partition) under
    `<run_dir>/checkpoints/deepspeed/<tag>`; `save_state_collectively()` writes one and returns its tag, which
    the run's `last.pt` records once the save is complete, so a kill during a save leaves the
    previous tag in force. The two newest tags are kept.
    """

    owns_module_state = True  # the weights travel in DeepSpeed's checkpoint, not in last.pt

    def __init__(self, module: nn.Module, *, lr: float, weight_decay: float, warmup_ratio: float, scheduler: str,
                 total_steps: int, grad_accum: int, max_grad_norm: float, batch_size: int, precision: str = "fp32",
                 zero_stage: int = 2, user_json: Optional[str] = None, device_name: str = "auto",
                 run_dir: Optional[Path] = None, label: str = "train", keep: int = 2):
        self.device = distributed.init(device_name)
        if self.device.type == "cpu" and precision != "fp32":
            raise TinyKDError(f"engine=deepspeed on CPU trains in fp32, not {precision}.",
                              "set engine.precision=fp32, or run on a GPU.")
        import deepspeed

        self.zero_stage = zero_stage
        self.precision = precision
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.label = label  # names this loop's checkpoint tags (a stage with several phases has one engine each)
        self.keep = keep  # tags kept: one for each of the run's checkpoints (last.pt, last.1.pt, ...)
        self.module = module.to(self.device)
        optimizer = adamw(param_groups(module, weight_decay), lr, self.device)
        sched = get_scheduler(scheduler, optimizer, num_warmup_steps=int(warmup_ratio * total_steps),
                              num_training_steps=total_steps)
        config = deepspeed_config(batch_size=batch_size, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
                                  precision=precision, zero_stage=zero_stage,
                                  world_size=distributed.world_size(), user_json=user_json)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=sched, config=config)
        self.micro = 0
        self.last_grad_norm = float("nan")

    def autocast(self) -> ContextManager:
        if self.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)  # DeepSpeed scales by 1/grad_accum itself

    def step(self) -> bool:
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        self.micro += 1
        if boundary:
            norm = self.engine.get_global_grad_norm()
            self.last_grad_norm = float(norm) if norm is not None else float("nan")
            if norm is not None and not math.isfinite(self.last_grad_norm):
                raise NonFiniteLossError(
                    f"The gradient norm became {self.last_grad_norm} (the loss itself was finite); training stopped.",
                    "lower the learning rate (train.<phase>.lr) or check the inputs; resume=true continues from the "
                    "last checkpoint, written before this step.")
        return boundary

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def _dir(self) -> Path:
        if self.run_dir is None:
            raise TinyKDError("engine=deepspeed needs the run directory to checkpoint into.",
                              "pass run_dir to build_engine (a stage bug: please report it).")
        return self.run_dir / DEEPSPEED_CHECKPOINTS

    def save_state_collectively(self) -> dict:
        """Save a DeepSpeed checkpoint (a collective: every rank calls it) and return its tag."""
        root = self._dir()
        tag = f"{self.label}-micro{self.micro:08d}"
        self.engine.save_checkpoint(str(root), tag=tag, save_latest=False)
        distributed.barrier()
        if distributed.is_main():  # keep this tag and those the kept checkpoints name (last.pt until it is replaced)
            tags = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
            for old in tags[:-(self.keep + 1)]:
                shutil.rmtree(old, ignore_errors=True)
        return {"deepspeed_tag": tag, "micro": self.micro, "zero_stage": self.zero_stage}

    def load_state(self, state: dict) -> None:
        if state.get("zero_stage") != self.zero_stage:
            raise TinyKDError(f"This run's checkpoint was written with engine.zero_stage={state.get('zero_stage')}, "
                              f"not {self.zero_stage}.", f"resume with engine.zero_stage={state.get('zero_stage')}.")
        path, _ = self.engine.load_checkpoint(str(self._dir()), tag=state["deepspeed_tag"])
        if path is None:
            raise TinyKDError(f"DeepSpeed checkpoint {self._dir() / state['deepspeed_tag']} could not be loaded.",
                              "start a fresh run (drop resume=true).")
        self.micro = state["micro"]

    def gathered(self) -> ContextManager:
        """Full parameters on every rank inside the block (ZeRO-3 partitions them): for export."""
        if self.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()


def build_engine(engine_cfg, hp, module: nn.Module, total_steps: int, *, run_dir: Path,
                 label: str, keep: int = 2) -> Engine:
    """The engine named by `engine.name`, configured from one phase's hyperparameters. `run_dir` and
    `label` say where a DeepSpeed engine checkpoints and what its tags are called. With
    `engine.fast_dropout`, the module's dropouts draw their CPU masks the fast way (tinykd/dropout.py)."""
    if getattr(engine_cfg, "fast_dropout", False):
        from tinykd.dropout import use_fast_dropout

        use_fast_dropout(module)
    if engine_cfg.name == "deepspeed":
        return DeepSpeedEngine(
            module, lr=hp.lr, weight_decay=hp.weight_decay, warmup_ratio=hp.warmup_ratio,
            scheduler=hp.scheduler, total_steps=total_steps, grad_accum=hp.grad_accum,
            max_grad_norm=hp.max_grad_norm, batch_size=hp.batch_size, precision=engine_cfg.precision,
            zero_stage=engine_cfg.zero_stage, user_json=engine_cfg.config, device_name=engine_cfg.device,
            run_dir=run_dir, label=label, keep=keep)
    if engine_cfg.name == "torch":
        return TorchEngine(
            module,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            warmup_ratio=hp.warmup_ratio,
            scheduler=hp.scheduler,
            total_steps=total_steps,
            grad_accum=hp.grad_accum,
            max_grad_norm=hp.max_grad_norm,
            precision=engine_cfg.precision,
            device=pick_device(engine_cfg.device),
        )
    raise TinyKDError(f"Unknown engine '{engine_cfg.name}'.", f"use engine= one of: {', '.join(ENGINES)}.")
