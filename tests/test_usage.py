"""`python -m tinykd --help`, a bare `python -m tinykd`, and the command line's overrides checked before
Hydra composes: an unknown stage or group option, a misspelt key, `+key=` and a value of the wrong type
each exit with status 2 and one message (the problem, the fix, a "did you mean" where a name is close).

In-process through `tinykd.cli.main` (the check returns before Hydra starts); one subprocess shows the
status reaches the shell.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from tinykd import cli
from tinykd.config import STAGES
from tinykd.usage import GROUPS, group_options, split_command_line


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["tinykd", *args])
    rc = cli.main()
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_message(err: str) -> tuple[str, str]:
    """The refusal's two lines: `error: ...` and `fix: ...`, and nothing else."""
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("  fix: "), err
    return lines[0], lines[1]


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("stage=task", "--help")])
def test_help_lists_stages_groups_and_how_to_override(monkeypatch, capsys, args):
    rc, out, _ = run_main(monkeypatch, capsys, *args)
    assert rc == 0
    assert out.splitlines()[0].startswith("usage: python -m tinykd stage=<stage>")
    for name, spec in STAGES.items():
        assert f"  {name}" in out and spec.summary in out
    for group in GROUPS:
        assert f"  {group} " in out
        assert ", ".join(group_options(group)) in out
    assert "--cfg job" in out and "train.task_prediction.lr=5e-5" in out


def test_bare_command_prints_usage_instead_of_a_run():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "tinykd"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 2
    assert r.stdout.startswith("usage: python -m tinykd")
    assert "[tinykd]" not in r.stdout  # nothing started


def test_unknown_stage_exits_2_from_the_shell(cli):
    r = cli("stage=distil")
    assert r.returncode == 2
    error, fix = one_message(r.stderr)
    assert "there is no stage option 'distil'" in error
    assert all(name in fix for name in STAGES)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("group", "typo", "meant"), [("student", "tinybrt4", "tinybert4"), ("task", "sst", "sst2"),
                                                      ("stage", "generl", "general")])
def test_unknown_group_option_suggests_the_close_one(monkeypatch, capsys, group, typo, meant):
    rc, _, err = run_main(monkeypatch, capsys, f"{group}={typo}")
    assert rc == 2
    error, fix = one_message(err)
    assert f"no {group} option '{typo}'" in error
    assert f"did you mean {group}={meant}" in fix
    assert ", ".join(group_options(group)) in fix


@pytest.mark.parametrize(("override", "meant"), [
    ("distill.temprature=2", "distill.temperature"),
    ("train.genral.max_steps=3", "train.general"),
    ("studnt=tiny", "student=tiny"),
    ("student.hiden_size=64", "student.hidden_size"),
])
def test_misspelt_key_exits_2_with_did_you_mean(monkeypatch, capsys, override, meant):
    rc, _, err = run_main(monkeypatch, capsys, "stage=general", override)
    assert rc == 2
    error, fix = one_message(err)
    assert "is not a tinykd key" in error
    assert f"did you mean {meant}" in fix


def test_plus_on_a_key_nothing_reads_is_refused(monkeypatch, capsys):
    """`+lr=5e-5` would add a top-level `lr` that no stage reads: the run would ignore it."""
    rc, _, err = run_main(monkeypatch, capsys, "stage=task", "+lr=5e-5")
    assert rc == 2
    error, fix = one_message(err)
    assert "'+' adds a new key, lr, and nothing in tinykd reads it" in error
    assert "train.task_prediction.lr" in fix


@pytest.mark.parametrize("override", ["+distill.temperature=2", "+student=tiny"])
def test_plus_on_an_existing_key_or_group_says_drop_it(monkeypatch, capsys, override):
    rc, _, err = run_main(monkeypatch, capsys, "stage=task", override)
    assert rc == 2
    _, fix = one_message(err)
    assert f"drop the '+': {override.lstrip('+')}" in fix


@pytest.mark.parametrize(("override", "wanted"), [("train.general.max_steps=abc", "a whole number"),
                                                  ("train.general.max_steps=2.5", "a whole number"),
                                                  ("distill.temperature=hot", "a number"),
                                                  ("progress=maybe", "true or false")])
def test_value_of_the_wrong_type_is_named(monkeypatch, capsys, override, wanted):
    rc, _, err = run_main(monkeypatch, capsys, "stage=general", override)
    assert rc == 2
    error, _ = one_message(err)
    assert f"takes {wanted}" in error


def test_a_value_inside_a_value_is_refused(monkeypatch, capsys):
    rc, _, err = run_main(monkeypatch, capsys, "stage=general", "train.general.lr.x=3")
    assert rc == 2
    error, fix = one_message(err)
    assert "train.general.lr is a value, not a group of keys" in error


@pytest.mark.parametrize("args", [
    ("stage=task", "task=sst2", "distill.temperature=2", "student.init=pruned", "teacher.path=null"),
    ("-m", "stage=task", "distill.temperature=1,2", "student=tiny,small", "hydra.sweeper.n_trials=3"),
    ("stage=task", "distill.weights.relation=1", "train.task_prediction.lr=${train.general.lr}", "~seed"),
    # OmegaConf's conversions, as Hydra applies them; ++ sets a key whether or not it exists
    ("stage=task", "resume=yes", "seed='42'", "train.task_prediction.lr=1", "progress=0", "++seed=1"),
    ("-sc", "install=bash"),
])
def test_valid_command_lines_pass_the_check(args):
    from tinykd.usage import check_overrides

    flags, overrides = split_command_line(args)
    check_overrides(overrides, multirun="-m" in flags)  # raises on a refusal


