"""Run directories, metrics, checkpoints.

A run directory holds `config.yaml` (resolved), `metrics.jsonl`, `checkpoints/last.pt`
and the exported model. Checkpoints are written to a temp file and renamed, so a kill at
any moment leaves the previous checkpoint intact. Every checkpoint path is named here.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import sys
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from tinykd import distributed
from tinykd.atomic import atomic_write_text, disk_full, fsync_dir
from tinykd.errors import TinyKDError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT = f"{CHECKPOINT_DIR}/last.pt"  # the run's newest checkpoint: every stage's, every phase's
DEEPSPEED_CHECKPOINTS = "checkpoints/deepspeed"  # engine=deepspeed: its own files, named by last.pt
RESULTS = "results.json"  # a finished run's record (its scores, where its export is): written last, so it marks the end
CONFIG = "config.yaml"  # the resolved config the run ran with
METRICS = "metrics.jsonl"  # one JSON line per logged step and evaluation
COMMANDS = "commands.txt"  # every command that ran in a run directory, one line each: its time, then the command


NAME_MAX = 255  # bytes in one file name (ext4, xfs, tmpfs, APFS)
STAMP = "%Y%m%d-%H%M%S"  # the time a run was moved aside, in its new name


def beside(run_dir: Path, prefix: str = "", suffix: str = "") -> Path:
    """A name for something kept beside `run_dir` (its lock, the runs moved aside from it): `run_dir`'s name
    between `prefix` and `suffix`. A sweep trial's directory is named by its overrides and may be near the
    file system's limit; past it, the name keeps its start and ends in a hash of the whole (the same name
    each time)."""
    name = run_dir.name
    room = NAME_MAX - len(prefix.encode()) - len(suffix.encode())
    if len(name.encode()) > room:
        import hashlib

        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = name.encode()[: room - len(digest) - 1].decode(errors="ignore") + "-" + digest
    return run_dir.parent / f"{prefix}{name}{suffix}"


def _aside_prefix(run_dir: Path) -> str:
    """What the names of the runs moved aside from `run_dir` start with (then the time)."""
    width = len("20260101-000000")  # STAMP's
    return beside(run_dir, suffix=".prev-" + "0" * width).name[:-width]


def prepare_run_dir(path: str, resume: bool, keep_previous: int = 2) -> Path:
    """Create the run directory. Without `resume`, an earlier run there (a checkpoint or
    results) is moved aside (`<dir>.prev-<time>`), and of the runs moved aside from this directory the
    `keep_previous` newest are kept, older ones deleted (each named); with it, its checkpoint
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
    if (run_dir / CHECKPOINT).is_file() or (run_dir / RESULTS).is_file():
        aside = move_aside(run_dir, keep_previous)
        print(f"[tinykd] an earlier run in {run_dir} was moved to {aside}")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS).unlink(missing_ok=True)  # left by a run that stopped before its first checkpoint
    distributed.barrier()
    return run_dir


def move_aside(run_dir: Path, keep_previous: int) -> Path:
    """Rename `run_dir` to `<dir>.prev-<time>` and delete all but the `keep_previous` newest runs moved aside
    from it; returns the new name."""
    aside = run_dir.with_name(_aside_prefix(run_dir) + time.strftime(STAMP))
    os.replace(run_dir, aside)
    prune_previous(run_dir, keep_previous)
    return aside


def previous_runs(run_dir: Path) -> list[Path]:
    """The runs moved aside from `run_dir`, oldest first (their names end in the time they were moved)."""
    prefix = _aside_prefix(run_dir)
    return sorted(p for p in run_dir.parent.glob(glob.escape(prefix) + "*") if p.is_dir())


