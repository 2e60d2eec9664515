"""Kill a run with SIGKILL at a random micro-batch of every training stage and phase, resume it,
and compare with an uninterrupted run: the same final weights, the same dev scores.

The kill is real (the process SIGKILLs itself after the backward pass of its N-th micro-batch,
before that micro-batch's optimiser step: `tinykd.loop.KILL_AT_ENV`), and N is drawn at random
within the stage (default tier: one kill per stage) or within the phase under test (slow tier: ten
kills per phase of every stage), never placed at a checkpoint boundary.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file

from tinykd.cli import run_stage
from tinykd.loop import KILL_AT_ENV
from tinykd.run import CHECKPOINT, load_checkpoint

SMOKE_STEPS = 6  # debug=smoke: every phase takes 6 optimiser steps of one micro-batch

# stage variant -> (its overrides, its run key, its phases in order, the upstream stages it reads)
VARIANTS = {
    "teacher": (["stage=teacher", "task=sst2"], "teacher", ["teacher"], []),
    "general": (["stage=general"], "general", ["general"], []),
    "general_distilbert": (["stage=general", "distill=distilbert", "student=distilbert"], "general", ["general"], []),
    "mlm_head": (["stage=mlm_head"], "mlm_head", ["mlm_head"], []),
    "task": (["stage=task", "task=sst2"], "task", ["intermediate", "prediction"], ["teacher", "general"]),
    "task_finetune": (["stage=task", "task=sst2", "stage.phases=[finetune]"], "task", ["finetune"],
                      ["teacher", "general"]),
    "task_bilstm": (["stage=task", "task=sst2", "student=bilstm"], "task", ["representation", "logits", "finetune"],
                    ["teacher"]),
}
CASES = [(v, p) for v, (_, _, phases, _) in VARIANTS.items() for p in phases]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One runs directory for the module: the upstream runs (teacher, general) made once, and each
    variant's uninterrupted run made once, on first use."""
    root = tmp_path_factory.mktemp("kill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_RUNS", str(root / "runs"))
        mp.setenv("TINYKD_CACHE", str(root / "cache"))
        yield {"root": root, "whole": {}, "upstream": set()}


def compose_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["progress=false", "debug=smoke", *overrides])


def ensure_upstream(env, names):
    for name in names:
        if name not in env["upstream"]:
            overrides = VARIANTS[name][0]
            res = run_stage(compose_cfg(*overrides))
            assert not res.get("interrupted")
            env["upstream"].add(name)


def final_state(run_dir: Path) -> tuple[dict, dict, dict]:
    """(the last checkpoint's weights, the exported model's weights, results.json)."""
    ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    results = json.loads((run_dir / "results.json").read_text())
    export = Path(results["export"])
    return ckpt["model"], load_file(export / "model.safetensors"), results


def assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different keys"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{what} {k}: {m}")


def kill_and_resume(env, capsys, variant: str, phase: str | None, seed: int) -> None:
    """Kill at a random micro-batch of `phase` (None: of any phase of the stage), resume, compare."""
    overrides, run_key, phases, upstream = VARIANTS[variant]
    ensure_upstream(env, upstream)
    if variant not in env["whole"]:
        res = run_stage(compose_cfg(*overrides, f"runs.{run_key}={env['root']}/whole-{variant}"))
        env["whole"][variant] = final_state(Path(res["run_dir"]))

    # a random micro-batch of the phase under test (micro-batches are counted over the stage's phases)
    first, last = (1, len(phases) * SMOKE_STEPS) if phase is None else \
        (phases.index(phase) * SMOKE_STEPS + 1, (phases.index(phase) + 1) * SMOKE_STEPS)
    kill_at = random.Random(f"{variant}-{phase}-{seed}").randint(first, last)
    run_dir = env["root"] / f"killed-{variant}-{phase}-{seed}"
    args = [*overrides, f"runs.{run_key}={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", "tinykd", "progress=false", "debug=smoke", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, KILL_AT_ENV: str(kill_at)})
    assert proc.returncode == -signal.SIGKILL, f"expected SIGKILL at micro-batch {kill_at}: {proc.stderr[-2000:]}"
    assert not (run_dir / "results.json").exists()
    left = load_checkpoint(run_dir)  # what the killed run had saved: at most the step before the kill
    if left is not None:
        done = phases.index(left["phase"]) * SMOKE_STEPS + left["step"]
        assert done < kill_at, (done, kill_at)

    # reuse=true: resume from the checkpoint when one was written before the kill, else start over
    capsys.readouterr()
    res = run_stage(compose_cfg(*args, "reuse=true"))
    assert not res.get("interrupted")
    if left is not None:  # it did resume there, not start over (which would end with the same weights)
        assert f"resumed phase {left['phase']} at step {left['step']}" in capsys.readouterr().out
    ckpt_w, export_w, results = final_state(run_dir)
    whole_ckpt, whole_export, whole_results = env["whole"][variant]
    assert_same(ckpt_w, whole_ckpt, f"checkpoint after a kill at micro-batch {kill_at}")
    assert_same(export_w, whole_export, f"export after a kill at micro-batch {kill_at}")
    for key in ("dev", "heldout", "steps", "best_step"):
        assert results.get(key) == whole_results.get(key), key


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
@pytest.mark.parametrize("variant", VARIANTS)
def test_kill_at_a_random_step_then_resume_equals_uninterrupted(env, capsys, variant):
    kill_and_resume(env, capsys, variant, None, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11))
@pytest.mark.parametrize("variant,phase", CASES)
def test_kill_at_ten_random_steps_then_resume_equals_uninterrupted(env, capsys, variant, phase, seed):
    kill_and_resume(env, capsys, variant, phase, seed)
