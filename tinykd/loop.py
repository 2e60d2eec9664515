"""The bookkeeping of every training loop, written once.

A stage keeps what is particular to it in its own file (the forward passes, the loss and its
parts, when to evaluate and what to keep) and hands the rest to a `PhaseLoop`:

    loop = build.phase_loop(cfg, "general", cfg.train.general, ds, tokenizer, module, ...)  # a PhaseLoop
    for batch in loop:                        # on the engine's device; ends at the phase's last step
        with engine.autocast():               # or when this process's step budget is spent
            loss, parts = ...
        if loop.update(loss, parts, items):   # True when an optimiser step was taken
            if loop.eval_due:
                ...                           # the stage's own evaluation
            loop.checkpoint(best=...)         # when one is due; the stage's state goes in with it
    if loop.interrupted:
        return ...

`update` does, in order: the finite check (before the loss reaches the weights), the backward
pass, the engine's step (accumulation, clipping, the optimiser), and at an optimiser step the
count, the progress bar and the log record. `checkpoint` writes `checkpoints/last.pt` (through
`tinykd.run.save_checkpoint`, the one checkpoint contract) every `save_every` steps, at the
phase's last step and when the budget runs out. A loop built with a checkpoint resumes from it
(`tinykd.run.restore`, the one restore path).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from tqdm.auto import tqdm

from tinykd import distributed
from tinykd.data.batches import Batcher
from tinykd.engine import Engine
from tinykd.errors import NonFiniteLossError
from tinykd.run import CHECKPOINT, MetricsLogger, restore, save_checkpoint

# Fault injection for the kill-and-resume tests: SIGKILL this process after the backward pass of
# its N-th micro-batch (counted over all its phases), before that micro-batch's optimiser step.
KILL_AT_ENV = "TINYKD_FAULT_SIGKILL_AT_MICRO"


class StopRequest:
    """SIGTERM or SIGINT (Ctrl-C) while a loop runs: the first asks every loop of the process to stop at the
    next optimiser-step boundary, after writing a checkpoint there; a second ends the process at once (the
    checkpoint being written, if any, is atomic: the one before it stays whole). With several ranks, a stop
    any rank received is shared at the next step boundary, so every rank stops at the same step."""

    signum: Optional[int] = None  # the signal this process received
    agreed: bool = False  # a stop every rank knows of (set at a step boundary): what the loops act on

    def handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second signal: at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"\n[tinykd] {signal.Signals(signum).name}: stopping at the end of this step, with a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self):
        """The handlers, for the block (main thread only: elsewhere signals cannot be caught)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self.handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def agree(self, device) -> None:
        """At a step boundary: act on a stop from here on, the same on every rank (with several, a collective:
        each rank takes the largest signal any received)."""
        mine = self.signum  # read once: a signal arriving during the collective counts at the next step
        if distributed.world_size() > 1 and distributed.initialized():
            flag = torch.tensor([mine or 0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            mine = int(flag) or None
            if mine is not None and self.signum is None:
                self.signum = mine
        self.agreed = mine is not None


STOP = StopRequest()  # the process's


@dataclass
class StepBudget:
    """The optimiser steps this process may take (`interrupt_after`; None: no limit), shared by the
    phases of a stage: a phase that spends the last of it stops there, and the next phase takes no
    step."""

    limit: Optional[int] = None
    taken: int = 0

    @property
    def spent(self) -> bool:
        """No step left: the limit reached, or a stop asked for by a signal (`STOP`)."""
        return (self.limit is not None and self.taken >= self.limit) or STOP.agreed


class PhaseLoop:
    """One phase of training: iterate it for batches, call `update` with each loss and, after an
    optimiser step, `checkpoint`.

    `total` optimiser steps (from `hp.max_steps` or `hp.epochs`); `unit` names what `items` counts
    (tokens, examples) in the throughput; `index` is the phase's place in its stage (checkpoints say
    where a run stopped); `resume_from` is the run's checkpoint when this phase resumes from it.
    """

    def __init__(self, name: str, *, engine: Engine, batcher: Batcher, hp, total: int, run_dir: Path,
                 logger: MetricsLogger, budget: StepBudget, progress: bool, unit: str = "examples", index: int = 0,
                 resume_from: Optional[dict] = None, keep_checkpoints: int = 2):
        self.name, self.engine, self.batcher, self.hp, self.total = name, engine, batcher, hp, total
        self.run_dir, self.logger, self.budget, self.progress, self.unit = run_dir, logger, budget, progress, unit
        self.index, self.keep_checkpoints = index, keep_checkpoints
        self.step = restore(engine, resume_from) if resume_from is not None else 0
        self._stepped = False  # an optimiser step whose checkpoint() has not been called yet
        self._items, self._t0, self._first = 0, time.perf_counter(), self.step
        self._saved_at = self.step  # the step of the last checkpoint this loop wrote (or resumed from)
        self._bar: Optional[tqdm] = None
        self._lines = False
        self._kill_at = int(os.environ.get(KILL_AT_ENV, "0") or 0)

    # -------------------------------------------------------------------------------- state
    @property
    def finished(self) -> bool:
        return self.step >= self.total

    @property
    def interrupted(self) -> bool:
        """Stopped by the step budget before the phase's last step."""
        return self.budget.spent and not self.finished

    @property
    def eval_due(self) -> bool:
        """Every `eval_every` steps (0: never in between), and at the phase's last step."""
        return bool(self.hp.eval_every and self.step % self.hp.eval_every == 0) or self.finished

    # -------------------------------------------------------------------------------- the loop
    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.finished or self.budget.spent:
            self._end()
            return
        # a terminal gets a bar; a log file (stderr not a terminal) a line every log_every steps instead
        self._lines = self.progress and not sys.stderr.isatty()
        self._bar = tqdm(total=self.total, initial=self.step, desc=self.name, unit="step",
                         disable=not self.progress or self._lines)
        device = self.engine.device
        with STOP.installed():
            for batch in self.batcher.iterate(self.engine.micro):
                yield {k: v.to(device) for k, v in batch.items()}
                if self._stepped:
                    raise RuntimeError(f"phase {self.name}: call loop.checkpoint() after every update() that "
                                       "returns True (a stage bug).")
                # stop once the step where the budget ran out (or a signal came) is checkpointed
                if self.finished or (self.budget.spent and self._saved_at == self.step):
                    break
        self._end()

    def update(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], items: int) -> bool:
        """Backward and step on one micro-batch's loss; True when that made an optimiser step.
        `parts` (unweighted, detached) are logged beside the loss; `items` feed the throughput."""
        self._check_finite(loss, parts)
        self.engine.backward(loss)
        self._items += items
        self._maybe_kill()
        if not self.engine.step():
            return False
        self.step += 1
        self.budget.taken += 1
        self._stepped = True
        STOP.agree(self.engine.device)  # several ranks: all stop at this step if any was signalled
        rate = self._items / (time.perf_counter() - self._t0)
        value = loss.item()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({"loss": f"{value:.4f}", "lr": f"{self.engine.lr():.2e}", f"{self.unit}/s": f"{rate:.0f}"})
        if self.step % self.hp.log_every == 0 or self.finished:
            if self._lines:
                left = (self.total - self.step) * (time.perf_counter() - self._t0) / max(1, self.step - self._first)
                print(f"[tinykd] {self.name} step {self.step}/{self.total}: loss {value:.4f}, lr {self.engine.lr():.2e}, "
                      f"{rate:.0f} {self.unit}/s, {left / 60:.1f} min left", flush=True)
            self.logger.log({"phase": self.name, "step": self.step, "loss": value, "lr": self.engine.lr(),
                             f"{self.unit}_per_s": rate, **{f"loss/{k}": float(v) for k, v in parts.items()}})
        return True

    def checkpoint(self, **state) -> None:
        """After an optimiser step (and the stage's evaluation, if any): write the checkpoint when one
        is due, with the stage's `state` in it."""
        self._stepped = False
        if self.step % self.hp.save_every == 0 or self.finished or self.budget.spent:
            save_checkpoint(self.run_dir, self.engine, phase=self.name, phase_index=self.index, step=self.step,
                            state=state, keep=self.keep_checkpoints)
            self._saved_at = self.step

    def log(self, record: dict) -> None:
        """A record of this phase at its current step (e.g. dev metrics)."""
        self.logger.log({"phase": self.name, "step": self.step, **record})

    def log_eval(self, split: str, metrics: dict, note: str = "") -> None:
        """An evaluation at the current step: logged (`<split>/<metric>`) and printed as one line."""
        self.log({f"{split}/{k}": v for k, v in metrics.items()})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
        line = f"[tinykd] {self.name} step {self.step}/{self.total}: {split} {shown}{note}"
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line)
        else:
            print(line, flush=True)

    # -------------------------------------------------------------------------------- internals
    def _end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.interrupted:
            why = f" by {signal.Signals(STOP.signum).name}" if STOP.signum else ""
            print(f"[tinykd] interrupted{why} in phase {self.name} after step {self.step}/{self.total} (checkpoint "
                  f"written); resume=true continues. run_dir={self.run_dir}", flush=True)

    def _check_finite(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """Stop on NaN/inf before it reaches the weights; the last checkpoint stays as it was."""
        value = float(loss.detach())
        if math.isfinite(value):
            return
        bad = [k for k, v in parts.items() if not math.isfinite(float(v))]
        ckpt = self.run_dir / CHECKPOINT
        kept = f"the last good checkpoint is {ckpt} (resume=true continues from it)" if ckpt.is_file() else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"Loss became {value} at step {self.step + 1} of phase {self.name} (non-finite parts: {bad or ['total']}); "
            f"training stopped and {kept}.",
            "lower the learning rate (train.<phase>.lr) or check the inputs. If the loss blew up over several "
            "steps, the last checkpoint may already hold diverged weights: start a fresh run rather than resuming.",
        )

    def _maybe_kill(self) -> None:
        if self._kill_at:
            PhaseLoop._micro_in_process += 1
            if PhaseLoop._micro_in_process >= self._kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    _micro_in_process = 0  # micro-batches this process has run, over all its loops (fault injection only)
