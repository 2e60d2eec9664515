"""Every experiment preset runs, not only composes: the whole pipeline (teacher, general, task;
augmentation too when the preset configures it; the masked-LM head first when it distils from a
masked LM) on debug=smoke's budgets and data, with the preset's own teacher (the offline MiniLM) and
student shapes, ending in a student that plain transformers loads."""

from __future__ import annotations

import pytest
from conftest import run_stage
from omegaconf import OmegaConf
from transformers import AutoConfig

from tinykd import build
from tinykd.config import REPO_ROOT

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


def preset(experiment: str):
    return OmegaConf.load(REPO_ROOT / "conf" / "experiment" / f"{experiment}.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_on_smoke(make_cfg, experiment):
    exp = preset(experiment)
    augment = "augment" in exp
    # debug=smoke swaps in its tiny teacher and student after the experiment's choices: name the
    # experiment's on the command line, which comes last (its own student keys still apply on top)
    overrides = ["stage=pipeline", f"experiment={experiment}", "debug=smoke", "teacher=minilm_l6",
                 f"stage.augment={str(augment).lower()}"]
    for entry in exp.get("defaults", []):
        for key, value in entry.items():
            if key == "override /student":
                overrides.append(f"student={value}")
    cfg = make_cfg(*overrides)
    if cfg.distill.method == "distilbert":  # MiniLM has no masked-LM head: fit one first, as make bench-seeds does
        run_stage(make_cfg(*overrides, "stage=mlm_head", "stage.heldout=16"))
    res = run_stage(cfg)
    assert not res.get("interrupted")
    m = res["main_metric"]
    assert 0.0 <= res["student_dev"][m] <= 1.0
    student = AutoConfig.from_pretrained(res["student_export"])
    assert student.num_labels == build.task_spec(cfg).num_labels
    if cfg.student.arch == "bert":
        assert (student.num_hidden_layers, student.hidden_size) == (cfg.student.num_layers, cfg.student.hidden_size)
    assert (res["augmented"] is not None) == augment
