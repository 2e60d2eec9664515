"""Sweeps: real Hydra multiruns of the task stage on debug=smoke, their summaries and re-runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_stage

from tinykd.errors import TinyKDError
from tinykd.sweep import summarize


@pytest.fixture
def smoke_prereqs(make_cfg):
    """The fine-tuned teacher and the general student every trial shares, made once."""
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke"))
    run_stage(make_cfg("stage=general", "debug=smoke"))


def multirun(sweep_dir: Path, *args: str, wait: bool = True):
    cmd = [sys.executable, "-m", "tinykd", "-m", "stage=task", "task=sst2", "debug=smoke", "progress=false",
           "reuse=true", f"hydra.sweep.dir={sweep_dir}", *args]
    if wait:
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ.copy(), start_new_session=True)


@pytest.mark.slow
def test_two_trial_multirun_summary_matches_trials(smoke_prereqs, runs_dir):
    sweep_dir = runs_dir / "sweep2"
    proc = multirun(sweep_dir, "distill.temperature=1,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial_dirs = sorted(p for p in sweep_dir.iterdir() if (p / "trial.json").is_file())
    assert [p.name for p in trial_dirs] == ["distill.temperature=1", "distill.temperature=4"]
    own = {}
    for p in trial_dirs:
        res = json.loads((p / "results.json").read_text())  # each trial wrote into its own directory
        assert Path(res["run_dir"]) == p and (p / "student" / "config.json").is_file()
        own[p.name] = res["dev"]["accuracy"]
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    for r in rows:
        assert float(r["accuracy"]) == pytest.approx(own[r["dir"]])
        assert r["dir"] == f"distill.temperature={r['distill.temperature']}"
    assert float(rows[0]["accuracy"]) >= float(rows[1]["accuracy"])  # leaderboard order
    md = (sweep_dir / "summary.md").read_text()
    assert "| rank | trial | status | accuracy | distill.temperature |" in md
    assert (sweep_dir / "summary.png").stat().st_size > 5000
    # stage=summarize rebuilds the same table from the trial directories
    before = (sweep_dir / "summary.csv").read_text()
    (sweep_dir / "summary.csv").unlink()
    summarize(sweep_dir)
    assert (sweep_dir / "summary.csv").read_text() == before


@pytest.mark.slow
def test_killed_sweep_rerun_skips_finished_trials(smoke_prereqs, runs_dir):
    sweep_dir = runs_dir / "sweep3"
    args = ("distill.temperature=1,2,4",)
    proc = multirun(sweep_dir, *args, wait=False)
    first = sweep_dir / "distill.temperature=1" / "results.json"
    deadline = time.time() + 300
    while not first.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # half way: trial 1 finished, the others not
    proc.wait()
    assert first.is_file(), proc.stdout.read()[-3000:]
    assert not (sweep_dir / "distill.temperature=4" / "results.json").is_file()
    stamp = first.stat().st_mtime_ns
    done = multirun(sweep_dir, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reuse: task already finished in" in done.stdout and "distill.temperature=1" in done.stdout
    assert first.stat().st_mtime_ns == stamp, "a finished trial was run again"
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert sorted(r["distill.temperature"] for r in rows) == ["1", "2", "4"]
    assert all(r["status"] == "finished" for r in rows)


@pytest.mark.slow
def test_a_signalled_sweep_checkpoints_its_trial_records_it_interrupted_and_stops(smoke_prereqs, runs_dir):
    sweep_dir = runs_dir / "sweep-signal"
    args = ("distill.temperature=1,4", "train.task_intermediate.max_steps=2", "train.task_prediction.max_steps=100000",
            "train.task_prediction.log_every=1")
    proc = multirun(sweep_dir, *args, wait=False)
    trial = sweep_dir / ("distill.temperature=1,train.task_intermediate.max_steps=2,train.task_prediction.log_every=1,"
                         "train.task_prediction.max_steps=100000")
    deadline = time.time() + 300
    while not ((trial / "metrics.jsonl").is_file() and len((trial / "metrics.jsonl").read_text().splitlines()) >= 6):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    record = json.loads((trial / "trial.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == "stopped by SIGTERM"
    assert "sweep stopped by SIGTERM in trial 0 (checkpointed); run the same command with reuse=true" in out
    assert (trial / "checkpoints" / "last.pt").is_file()
    assert [p.name for p in sweep_dir.iterdir() if (p / "trial.json").is_file()] == [trial.name]  # trial 1 never ran


@pytest.mark.slow
def test_crashing_trial_is_recorded_and_the_sweep_goes_on(smoke_prereqs, runs_dir):
    # layer 9 does not exist in the 4-layer tiny teacher: that trial fails, the other finishes
    sweep_dir = runs_dir / "sweep4"
    proc = multirun(sweep_dir, "distill.layer_map=list", "distill.layers=[1,2],[1,9]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["distill.layers"]: r for r in csv.DictReader(open(sweep_dir / "summary.csv"))}
    assert rows["[1, 2]"]["status"] == "finished"
    assert rows["[1, 9]"]["status"] == "failed"
    assert "teacher layer 9" in rows["[1, 9]"]["error"]


@pytest.mark.parametrize(
    "args,message",
    [
        (("distill.temprature=1,2",), "distill.temprature is not a tinykd key"),
        ((), "Empty sweep"),
    ],
)
def test_bad_sweeps_are_refused(runs_dir, args, message):
    proc = multirun(runs_dir / "bad", *args)
    assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_sweep_dir_of_another_configuration_is_refused(smoke_prereqs, runs_dir):
    sweep_dir = runs_dir / "sweep5"
    assert multirun(sweep_dir, "distill.temperature=1,2").returncode == 0
    proc = multirun(sweep_dir, "distill.temperature=1,2", "distill.pred_loss=kl")
    assert proc.returncode == 2 and "different sweep configuration" in proc.stderr
    assert "hydra.sweep.dir" in proc.stderr


def test_summarize_stage_errors(make_cfg, tmp_path):
    with pytest.raises(TinyKDError, match="needs the sweep directory"):
        run_stage(make_cfg("stage=summarize"))
    with pytest.raises(TinyKDError, match="No trials"):
        run_stage(make_cfg("stage=summarize", f"dir={tmp_path}"))


@pytest.mark.slow
def test_optuna_search_space_runs(smoke_prereqs, runs_dir):
    """conf/hparams_search/sst2_optuna.yaml through the Optuna sweeper, two trials."""
    sweep_dir = runs_dir / "opt"
    # experiment=sweep_sst2's student is pruned, which distill.layer_map=kept (one of the choices) needs
    proc = multirun(sweep_dir, "hparams_search=sst2_optuna", "hydra.sweeper.n_trials=2", "student.init=pruned")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
    swept = json.loads((sweep_dir / "sweep.json").read_text())["swept"]
    assert {"distill.temperature", "distill.attention_target", "distill.layer_map", "train.task_prediction.lr",
            "distill.weights.attention", "distill.weights.hidden", "distill.weights.relation"} <= set(swept)


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("wnut17", "entity_f1"), ("squad", "squad_f1")])
def test_token_and_qa_sweeps_rank_trials_by_the_task_s_metric(make_cfg, runs_dir, task, metric):
    run_stage(make_cfg("stage=teacher", f"task={task}", "debug=smoke"))
    run_stage(make_cfg("stage=general", "debug=smoke"))
    sweep_dir = runs_dir / f"sweep-{task}"
    cmd = [sys.executable, "-m", "tinykd", "-m", "stage=task", f"task={task}", "debug=smoke", "progress=false",
           "reuse=true", f"hydra.sweep.dir={sweep_dir}", "distill.temperature=1,4"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(sweep_dir / "summary.csv")))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    for r in rows:
        res = json.loads((sweep_dir / r["dir"] / "results.json").read_text())
        assert float(r[metric]) == pytest.approx(res["dev"][metric]) and res["main_metric"] == metric
    assert float(rows[0][metric]) >= float(rows[1][metric])


def test_parameter_effects_rank_what_moved_the_metric():
    from tinykd.sweep import parameter_effects

    rows = [{"accuracy": a, "lr": lr, "T": t} for a, lr, t in
            [(0.80, 1e-3, 1.0), (0.84, 1e-3, 2.0), (0.60, 1e-5, 1.0), (0.62, 1e-5, 2.0), (None, 1e-4, 1.0)]]
    effects = parameter_effects(rows, ["T", "lr", "seed"], "accuracy")
    assert [e["param"] for e in effects] == ["lr", "T"]  # sorted by spread; a key no trial varied is left out
    lr, t = effects
    assert lr["spread"] == pytest.approx(0.82 - 0.61)
    assert lr["values"] == [(1e-3, pytest.approx(0.82), 2), (1e-5, pytest.approx(0.61), 2)]  # no metric: not counted
    assert t["spread"] == pytest.approx(0.73 - 0.70)
