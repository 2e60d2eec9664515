"""Config tier: every option of every group composes against the typed schema."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from tinykd.config import REPO_ROOT
from tinykd.tasks import TASKS

GROUPS = sorted(p.name for p in (REPO_ROOT / "conf").iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO_ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group not in ("debug", "experiment", "hparams_search"):  # these are @package _global_
        assert cfg[group] is not None
    # the task run is named by task, teacher and student (an experiment may add to the name)
    name = resolved["runs"]["task"].rsplit("/", 1)[1]
    assert re.fullmatch(rf"{cfg.task.name}-(.+-)?{cfg.teacher.name}-{cfg.student.name}(-.+)?", name), name


def test_task_configs_match_registry():
    assert set(options("task")) == set(TASKS)


def test_defaults(make_cfg):
    cfg = make_cfg()
    assert cfg.stage.name == "pipeline"
    assert (cfg.task.name, cfg.teacher.name, cfg.student.name) == ("sst2", "minilm_l6", "tinybert4")
    s = cfg.student
    assert (s.num_layers, s.hidden_size, s.num_heads, s.intermediate_size) == (4, 312, 12, 1200)
    assert cfg.distill.attention_target == "scores" and cfg.distill.pred_loss == "soft_ce"
    # data paths default to ../shared/data beside the clone
    assert cfg.paths.glue_dir == str(REPO_ROOT / ".." / "shared" / "data" / "glue")


def test_data_dir_env_override(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("TINYKD_DATA", str(tmp_path))
    assert make_cfg().task.data_dir == f"{tmp_path}/glue/SST-2"


def test_typed_schema_rejects_wrong_type(make_cfg):
    with pytest.raises(Exception, match="temperature"):
        make_cfg("distill.temperature=hot")


def test_smoke_preset_is_small(make_cfg):
    cfg = make_cfg("debug=smoke")
    assert cfg.teacher.tiny is not None and cfg.student.name == "tiny"
    assert cfg.task.train_limit <= 1000
    assert all(cfg.train[p].max_steps <= 10 for p in cfg.train)


def test_reuse_ignores_options_a_run_predates_only_at_their_default(make_cfg, tmp_path):
    """A finished run written before an option existed matches a config that leaves the option at
    its default, and not one that changes it."""
    from tinykd.run import config_differences, save_config

    cfg = make_cfg("stage=augment", "task=sst2")
    save_config(tmp_path, cfg)
    stored = OmegaConf.load(tmp_path / "config.yaml")
    del stored.augment["mlm_mode"]  # as written before augment.mlm_mode existed
    OmegaConf.save(stored, tmp_path / "config.yaml")
    assert config_differences(tmp_path / "config.yaml", cfg) == []
    assert config_differences(tmp_path / "config.yaml", make_cfg("stage=augment", "task=sst2",
                                                                 "augment.mlm_mode=masked_once")) == ["augment.mlm_mode"]
    assert config_differences(tmp_path / "config.yaml", make_cfg("stage=augment", "task=sst2", "augment.k=3")) == \
        ["augment.k"]
