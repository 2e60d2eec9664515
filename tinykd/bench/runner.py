"""How every benchmark runs tinykd: one ordinary `python -m tinykd ... reuse=true` command at a time
(a finished run with the same config is skipped, an interrupted one resumes, so an interrupted
benchmark continues where it stopped), its output shown and kept in the benchmark's commands.log."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from tinykd.config import REPO_ROOT

PROGRESS = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")  # a tqdm refresh (text mode turns its \r into lines)


class Runner:
    """Runs tinykd commands for the benchmark `tag`, each with `prefix` before its own overrides; keeps the
    command lines (`commands`) and writes them, with what each printed (not every progress-bar refresh),
    to `log` (emptied first)."""

    def __init__(self, tag: str, log: Path, prefix: Sequence[str] = ()):
        self.tag, self.log, self.prefix = tag, log, list(prefix)
        self.commands: list[str] = []
        self.reused: list[str] = []  # the commands that found their run already finished (an earlier invocation's)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def __call__(self, *overrides: str) -> float:
        """One command; returns its seconds. A failure stops the benchmark, naming the command and the log."""
        cmd = [sys.executable, "-m", "tinykd", *self.prefix, "reuse=true", *overrides]
        shown = "python " + " ".join(cmd[1:])
        self.commands.append(shown)
        print(f"[{self.tag}] $ {shown}", flush=True)
        t0 = time.perf_counter()
        with open(self.log, "a") as out:
            out.write(f"$ {shown}\n")
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                sys.stdout.write(line)
                if line.startswith("[tinykd] reuse:") and "already finished" in line:
                    self.reused.append(shown)
                if not PROGRESS.search(line):
                    out.write(line)
        if proc.wait():
            raise SystemExit(f"[{self.tag}] failed ({proc.returncode}): {shown}; its output is in {self.log}")
        return time.perf_counter() - t0


def compose(overrides: Sequence[str]):
    """The config a `python -m tinykd ...` command line composes (without running anything)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tinykd import config

    config.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))
