"""Shared fixtures: offline, no wandb, every run and cache under pytest's temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from tinykd import config  # noqa: E402

REPO = config.REPO_ROOT
config.register()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (tiny models, tokenised data) shared by the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def runs_dir(tmp_path, cache_dir, monkeypatch) -> Path:
    monkeypatch.setenv("TINYKD_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TINYKD_CACHE", str(cache_dir))
    return tmp_path / "runs"


@pytest.fixture
def make_cfg(runs_dir):
    """Compose the real `conf/` with overrides, exactly as the CLI does."""

    def _make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=["progress=false", *overrides])

    return _make


@pytest.fixture
def cli(runs_dir):
    """Run `python -m tinykd ...` in a subprocess; returns CompletedProcess."""

    def _cli(*args: str, timeout: int = 300):
        return subprocess.run([sys.executable, "-m", "tinykd", "progress=false", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, env=os.environ.copy())

    return _cli


def run_stage(cfg):
    from tinykd.cli import run_stage as _run

    return _run(cfg)


@pytest.fixture
def parts(tmp_path):
    """What the one loop needs around a linear model (tests/test_loop.py, test_faults.py): a 6-token
    tokenizer, 12 rows, a metrics logger without W&B."""
    from types import SimpleNamespace

    import datasets
    from transformers import BertTokenizer

    from tinykd.run import MetricsLogger

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a"]) + "\n")
    tok = BertTokenizer(str(vocab))
    ds = datasets.Dataset.from_dict({"input_ids": [[2, 5, 3]] * 12, "labels": [float(i) for i in range(12)]})
    logger = MetricsLogger(tmp_path, SimpleNamespace(name="none", mode="disabled"), None, "test")
    return tok, ds, logger
