"""Run directories, metrics, checkpoints.

A run directory holds `config.yaml` (resolved), `metrics.jsonl`, `checkpoints/last.pt`
and the exported model. Checkpoints are written to a temp file and renamed, so a kill at
any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from tinykd import distributed
from tinykd.errors import NonFiniteLossError, TinyKDError

CHECKPOINT = "checkpoints/last.pt"


def prepare_run_dir(path: str, resume: bool) -> Path:
    """Create the run directory. Without `resume`, an earlier run there (a checkpoint or
    results) is moved aside (`<dir>.prev-<time>`), never deleted; with it, its checkpoint
    must exist. In a job of several ranks, rank 0 prepares it and the others wait."""
    run_dir = Path(path)
    if resume:
        if not (run_dir / CHECKPOINT).is_file():
            raise TinyKDError(
                f"resume=true but {run_dir / CHECKPOINT} does not exist.",
                "drop resume=true to start a new run, or point the run at the directory of the interrupted run.",
            )
        return run_dir
    if not distributed.is_main():
        distributed.barrier()
        return run_dir
    if (run_dir / CHECKPOINT).is_file() or (run_dir / "results.json").is_file():
        aside = run_dir.with_name(f"{run_dir.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(run_dir, aside)
        print(f"[tinykd] an earlier run in {run_dir} was moved to {aside}")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # left by a run that stopped before its first checkpoint
    distributed.barrier()
    return run_dir


def save_config(run_dir: Path, cfg) -> None:
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file and a rename (rank 0 only in a job of several ranks)."""
    if not distributed.is_main():
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run directory is meant to be shared and read
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    """Atomically write `checkpoints/last.pt`: model, projections, optimizer, scheduler, step, RNG
    (rank 0 only; with engine=deepspeed the weights and optimizer are in DeepSpeed's checkpoint,
    whose tag this file records)."""
    path = run_dir / CHECKPOINT
    if not distributed.is_main():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".last.pt-")
    os.close(fd)
    torch.save({**state, "rng": rng_state()}, tmp)
    os.replace(tmp, path)
    return path


def restore(run_dir: Path, resume: bool, module: torch.nn.Module, engine) -> int:
    """With `resume`, load model, optimizer/scheduler and RNG state from the run's checkpoint.
    Returns the step to continue from (0 for a fresh run)."""
    ckpt = load_checkpoint(run_dir) if resume else None
    if ckpt is None:
        return 0
    if not getattr(engine, "owns_module_state", False):
        module.load_state_dict(ckpt["model"])
    engine.load_state_dict(ckpt["engine"])
    set_rng_state(ckpt["rng"])
    print(f"[tinykd] resumed from step {ckpt['step']}")
    return ckpt["step"]


def load_checkpoint(run_dir: Path) -> Optional[dict]:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


# ----------------------------------------------------------------------------- metrics


class MetricsLogger:
    """`metrics.jsonl` always; Weights & Biases too when `logger.name=wandb`. Rank 0 only."""

    def __init__(self, run_dir: Path, logger_cfg, cfg, job: str):
        self.path = run_dir / "metrics.jsonl"
        self.wandb = None
        self.enabled = distributed.is_main()
        if not self.enabled:
            return
        if logger_cfg.name == "wandb" and logger_cfg.mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=logger_cfg.project,
                group=logger_cfg.group,
                job_type=job,
                name=f"{job}-{run_dir.name}",
                dir=str(run_dir),
                mode=os.environ.get("WANDB_MODE", logger_cfg.mode),
                config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous",
            )
        elif logger_cfg.name not in ("wandb", "none"):
            raise TinyKDError(f"Unknown logger '{logger_cfg.name}'.", "use logger=wandb or logger=none.")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def check_finite(loss: torch.Tensor, parts: dict, step: int, run_dir: Path) -> None:
    """Stop on NaN/inf before it reaches the weights; the last checkpoint stays as it was."""
    if not math.isfinite(float(loss.detach())):
        bad = [k for k, v in parts.items() if not math.isfinite(float(v))]
        ckpt = run_dir / CHECKPOINT
        kept = f"the last good checkpoint is {ckpt} (resume=true continues from it)" if ckpt.is_file() else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"Loss became {float(loss.detach())} at step {step} (non-finite parts: {bad or ['total']}); training stopped and "
            f"{kept}.",
            "lower the learning rate (train.<phase>.lr) or check the inputs. If the loss blew up over several "
            "steps, the last checkpoint may already hold diverged weights: start a fresh run rather than resuming.",
        )



# Keys that do not change what a run computes.
VOLATILE_KEYS = ("resume", "reuse", "progress", "interrupt_after", "logger")


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


# The optimiser blocks (train.<phase>) each stage reads; another stage's budget does not change its result.
STAGE_PHASES = {"teacher": ("teacher",), "general": ("general",),
                "task": ("task_intermediate", "task_prediction", "task_finetune", "bilstm_representation", "bilstm_logits",
                         "bilstm_finetune"),
                "mlm_head": ("mlm_head",), "augment": ()}


def _schema_defaults() -> dict:
    """Every key's default in the typed schema (interpolations left unresolved)."""
    from tinykd.config import Config

    return _flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))


def config_differences(stored_yaml: Path, cfg) -> list[str]:
    """Keys whose resolved values differ between a run's stored config.yaml and `cfg`,
    leaving out keys that cannot change the stage's result, and keys the stored run predates
    (added to the schema since) whose value now is their default: the run behaved as the
    default does."""
    if not stored_yaml.is_file():
        return ["config.yaml missing"]
    a = _flatten(OmegaConf.to_container(OmegaConf.load(stored_yaml), resolve=True))
    b = _flatten(OmegaConf.to_container(cfg, resolve=True))
    phases = STAGE_PHASES.get(cfg.stage.name)

    def matters(k: str) -> bool:
        top = k.split(".")[0]
        if top in VOLATILE_KEYS:
            return False
        return not (top == "train" and phases is not None and k.split(".")[1] not in phases)

    defaults = _schema_defaults()

    def predates(k: str) -> bool:
        return k not in a and k in b and k in defaults and b[k] == defaults[k]

    keys = sorted(set(a) | set(b))
    return [k for k in keys if matters(k) and a.get(k) != b.get(k) and not predates(k)]
