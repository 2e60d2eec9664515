"""`make bench-ablation` end to end on the smoke preset: every row runs, is re-scored and reported."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tinykd.bench import ablation, heldout

# the smoke teacher is 64 wide with 4 heads: a student it can be pruned to
SMALL = ["debug=smoke", "student.num_layers=2", "student.hidden_size=32", "student.num_heads=4",
         "student.intermediate_size=64", "augment.n=1", "task.train_limit=64"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec(heldout.MODULE) is None, reason=heldout.install_hint())
def test_ablation_runs_every_row_and_reports_it(runs_dir, tmp_path):
    out = tmp_path / "report"
    r = ablation.main(["--seeds", "1", "--runs", str(runs_dir / "ablation"), "--out", str(out), *SMALL])
    assert set(r["rows"]) == {*ablation.RECIPES, *(f"baseline_{b}" for b in ablation.BASELINES)}
    for name, row in r["rows"].items():
        (seed,) = row["seeds"]
        assert abs(seed["dev"] - seed["recorded"]) <= 0.001, name  # plain transformers reproduces the run
        assert 0 <= seed["heldout"] <= 1
    assert r["rows"]["pruned"]["seeds"][0]["init_dev"] is not None
    assert r["best_recipe"] in ablation.RECIPES
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["rows"]["pruned"]["dev_mean"] == r["rows"]["pruned"]["dev_mean"]
    report = (out / "ablation.md").read_text()
    assert all(ablation.RECIPES[n][0] in report for n in ablation.RECIPES)
    assert (out / "ablation.png").stat().st_size > 10_000