def prune_previous(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest runs moved aside from `run_dir`; returns what was deleted."""
    import shutil

    old = previous_runs(run_dir)
    doomed = old[: max(0, len(old) - keep)]
    for p in doomed:
        shutil.rmtree(p)
        print(f"[tinykd] deleted {p} (keep_previous={keep}: the newest {keep} moved-aside runs are kept)")
    return doomed


def write_results(run_dir: Path, result: dict) -> None:
    """The run's record (`RESULTS`), written whole: a run directory with it is finished."""
    atomic_write_text(run_dir / RESULTS, json.dumps(result, indent=2))


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS).read_text())


def is_finished(run_dir: Path) -> bool:
    return (run_dir / RESULTS).is_file()


def save_config(run_dir: Path, cfg) -> None:
    """The resolved config (`config.yaml`), and the command line with its overrides appended to `commands.txt`
    (a resumed run adds its own line)."""
    atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    command = command_line()
    if command is not None:
        log = run_dir / COMMANDS
        before = log.read_text() if log.is_file() else ""
        atomic_write_text(log, f"{before}{time.strftime('%Y-%m-%dT%H:%M:%S')} {command}\n")


def given_overrides() -> Optional[list[str]]:
    """The command line's overrides as given; None when the config was composed in Python (no Hydra
    command line)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def command_line(overrides: Optional[list[str]] = None) -> Optional[str]:
    """`python -m tinykd` and `overrides` (default: this run's, as given); None when the config was composed
    in Python."""
    import shlex

    overrides = given_overrides() if overrides is None else overrides
    if overrides is None:
        return None
    return " ".join(["python -m tinykd", *(shlex.quote(o) for o in overrides)])


# ----------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    """Every RNG's state as tensors and plain values only (numpy's key as a list): a checkpoint loads with
    `torch.load(weights_only=True)`."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


FORMAT = 1  # the layout of checkpoints/last.pt; a checkpoint of another format is refused by name


def checkpoint_paths(run_dir: Path, keep: int) -> list[Path]:
    """The run's checkpoints, newest first: `last.pt`, then `last.1.pt` (the one before it), ... (`keep` in all)."""
    last = run_dir / CHECKPOINT
    return [last, *(last.with_name(f"last.{i}.pt") for i in range(1, keep))]


def save_checkpoint(run_dir: Path, engine, *, phase: str, phase_index: int, step: int, state: dict,
                    keep: int = 2) -> Path:
    """The one way a run saves itself (a collective: every rank calls it). The engine saves what it
    owns (DeepSpeed: weights and optimizer, every rank its partition), then rank 0 writes
    `checkpoints/last.pt`: which phase and step, the module's weights unless the engine owns them,
    the engine's state, the stage's own `state` (e.g. the best dev record) and the RNG states, as tensors
    and plain values only. The new file is written whole and fsynced before the older ones move down
    (`last.1.pt`, ...; `keep` in all), so a crash or a full disk at any moment leaves a readable one."""
    engine_state = engine.save_state_collectively()
    paths = checkpoint_paths(run_dir, keep)
    if not distributed.is_main():
        return paths[0]
    payload = {"format": FORMAT, "phase": phase, "phase_index": phase_index, "step": step,
               "model": {} if engine.owns_module_state else engine.module.state_dict(),
               "engine": engine_state, "state": state, "rng": rng_state()}
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    kept = f"; the last checkpoint, {paths[0]}, is intact" if paths[0].is_file() else ""
    fd, tmp = tempfile.mkstemp(dir=paths[0].parent, prefix=".last.pt-")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # last.1.pt -> last.2.pt -> ...; then last.pt is linked (not moved) to last.1.pt: at every moment a
        # last.pt exists, the old one until the new one replaces it
        for older, newer in zip(reversed(paths[2:]), reversed(paths[1:-1])):
            if newer.is_file():
                os.replace(newer, older)
        if len(paths) > 1 and paths[0].is_file():
            link = paths[0].with_name(f".last.1.pt-{os.getpid()}")
            link.unlink(missing_ok=True)
            try:
                os.link(paths[0], link)
            except OSError:  # a file system without hard links: a copy
                import shutil

                shutil.copyfile(paths[0], link)
            os.replace(link, paths[1])
        os.replace(tmp, paths[0])
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(paths[0], e, kept) from None
        raise
    fsync_dir(paths[0].parent)
    return paths[0]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or ["no message"])[0]


