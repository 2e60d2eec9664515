"""Resume: N steps, stop, resume N more == 2N steps uninterrupted (fp32 tolerance)."""

from __future__ import annotations

from pathlib import Path

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


def test_task_resume_across_phases(make_cfg, tmp_path):
    """Interrupt inside the prediction phase (after 6 intermediate + 2 prediction steps)."""
    common = ["task=sst2", "debug=smoke"]
    for root in ("a", "b"):
        run_stage(make_cfg("stage=teacher", *common, f"paths.runs={tmp_path}/{root}"))
        run_stage(make_cfg("stage=general", *common, f"paths.runs={tmp_path}/{root}"))
    whole = run_stage(make_cfg("stage=task", *common, f"paths.runs={tmp_path}/a"))
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
