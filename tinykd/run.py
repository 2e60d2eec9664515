"""Run directories, metrics, checkpoints.

A run directory holds `config.yaml` (resolved), `metrics.jsonl`, `checkpoints/last.pt`
and the exported model. Checkpoints are written to a temp file and renamed, so a kill at
any moment leaves the previous checkpoint intact. Every checkpoint path is named here.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from tinykd import distributed
from tinykd.errors import TinyKDError

CHECKPOINT = "checkpoints/last.pt"  # the run's checkpoint: every stage's, every phase's
DEEPSPEED_CHECKPOINTS = "checkpoints/deepspeed"  # engine=deepspeed: its own files, named by last.pt


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


def command_line() -> Optional[str]:
    """The command that made this run, `python -m tinykd` and its overrides as given; None when the config
    was composed in Python (no Hydra command line)."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return " ".join(["python -m tinykd", *(shlex.quote(o) for o in HydraConfig.get().overrides.task)])


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


def save_checkpoint(run_dir: Path, engine, *, phase: str, phase_index: int, step: int, state: dict) -> Path:
    """The one way a run saves itself (a collective: every rank calls it). The engine saves what it
    owns (DeepSpeed: weights and optimizer, every rank its partition), then rank 0 atomically writes
    `checkpoints/last.pt`: which phase and step, the module's weights unless the engine owns them,
    the engine's state, the stage's own `state` (e.g. the best dev record) and the RNG states."""
    engine_state = engine.save_state_collectively()
    path = run_dir / CHECKPOINT
    if not distributed.is_main():
        return path
    payload = {"phase": phase, "phase_index": phase_index, "step": step,
               "model": {} if engine.owns_module_state else engine.module.state_dict(),
               "engine": engine_state, "state": state, "rng": rng_state()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".last.pt-")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> Optional[dict]:
    """The run's checkpoint, or None when it has none."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def restore(engine, ckpt: dict) -> int:
    """The one restore path, for every stage and phase: the module's weights (unless the engine
    owns them), the engine's optimizer and schedule, the RNG states. Returns the step to continue
    from."""
    if not engine.owns_module_state:
        engine.module.load_state_dict(ckpt["model"])
    engine.load_state(ckpt["engine"])
    set_rng_state(ckpt["rng"])
    print(f"[tinykd] resumed phase {ckpt['phase']} at step {ckpt['step']}")
    return ckpt["step"]


def remaining_phases(phases: list[str], ckpt: Optional[dict]):
    """(index, name, checkpoint to resume it from or None) for each phase still to run: a resumed
    run skips the phases its checkpoint is past and resumes the one it is in."""
    at = 0 if ckpt is None else ckpt["phase_index"]
    if ckpt is not None and (at >= len(phases) or phases[at] != ckpt["phase"]):
        raise TinyKDError(
            f"The checkpoint was written in phase {ckpt['phase']!r} (number {at + 1}), but this run's phases are "
            f"{phases}.",
            "resume with the phases the run was started with, or drop resume=true to start over.")
    for index in range(at, len(phases)):
        yield index, phases[index], ckpt if index == at else None


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


def _schema_defaults() -> dict:
    """Every key's default in the typed schema (interpolations left unresolved)."""
    from tinykd.config import Config

    return _flatten(OmegaConf.to_container(OmegaConf.structured(Config), resolve=False))


def config_changes(stored_yaml: Path, cfg) -> list[tuple[str, Any, Any]]:
    """(key, stored value, value now) for each key whose resolved value differs between a run's stored
    config.yaml and `cfg`, leaving out keys that cannot change the stage's result (volatile ones, those
    the stage does not read: `config.result_depends_on`), and keys the stored run predates (added to the
    schema since) whose value now is their default: the run behaved as the default does. A missing
    config.yaml is one change, ("config.yaml", "missing", None)."""
    if not stored_yaml.is_file():
        return [("config.yaml", "missing", None)]
    a = _flatten(OmegaConf.to_container(OmegaConf.load(stored_yaml), resolve=True))
    b = _flatten(OmegaConf.to_container(cfg, resolve=True))
    from tinykd.config import result_depends_on, stage_phases

    phases = stage_phases(cfg.stage.name)

    def matters(k: str) -> bool:
        top = k.split(".")[0]
        if top in VOLATILE_KEYS or (top == "train" and k.split(".")[1] not in phases):
            return False
        return result_depends_on(cfg, k)

    defaults = _schema_defaults()

    def predates(k: str) -> bool:
        return k not in a and k in b and k in defaults and b[k] == defaults[k]

    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if matters(k) and a.get(k) != b.get(k) and not predates(k)]


def config_differences(stored_yaml: Path, cfg) -> list[str]:
    """The keys of `config_changes`: what makes a finished run another run than `cfg` asks for."""
    return [k for k, _, _ in config_changes(stored_yaml, cfg)]


# What a resumed run may change: how long each phase runs and how often it evaluates, saves and logs.
RESUMABLE_KEYS = ("max_steps", "epochs", "eval_every", "save_every", "log_every", "eval_batch_size")


def resume_conflicts(stored_yaml: Path, cfg) -> list[tuple[str, Any, Any]]:
    """The changes (`config_changes`) that a resumed run cannot take: everything but budgets and logging
    (`RESUMABLE_KEYS` of a `train.<phase>` block; volatile keys such as logger and progress never count)."""
    return [(k, old, new) for k, old, new in config_changes(stored_yaml, cfg)
            if not (k.startswith("train.") and k.rsplit(".", 1)[-1] in RESUMABLE_KEYS)]
