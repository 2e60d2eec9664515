"""Resume: N steps, stop, resume N more == 2N steps uninterrupted (fp32 tolerance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_stage


def final_weights(run_dir: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs")


def test_general_resume_equals_uninterrupted(make_cfg, tmp_path):
    whole = run_stage(make_cfg("stage=general", "debug=smoke", f"paths.runs={tmp_path}/a"))
    part = run_stage(make_cfg("stage=general", "debug=smoke", f"paths.runs={tmp_path}/b", "interrupt_after=3"))
    assert part["interrupted"] and part["step"] == 3
    assert torch.load(Path(part["run_dir"]) / "checkpoints/last.pt", weights_only=False)["step"] == 3
    rest = run_stage(make_cfg("stage=general", "debug=smoke", f"paths.runs={tmp_path}/b", "resume=true"))
    assert rest["steps"] == whole["steps"] == 6
    assert_same(final_weights(whole["run_dir"]), final_weights(rest["run_dir"]))
    # and the optimizer moved the weights at all: resumed != the state at the interruption
    mid = run_stage(make_cfg("stage=general", "debug=smoke", f"paths.runs={tmp_path}/c", "interrupt_after=3"))
    w_mid, w_end = final_weights(mid["run_dir"]), final_weights(rest["run_dir"])
    assert any(not torch.allclose(w_mid[k], w_end[k]) for k in w_end)


def task_twice_upstream(make_cfg, tmp_path, common: list[str]) -> dict:
    """A teacher and a general student in runs a and b; an uninterrupted task run in a."""
    for root in ("a", "b"):
        run_stage(make_cfg("stage=teacher", *common, f"paths.runs={tmp_path}/{root}"))
        run_stage(make_cfg("stage=general", *common, f"paths.runs={tmp_path}/{root}"))
    return run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/a"))


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_task_resume_across_phases(make_cfg, tmp_path):
    """Interrupt inside the prediction phase (after 6 intermediate + 2 prediction steps)."""
    common = ["task=sst2", "debug=smoke"]
    whole = task_twice_upstream(make_cfg, tmp_path, common)
    part = run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/b", "interrupt_after=8"))
    assert part["interrupted"]
    ckpt = torch.load(Path(part["run_dir"]) / "checkpoints/last.pt", weights_only=False)
    assert (ckpt["phase"], ckpt["step"]) == ("prediction", 2)
    rest = run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/b", "resume=true"))
    assert_same(final_weights(whole["run_dir"]), final_weights(rest["run_dir"]))
    assert rest["dev"]["accuracy"] == whole["dev"]["accuracy"]


def test_teacher_resume_equals_uninterrupted(make_cfg, tmp_path):
    common = ["stage=teacher", "task=sst2", "debug=smoke"]
    whole = run_stage(make_cfg(*common, f"paths.runs={tmp_path}/a"))
    part = run_stage(make_cfg(*common, f"paths.runs={tmp_path}/b", "interrupt_after=4"))
    assert part["interrupted"] and part["step"] == 4
    rest = run_stage(make_cfg(*common, f"paths.runs={tmp_path}/b", "resume=true"))
    assert_same(final_weights(whole["run_dir"]), final_weights(rest["run_dir"]))
    assert rest["dev"] == whole["dev"]


@pytest.mark.slow  # ~8-20 s end to end: the default tier stays near 5 minutes
def test_interrupt_at_a_phases_last_step_takes_no_step_of_the_next(make_cfg, tmp_path):
    """interrupt_after=6 is the intermediate phase's last step: the run stops there (checkpoint at
    intermediate step 6, no prediction-phase record), and resuming finishes as an uninterrupted run."""
    common = ["task=sst2", "debug=smoke"]
    whole = task_twice_upstream(make_cfg, tmp_path, common)
    part = run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/b", "interrupt_after=6"))
    assert part["interrupted"]
    run_dir = Path(part["run_dir"])
    ckpt = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert (ckpt["phase"], ckpt["step"]) == ("intermediate", 6)
    phases = [json.loads(line)["phase"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert phases and set(phases) == {"intermediate"}
    rest = run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/b", "resume=true"))
    assert_same(final_weights(whole["run_dir"]), final_weights(rest["run_dir"]))
    assert rest["dev"] == whole["dev"]


def test_interrupt_at_a_stages_last_step_finishes_it(make_cfg, tmp_path):
    """interrupt_after equal to the whole budget is no interruption: the stage exports as usual."""
    res = run_stage(make_cfg("stage=general", "debug=smoke", f"paths.runs={tmp_path}", "interrupt_after=6"))
    assert not res.get("interrupted") and res["steps"] == 6
    assert (Path(res["export"]) / "config.json").is_file()