def test_groups_of_a_config_dir_of_your_own_are_options(tmp_path):
    """`--config-dir DIR task=mytask` (docs/config.md) and `hydra.searchpath=[file://DIR]`: DIR's groups count."""
    from tinykd.errors import TinyKDError
    from tinykd.usage import check_overrides, config_dirs

    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "mytask.yaml").write_text("name: mytask\n")
    for args in (["--config-dir", str(tmp_path), "task=mytask"], [f"--config-dir={tmp_path}", "task=mytask"],
                 ["task=mytask", f"hydra.searchpath=[file://{tmp_path}]"]):
        flags, overrides = split_command_line(args)
        check_overrides(overrides, extra_dirs=config_dirs(flags, overrides))
    with pytest.raises(TinyKDError, match="there is no task option 'mytask'"):
        check_overrides(["task=mytask"])


def test_hydra_flags_and_their_values_are_not_overrides():
    flags, overrides = split_command_line(["--cfg", "job", "stage=task", "-cn", "config", "--info", "defaults",
                                           "--info", "task=sst2", "-m"])
    assert flags == ["--cfg", "job", "-cn", "config", "--info", "defaults", "--info", "-m"]
    assert overrides == ["stage=task", "task=sst2"]


# ----------------------------------------------------------------------------- resume with another config


BASE = ("stage=teacher", "task=sst2", "debug=smoke")


def interrupt(make_cfg) -> None:
    """A real smoke teacher run stopped after 2 steps: its checkpoint and config.yaml stay."""
    from conftest import run_stage

    assert run_stage(make_cfg(*BASE, "interrupt_after=2")).get("interrupted")


@pytest.fixture(scope="module")
def interrupted_teacher(tmp_path_factory, cache_dir):
    """`make_cfg` (module-scoped) whose runs directory holds an interrupted teacher run; the refusals
    below write nothing, so they share it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    runs = tmp_path_factory.mktemp("resume-runs")

    def make_cfg(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=["progress=false", f"paths.runs={runs}", *overrides])

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_CACHE", str(cache_dir))
        interrupt(make_cfg)
        yield make_cfg


@pytest.mark.parametrize(("change", "key"), [("train.teacher.lr=3e-3", "train.teacher.lr"),
                                             ("task.data_dir=/elsewhere/SST-2", "task.data_dir"),
                                             ("seed=7", "seed")])
def test_resume_with_a_changed_config_is_refused_naming_the_keys(interrupted_teacher, change, key):
    from conftest import run_stage

    from tinykd.errors import TinyKDError

    for flag in ("resume=true", "reuse=true"):  # reuse=true resumes an interrupted run: the same check
        with pytest.raises(TinyKDError, match="cannot resume with this one") as e:
            run_stage(interrupted_teacher(*BASE, change, flag))
        assert f"{key}: " in e.value.problem and " then, " in e.value.problem
        assert "config.yaml" in e.value.fix and "drop" in e.value.fix


def test_resume_may_change_budgets_and_logging(make_cfg):
    from conftest import run_stage

    interrupt(make_cfg)
    res = run_stage(make_cfg(*BASE, "resume=true", "train.teacher.max_steps=4", "train.teacher.log_every=1",
                             "logger=none", "keep_checkpoints=3", "engine.num_threads=1"))
    assert not res.get("interrupted")
    assert "dev" in res


# ----------------------------------------------------------------------------- output a person can read


def test_stage_output_in_a_log_file_is_tinykds_own_lines(runs_dir):
    """Piped to a file (not a terminal): progress is a line every log_every steps, each dev evaluation a line,
    and no library load report, ANSI code or warning source line."""
    r = subprocess.run([sys.executable, "-m", "tinykd", "stage=teacher", "task=sst2", "debug=smoke",
                        "train.teacher.log_every=2", "train.teacher.eval_every=3"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=os.environ.copy())  # progress on (the default), stderr a pipe
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    progress = [x for x in r.stdout.splitlines() if x.startswith("[tinykd] teacher step ") and ": loss " in x]
    assert [x.split(":")[0] for x in progress] == [f"[tinykd] teacher step {s}/6" for s in (2, 4, 6)]
    assert all(" examples/s, " in x and " min left" in x for x in progress)
    evals = [x for x in r.stdout.splitlines() if x.startswith("[tinykd] teacher step ") and ": dev accuracy " in x]
    assert [x.split(":")[0] for x in evals] == ["[tinykd] teacher step 3/6", "[tinykd] teacher step 6/6"]
    for noise in ("LOAD REPORT", "\x1b[", "UserWarning", "warnings.warn", "it/s]", "\r"):
        assert noise not in out, noise
    assert all(line.startswith("[tinykd] ") for line in out.splitlines() if line.strip())


def test_a_library_warning_is_one_line(capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli.one_line_warning
        warnings.warn("something odd\nwith a second line", UserWarning)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("[tinykd] UserWarning (tests/test_usage.py:") and err.rstrip().endswith(": something odd")


def test_make_help_lists_every_target_aligned():
    import re

    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.+)$", makefile, re.M).group(1).split()
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    listed = [line.split()[1] for line in out.splitlines()]
    assert listed == [t for t in re.findall(r"^([a-z0-9-]+):", makefile, re.M)]  # in the Makefile's order
    assert set(listed) == set(phony)
    column = {len(re.match(r"  make \S+ +", line).group(0)) for line in out.splitlines()}
    assert len(column) == 1  # every description starts in one column