class CheckpointError(TinyKDError):
    """A checkpoint file that cannot be used: unreadable, not tinykd's, or holding code."""


def read_checkpoint(path: Path) -> dict:
    """One checkpoint file, loaded without unpickling anything but tensors and plain values (a file that
    would construct other objects, and so could run code, is refused); `CheckpointError` names the file."""
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # not a pickle at all: bytes that are no checkpoint
            raise CheckpointError(f"{path} is truncated or corrupted (not a readable checkpoint).",
                                  "drop resume=true to start over.") from None
        named = [x.strip() for x in str(e).splitlines() if "global" in x.lower()]
        raise CheckpointError(f"{path} holds objects other than tensors and plain values ({named[0]}): refused, "
                              "as loading it could run code.",
                              "use checkpoints tinykd wrote; drop resume=true to start over.") from None
    except Exception as e:  # whatever bytes that are no checkpoint make torch.load raise: named, never a traceback
        raise CheckpointError(f"{path} is truncated or corrupted ({type(e).__name__}: {_first_line(e)}).",
                              "drop resume=true to start over.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a tinykd checkpoint of format {FORMAT} (found: {found!r}).",
                              "resume it with the tinykd version that wrote it, or drop resume=true to start over.")
    return ckpt


def load_checkpoint(run_dir: Path, keep: int = 2) -> Optional[dict]:
    """The run's newest readable checkpoint, or None when it has none. One that cannot be read (truncated,
    corrupted, another format, or holding code) is named and the one before it is tried; when none can be
    read, a `CheckpointError` names each file and why."""
    problems = []
    for path in checkpoint_paths(run_dir, keep):
        if not path.is_file():
            continue
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            problems.append(e.problem)
            print(f"[tinykd] {e.problem} Trying the checkpoint before it.", file=sys.stderr)
            continue
        ckpt["path"] = str(path)
        return ckpt
    if problems:
        raise CheckpointError(f"No readable checkpoint in {run_dir / CHECKPOINT_DIR}: {' '.join(problems)}",
                              "drop resume=true to start a new run (this one is moved aside, not deleted).")
    return None


def restore(engine, ckpt: dict) -> int:
    """The one restore path, for every stage and phase: the module's weights (unless the engine
    owns them), the engine's optimizer and schedule, the RNG states. Returns the step to continue
    from."""
    if not engine.owns_module_state:
        try:
            engine.module.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # another model's checkpoint
            raise CheckpointError(f"{ckpt.get('path', CHECKPOINT)} does not fit this run's model "
                                  f"({_first_line(e)} ...).",
                                  "resume with the config the run was started with, or drop resume=true.") from None
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


def _last_elapsed(path: Path) -> float:
    """The `elapsed_s` of a metrics file's last record that has one (0 for a new run)."""
    if not path.is_file():
        return 0.0
    for line in reversed(path.read_text().splitlines()):
        try:
            value = json.loads(line).get("elapsed_s")
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut by a kill
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


class MetricsLogger:
    """`metrics.jsonl` always; Weights & Biases too when `logger.name=wandb`. Rank 0 only. Every record carries
    `elapsed_s`: seconds since the run began (a resumed run continues from its last record's), what a curve of
    score against training time reads."""

    def __init__(self, run_dir: Path, logger_cfg, cfg, job: str):
        self.path = run_dir / METRICS
        self.start = time.perf_counter() - _last_elapsed(self.path)
        self.wandb = None
        self.enabled = distributed.is_main()
        if not self.enabled:
            return
        if logger_cfg.name == "wandb" and logger_cfg.mode != "disabled":
            os.environ.setdefault("WANDB_SILENT", "true")  # its banner and summary: tinykd says it in one line
            import wandb

            mode = os.environ.get("WANDB_MODE", logger_cfg.mode)
            # The process-wide settings too: from them wandb builds its usage telemetry, whose first export
            # probes the W&B server (offline, without a network: a DNS wait of tens of seconds)
            wandb.setup(settings=wandb.Settings(mode=mode))
            self.wandb = wandb.init(
                project=logger_cfg.project,
                group=logger_cfg.group,
                job_type=job,
                name=f"{job}-{run_dir.name}",
                dir=str(run_dir),
                mode=mode,
                config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous",
            )
            mode = self.wandb.settings.mode
            print(f"[tinykd] Weights & Biases ({mode}): " + (
                f"sync it later with `wandb sync {Path(self.wandb.dir).parent}`" if mode == "offline"
                else str(self.wandb.url or self.wandb.dir)))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        record["elapsed_s"] = round(time.perf_counter() - self.start, 2)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


