"""Runs know what they are: `name=` names every stage's directory; a stage that reads another stage's run
(the teacher, a general student, augmented data) refuses one made for other data or another teacher; a new
run does not silently replace a run made for other data; `keep_previous` bounds the moved-aside runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_stage
from test_errors import sst2_dir

from tinykd.errors import TinyKDError
from tinykd.run import CHECKPOINT, identity_changes, prepare_run_dir, previous_runs, save_config

SMOKE = ("task=sst2", "debug=smoke")


def other_sst2(tmp_path: Path) -> Path:
    """SST-2-shaped data that is not ../shared's: 40 made-up training sentences, 20 real dev ones."""
    rows = [f"{'a fine' if i % 2 else 'a dull'} film number {i}\t{i % 2}" for i in range(40)]
    return sst2_dir(tmp_path / "other-sst2", ["sentence\tlabel", *rows])


def test_name_gives_every_stage_its_own_directory(make_cfg, runs_dir):
    cfg = make_cfg("stage=task", *SMOKE, "name=exp1")
    for stage in ("teacher", "general", "task", "augment", "pipeline", "eval", "mlm_head"):
        assert Path(cfg.runs[stage]) == Path(cfg.paths.runs) / stage / "exp1"
    default = make_cfg("stage=task", *SMOKE)
    assert Path(default.runs.teacher).name == "sst2-tiny" and Path(default.runs.task).name == "sst2-tiny-tiny"


def test_task_stage_refuses_a_teacher_run_made_for_other_data(make_cfg, tmp_path):
    other = other_sst2(tmp_path)
    res = run_stage(make_cfg("stage=teacher", *SMOKE, f"task.data_dir={other}"))  # a real (smoke) teacher run
    assert Path(res["export"]).is_dir()
    # the next task stage, on ../shared's SST-2, would have distilled from it without a word
    with pytest.raises(TinyKDError, match="The teacher run in .* was made for other data") as e:
        run_stage(make_cfg("stage=task", *SMOKE))
    assert f"task.data_dir: '{other}' there" in e.value.problem
    assert "SST-2' here" in e.value.problem
    assert "name=<a name>" in e.value.fix
    # and a teacher run on ../shared's SST-2 does not move it aside: refused before anything is written
    with pytest.raises(TinyKDError, match="holds a teacher run made for other data") as e:
        run_stage(make_cfg("stage=teacher", *SMOKE))
    assert "name=<a name>" in e.value.fix
    assert not previous_runs(Path(res["run_dir"]))
    # with its own name it runs beside it, and the task stage of that name reads it
    named = make_cfg("stage=teacher", *SMOKE, "name=shared-sst2")
    assert Path(named.runs.teacher) != Path(res["run_dir"])


def test_identity_of_general_and_augment_runs(make_cfg, tmp_path):
    """A general student is read for its teacher (its vocabulary); augmented data for its task data."""
    general = tmp_path / "general"
    general.mkdir()
    save_config(general, make_cfg("stage=general", *SMOKE))
    assert identity_changes(general, make_cfg("stage=task", *SMOKE), "general") == []
    assert [k for k, _, _ in identity_changes(general, make_cfg("stage=task", *SMOKE, "teacher.path=/elsewhere"),
                                              "general")] == ["teacher.path"]
    augment = tmp_path / "augment"
    augment.mkdir()
    save_config(augment, make_cfg("stage=augment", *SMOKE))
    # a budget (train_limit) or a length may differ; the data may not
    assert identity_changes(augment, make_cfg("stage=task", *SMOKE, "task.train_limit=7", "task.max_seq_len=32"),
                            "augment") == []
    assert [k for k, _, _ in identity_changes(augment, make_cfg("stage=task", "task=cola", "debug=smoke"),
                                              "augment")] == ["task.name", "task.data_dir"]
    plain = tmp_path / "my-model"  # a directory of your own (no tinykd config.yaml): not checked
    plain.mkdir()
    assert identity_changes(plain, make_cfg("stage=task", *SMOKE), "teacher") == []


def test_keep_previous_bounds_the_runs_moved_aside(tmp_path, monkeypatch):
    import tinykd.run as run_mod

    stamps = iter(f"2026010{i}-000000" for i in range(1, 9))
    monkeypatch.setattr(run_mod.time, "strftime", lambda fmt: next(stamps))
    run_dir = tmp_path / "task" / "sst2-tiny-tiny"
    for i in range(4):  # four runs, each finished: three are moved aside, two of them kept
        prepare_run_dir(str(run_dir), resume=False, keep_previous=2)
        (run_dir / "results.json").write_text(json.dumps({"run": i}))
    kept = previous_runs(run_dir)
    assert [p.name for p in kept] == ["sst2-tiny-tiny.prev-20260102-000000", "sst2-tiny-tiny.prev-20260103-000000"]
    assert [json.loads((p / "results.json").read_text())["run"] for p in kept] == [1, 2]  # the newest two
    assert json.loads((run_dir / "results.json").read_text())["run"] == 3
    prepare_run_dir(str(run_dir), resume=False, keep_previous=0)
    assert previous_runs(run_dir) == [] and not (run_dir / CHECKPOINT).exists()


