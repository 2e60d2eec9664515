"""The dispatcher: Hydra composes `conf/`, then the stage named by `stage=` runs.

Stages live in `stages/<name>.py` (beside this package), each with `run(cfg) -> dict`.
A `TinyKDError` (bad input) is printed as one line and exits with status 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import hydra
from omegaconf import DictConfig

from tinykd import config
from tinykd.errors import TinyKDError

STAGES = ("teacher", "general", "task", "eval", "pipeline")

config.register()
sys.path.insert(0, str(config.REPO_ROOT))  # so that `stages` imports from a source checkout


def run_stage(cfg: DictConfig) -> dict:
    name = cfg.stage.name
    if name not in STAGES:
        raise TinyKDError(f"Unknown stage '{name}'.", f"choose one of: {', '.join(STAGES)} (stage=<name>).")
    return importlib.import_module(f"stages.{name}").run(cfg)


@hydra.main(version_base="1.3", config_path=str(config.REPO_ROOT / "conf"), config_name="config")
def _hydra_main(cfg: DictConfig):
    try:
        result = run_stage(cfg)
    except TinyKDError as e:
        print(f"error: {e.problem}" + (f"\n  fix: {e.fix}" if e.fix else ""), file=sys.stderr)
        sys.exit(2)
    metric = result.get("main_metric")
    # Hydra's optimisation sweepers read the return value.
    return result.get("dev", {}).get(metric) if metric else None


def main() -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # per-shard load/save bars; ours show the work
    _hydra_main()
    return 0