# Keys that do not change what a run computes.
VOLATILE_KEYS = ("resume", "reuse", "progress", "interrupt_after", "logger", "name", "keep_previous",
                 "keep_checkpoints", "trust_remote_code", "paths")  # paths: the data a run reads is compared as
# task.* (resolved); where runs and caches live changes nothing computed
VOLATILE_NESTED = ("engine.num_threads",)


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
        return [(CONFIG, "missing", None)]
    a = _flatten(OmegaConf.to_container(OmegaConf.load(stored_yaml), resolve=True))
    b = _flatten(OmegaConf.to_container(cfg, resolve=True))
    from tinykd.config import result_depends_on, stage_phases

    phases = stage_phases(cfg.stage.name)

    def matters(k: str) -> bool:
        top = k.split(".")[0]
        if top in VOLATILE_KEYS or k in VOLATILE_NESTED or (top == "train" and k.split(".")[1] not in phases):
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


# ----------------------------------------------------------------------------- upstream runs

# What a run that another stage reads must share with the stage reading it: the data and task a teacher
# was fine-tuned on (and the model it started from), the teacher a general student was distilled from
# (its vocabulary), the data an augmentation run read. Budgets, limits and lengths may differ.
TEACHER_KEYS = ("teacher.name", "teacher.path", "teacher.package")
DATA_KEYS = tuple(f"task.{k}" for k in (
    "name", "source", "data_dir", "train", "dev", "format", "hub", "hub_config", "text_columns", "label_column",
    "label_columns", "labels", "problem_type", "type", "tokens_column", "tags_column", "conll_token_column",
    "conll_tag_column", "tag_scheme", "id_column", "question_column", "context_column", "answers_column"))
UPSTREAM_KEYS = {"teacher": DATA_KEYS + TEACHER_KEYS, "general": TEACHER_KEYS, "augment": DATA_KEYS}


def _same(a: Any, b: Any) -> bool:
    """Equal values; paths that name the same file or directory count as equal."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return False


def identity_changes(made_by: Path, cfg, stage: str) -> list[tuple[str, Any, Any]]:
    """(key, value in the `stage` run in `made_by`, value in `cfg`) for each of `UPSTREAM_KEYS[stage]` that
    differs: the run was made for other data, task or teacher. Empty when `made_by` holds no tinykd
    config.yaml of that stage (a model of your own)."""
    stored = made_by / CONFIG
    if not stored.is_file():
        return []
    a = _flatten(OmegaConf.to_container(OmegaConf.load(stored), resolve=True))
    if a.get("stage.name") not in (stage, "pipeline"):
        return []
    b = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return [(k, a.get(k), b.get(k)) for k in UPSTREAM_KEYS[stage] if not _same(a.get(k), b.get(k))]


def _shown(diff, there: str = "there", here: str = "here") -> str:
    return "; ".join(f"{k}: {old!r} {there}, {new!r} {here}" for k, old, new in diff)


def check_upstream(cfg, made_by: Path, stage: str) -> None:
    """Refuse to read the output of a `stage` run (its run directory `made_by`) that was made for other data,
    task or teacher than `cfg`'s (`identity_changes`), both values shown."""
    diff = identity_changes(made_by, cfg, stage)
    if diff:
        shown = _shown(diff)
        raise TinyKDError(
            f"The {stage} run in {made_by} was made for other data or another model than this run: {shown}.",
            f"run stage={stage} with this run's values (it writes to another directory with name=<a name>), point "
            f"runs.{stage}= at a {stage} run made for them, or give this run the {stage} run's values.")