def test_a_run_directory_named_near_the_file_name_limit_gets_a_lock_and_moves_aside(tmp_path):
    """A sweep trial's directory is named by its overrides: its lock and the runs moved aside from it still fit
    in a file name (255 bytes), and each keeps one name."""
    from tinykd.run import lock_path, lock_run_dir

    run_dir = tmp_path / ("distill.temperature=1.0,distill.layer_map=[1,2]," + "x" * 202)
    assert len(run_dir.name) == 250
    lock_run_dir(run_dir)
    assert lock_path(run_dir).is_file() and len(lock_path(run_dir).name) == 255
    assert lock_path(run_dir) == lock_path(Path(str(run_dir)))
    import time

    for i in range(3):
        prepare_run_dir(str(run_dir), resume=False, keep_previous=1)
        (run_dir / "results.json").write_text(json.dumps({"run": i}))
        time.sleep(1.1)  # moved-aside names end in the second they were moved
    kept = previous_runs(run_dir)
    assert len(kept) == 1 and json.loads((kept[0] / "results.json").read_text())["run"] == 1
    assert len(kept[0].name) == 255 and kept[0].name.startswith("distill.temperature=1.0,distill.layer_map=[1,2],")
    other = tmp_path / "short"  # a short name is kept whole
    assert lock_path(other).name == ".short.lock"


def test_the_command_line_is_saved_in_the_run_directory(cli, runs_dir, tmp_path):
    from test_errors import save_tiny_classifier

    model = save_tiny_classifier(tmp_path / "model", ["good", "bad", "film"], num_labels=2)
    for _ in range(2):
        r = cli("stage=eval", *SMOKE, f"model={model}")
        assert r.returncode == 0, r.stderr
    run_dir = runs_dir / "smoke" / "eval" / "sst2"
    lines = (run_dir / "commands.txt").read_text().splitlines()
    assert len(lines) == 2  # one line per command that ran there: its time, then the command as given
    for line in lines:
        stamp, command = line.split(" ", 1)
        assert len(stamp) == len("2026-12-02T11:00:00")
        assert command == f"python -m tinykd progress=false stage=eval task=sst2 debug=smoke model={model}"
    assert len((run_dir / "evaluations.jsonl").read_text().splitlines()) == 2


def test_offline_wandb_looks_up_no_host(tmp_path, monkeypatch, capsys):
    """logger=wandb (offline, the default) must not resolve W&B's server: without a network, each lookup
    can wait tens of seconds on DNS before the run starts."""
    import socket

    from omegaconf import OmegaConf

    from tinykd.run import MetricsLogger

    looked_up = []

    def no_dns(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline from logger.mode alone, as a newcomer runs it
    logger_cfg = OmegaConf.create({"name": "wandb", "mode": "offline", "project": "tinykd", "group": None})
    logger = MetricsLogger(tmp_path, logger_cfg, OmegaConf.create({"seed": 1}), "task")
    logger.log({"step": 1, "loss": 0.5})
    logger.close()
    assert looked_up == []
    # the usage telemetry whose first export would look the server up is off for the whole process
    from wandb.analytics.opentelemetry.opentelemetry_proxy import get_open_telemetry_proxy

    assert get_open_telemetry_proxy() is None
    out = capsys.readouterr().out
    assert "[tinykd] Weights & Biases (offline): sync it later with `wandb sync " in out
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 0.5


def test_a_task_run_without_its_general_student_prints_the_command_that_makes_it(cli, make_cfg):
    run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", "name=walk"))
    r = cli("stage=task", "task=sst2", "debug=smoke", "name=walk", "distill.temperature=2")
    assert r.returncode == 2
    assert "there is no general-distilled student at" in r.stderr and "runs/smoke/general/walk/student" in r.stderr
    fix = r.stderr.split("fix: run `", 1)[1].split("`", 1)[0]
    assert fix == "python -m tinykd stage=general debug=smoke name=walk"  # the task's own keys left out
    made = cli(*fix.split()[3:], "train.general.max_steps=2")  # the printed command makes what was missing
    assert made.returncode == 0, made.stderr[-2000:]
    assert "runs/smoke/general/walk/student" in made.stdout


def test_elapsed_seconds_continue_across_a_resume(tmp_path):
    """Each metrics record carries elapsed_s since the run began; a logger reopened on the run (a resume) continues
    from the last record's, and a line cut by a kill is passed over."""
    import time

    from omegaconf import OmegaConf

    from tinykd.run import MetricsLogger

    none = OmegaConf.create({"name": "none"})
    first = MetricsLogger(tmp_path, none, OmegaConf.create({}), "task")
    time.sleep(0.05)
    first.log({"step": 1})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "elaps\n')  # a line cut by a kill
    second = MetricsLogger(tmp_path, none, OmegaConf.create({}), "task")
    second.log({"step": 3})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    a, b = json.loads(lines[0])["elapsed_s"], json.loads(lines[-1])["elapsed_s"]
    assert a >= 0.05 and b >= a
