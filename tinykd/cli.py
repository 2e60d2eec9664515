"""The dispatcher: Hydra composes `conf/`, `config.check` refuses what cannot run, then the
stage named by `stage=` runs.

Stages live in `stages/<name>.py` (beside this package), each with `run(cfg) -> dict`.
A `TinyKDError` (bad input) is printed as two lines, the problem and the fix, and exits with
status 2. In a multirun each job is a sweep trial: its record goes to `trial.json`, and a
crash is recorded there as a failed trial while the sweep goes on.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from tinykd import config, distributed, sweep, usage
from tinykd.errors import TinyKDError
from tinykd.run import (CHECKPOINT, CONFIG, check_start, command_line, config_differences, holding, is_finished,
                        read_results)

STAGES = tuple(config.STAGES)

config.register()


def run_stage(cfg: DictConfig, explicit: Sequence[str] = ()) -> dict:
    """Check `cfg` (with `explicit`, the command line's overrides), then run its stage."""
    config.check(cfg, explicit)  # before anything loads or is written: a refused command exits in seconds
    import transformers  # after the check: its import alone takes about a second

    transformers.utils.logging.disable_progress_bar()  # per-shard load/save bars; ours show the work
    # its load reports (tables of missing and unexpected weights, in ANSI bold): tinykd says what it
    # initialised itself, in its own lines
    transformers.utils.logging.set_verbosity_error()
    name = cfg.stage.name
    if cfg.engine.name == "deepspeed":  # join the job's process group (or be a job of one) before anything is written
        distributed.init(cfg.engine.device, cfg.engine.timeout_s)
        if not distributed.is_main():
            cfg = cfg.copy()
            with open_dict(cfg):
                cfg.progress = False  # one progress bar, rank 0's
    run_dir = Path(cfg.runs[name]) if name in cfg.runs else None
    with holding(run_dir):  # one process per run directory: a second one is refused with this one's PID
        if cfg.reuse and run_dir is not None:
            if is_finished(run_dir):
                diff = config_differences(run_dir / CONFIG, cfg)
                if diff:
                    raise TinyKDError(
                        f"{run_dir} holds a finished run with a different configuration (differs in: {diff[:8]}).",
                        "refusing to mix them: use another run directory (paths.runs=... or hydra.sweep.dir=...), "
                        "or drop reuse=true to start over (the old run is moved aside).",
                    )
                print(f"[tinykd] reuse: {name} already finished in {run_dir}")
                return read_results(run_dir)
            if (run_dir / CHECKPOINT).is_file() and not cfg.resume:
                cfg = cfg.copy()
                with open_dict(cfg):
                    cfg.resume = True
        if run_dir is not None:
            check_start(cfg, run_dir, name)
        return stage_module(name).run(cfg)


def stage_module(name: str):
    """The stage script `stages/<name>.py`, installed as tinykd.stages.<name>."""
    try:
        return importlib.import_module(f"tinykd.stages.{name}")
    except ModuleNotFoundError as e:
        if e.name not in ("tinykd.stages", f"tinykd.stages.{name}"):
            raise
        raise TinyKDError(
            f"The stage scripts (tinykd.stages) are not installed: this environment's tinykd was installed before "
            f"stages/ became tinykd.stages, or from a copy without them ({e}).",
            "reinstall tinykd from the checkout: make install, or pip install -e '.[dev]'.") from e


def run_trial(cfg: DictConfig) -> float | None:
    """One multirun job: run the stage, record the trial, never let a crash stop the sweep."""
    hc = HydraConfig.get()
    trial_dir = Path(hc.runtime.output_dir)
    # The stage's run directory is the trial's own; what other stages made (runs.teacher, ...) is shared.
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.runs[cfg.stage.name] = str(trial_dir)
    old = json.loads((trial_dir / sweep.TRIAL).read_text()) if (trial_dir / sweep.TRIAL).is_file() else None
    if cfg.reuse and old and old["status"] == "finished":
        run_stage(cfg, hc.overrides.task)  # checks the finished run's config matches, returns its results unchanged
        return old["metric"]
    record = {"num": hc.job.num, "overrides": list(hc.overrides.task), "status": "running",
              "metric_name": None, "metric": None, "seconds": None, "error": None}
    t0 = time.perf_counter()
    sweep.write_trial(trial_dir, record)
    from tinykd.loop import STOP

    try:
        result = run_stage(cfg, hc.overrides.task)
        if result.get("interrupted") and STOP.signum is not None:  # SIGTERM / Ctrl-C: the sweep stops here
            record.update(status="interrupted", seconds=round(time.perf_counter() - t0, 1),
                          error=f"stopped by {signal.Signals(STOP.signum).name}")
            sweep.write_trial(trial_dir, record)
            print(f"[tinykd] sweep stopped by {signal.Signals(STOP.signum).name} in trial {hc.job.num} (checkpointed); "
                  "run the same command with reuse=true to continue: finished trials are kept", file=sys.stderr)
            sys.exit(128 + STOP.signum)
        if result.get("interrupted"):
            raise RuntimeError("interrupted before the end (interrupt_after)")
        record.update(status="finished", metric_name=result.get("main_metric"), metric=sweep.trial_metric(result),
                      seconds=round(time.perf_counter() - t0, 1), result=result)
    except Exception as e:  # recorded, summarised, and the sweep goes on
        record.update(status="failed", seconds=round(time.perf_counter() - t0, 1),
                      error=f"{type(e).__name__}: {e}")
        print(f"[tinykd] trial {hc.job.num} failed: {record['error']}", file=sys.stderr)
        if not isinstance(e, TinyKDError):
            traceback.print_exc()
    sweep.write_trial(trial_dir, record)
    return record["metric"]


def report(e: TinyKDError) -> int:
    """Print a refusal the one way tinykd does (the problem, then the fix); the exit status is 2."""
    print(f"error: {e.problem}" + (f"\n  fix: {e.fix}" if e.fix else ""), file=sys.stderr)
    return 2


def report_lost_rank(e: Exception, cfg: DictConfig) -> int:
    """A rank of a job of several that lost the others (one died, was killed or hung): one message, no
    traceback, exit status 1. Finished work is intact: checkpoints are written whole or not at all."""
    again = command_line() or "the same command"
    run_dir = cfg.runs.get(cfg.stage.name)
    print(f"error: rank {distributed.rank()} of {distributed.world_size()} lost the other ranks of this job in "
          f"stage={cfg.stage.name}: one of them died, was killed or stopped answering ({distributed.describe(e)})\n"
          f"  fix: see the other ranks' output for why; every finished checkpoint"
          + (f" in {run_dir}" if run_dir else "") + f" is intact: relaunch all {distributed.world_size()} ranks "
          f"with {again}" + ("" if "resume=true" in again else " resume=true"), file=sys.stderr)
    return 1


@hydra.main(version_base="1.3", config_path=str(config.REPO_ROOT / "conf"), config_name="config")
def _hydra_main(cfg: DictConfig):
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return run_trial(cfg)
    try:
        result = run_stage(cfg, HydraConfig.get().overrides.task)
    except TinyKDError as e:
        sys.exit(report(e))
    except Exception as e:
        if not distributed.peer_lost(e):
            raise
        sys.exit(report_lost_rank(e, cfg))
    from tinykd.loop import STOP  # (imported here: the loop's imports would slow --help and refusals)

    if STOP.signum is not None and result.get("interrupted"):  # SIGTERM / Ctrl-C: checkpointed, say how to go on
        again = command_line() or "the same command"
        print(f"[tinykd] stopped by {signal.Signals(STOP.signum).name}; to continue: {again}"
              + ("" if "resume=true" in again else " resume=true"), file=sys.stderr)
        sys.exit(128 + STOP.signum)
    return sweep.trial_metric(result)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings from the libraries below, as one line each (no source excerpt)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    where = f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}"
    print(f"[tinykd] {category.__name__} ({where}): {text}", file=file or sys.stderr)


def main() -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.showwarning = one_line_warning
    # `deepspeed --module tinykd` appends --local_rank=N: Hydra would take it for an override
    argv = distributed.strip_launcher_args(sys.argv[1:])
    if not argv or "--help" in argv or "-h" in argv:  # a bare command would start the default stage: say what to run
        print(usage.usage())
        return 0 if argv else 2
    flags, overrides = usage.split_command_line(argv)
    try:
        usage.check_overrides(overrides, multirun="-m" in flags or "--multirun" in flags,
                              extra_dirs=usage.config_dirs(flags, overrides))
    except TinyKDError as e:
        return report(e)
    sys.argv = [sys.argv[0], *argv]
    if int(os.environ.get("RANK", "0")) > 0:  # under a launcher, only rank 0 prints; errors still reach stderr
        sys.stdout = open(os.devnull, "w")
    _hydra_main()
    return 0