def check_replaceable(cfg, run_dir: Path, stage: str) -> None:
    """A new `stage` run would move aside the one in `run_dir`: refuse when that one was made for other data or
    another teacher (the stages that read `run_dir` would then read this one without a word)."""
    if stage not in UPSTREAM_KEYS or not ((run_dir / RESULTS).is_file() or (run_dir / CHECKPOINT).is_file()):
        return
    diff = identity_changes(run_dir, cfg, stage)
    if diff:
        raise TinyKDError(
            f"{run_dir} holds a {stage} run made for other data or another model ({_shown(diff, 'there', 'now')}); "
            f"this run would move it aside, and the stages that read {run_dir} would then read this one.",
            f"give this run its own directory: name=<a name> (then runs/<stage>/<name> for every stage of it), or "
            f"runs.{stage}=<dir>.")


_LOCKS: dict[str, int] = {}  # run directory -> the open lock file this process holds for it


def lock_path(run_dir: Path) -> Path:
    """The lock of a run directory: beside it (the directory itself may be moved aside by a new run)."""
    return beside(run_dir, ".", ".lock")


def lock_run_dir(run_dir: Path) -> bool:
    """Hold `run_dir` for this process until it exits: a second process on the same directory is refused
    with the first one's PID. The lock is the kernel's (flock) on a file beside the directory, so a process
    that dies, however it dies, holds it no longer; the file stays and the next process takes it over.
    Rank 0 only in a job of several ranks. True when this call took the lock (False: already held here)."""
    import fcntl

    key = str(run_dir.resolve())
    if key in _LOCKS or not distributed.is_main():
        return False
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise TinyKDError(
            f"Another tinykd process (PID {holder}) is running in {run_dir}; two runs writing one directory "
            "would overwrite each other's checkpoints and exports.",
            f"wait for it to finish (or stop it: kill {holder}; resume=true then continues its run), or give "
            "this run another directory: name=<a name> or runs.<stage>=<dir>.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _LOCKS[key] = fd
    return True


def unlock_run_dir(run_dir: Path) -> None:
    fd = _LOCKS.pop(str(run_dir.resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the file drops the kernel's lock


@contextlib.contextmanager
def holding(run_dir: Optional[Path]):
    """`lock_run_dir` for the block, released after it unless it was already held."""
    taken = run_dir is not None and lock_run_dir(run_dir)
    try:
        yield
    finally:
        if taken:
            unlock_run_dir(run_dir)


def check_start(cfg, run_dir: Path, stage: str) -> None:
    """Before a `stage` run starts in `run_dir` (held by this process: `holding`): a resumed run must have been
    started with this config but for budgets and logging (`resume_conflicts`); a new one must not replace a run
    made for other data (`check_replaceable`)."""
    if not (cfg.resume and (run_dir / CHECKPOINT).is_file()):
        check_replaceable(cfg, run_dir, stage)
        return
    conflicts = resume_conflicts(run_dir / CONFIG, cfg)
    if conflicts:
        more = f" (and {len(conflicts) - 8} more)" if len(conflicts) > 8 else ""
        raise TinyKDError(
            f"{run_dir} was started with a different configuration, so it cannot resume with this one: "
            f"{_shown(conflicts[:8], 'then', 'now')}{more}.",
            f"resume with the values it was started with ({run_dir / 'config.yaml'}; only budgets and logging "
            "may change: train.<phase>.max_steps, epochs, eval_every, save_every, log_every), or drop "
            "resume=true (and reuse=true) to start a new run (the old one is moved aside).")
