"""Config tier: every option of every group composes against the typed schema."""

from __future__ import annotations

import copy
import re
import typing

import pytest
from omegaconf import OmegaConf

from tinykd import config
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


def test_task_configs_match_registry(make_cfg):
    """Every GLUE task has its file; every other task file describes its data in task.* (custom leaves
    the files to the command line)."""
    from tinykd.tasks import described_in_config

    described = {o for o in options("task") if described_in_config(make_cfg(f"task={o}").task)}
    assert set(options("task")) == set(TASKS) | described | {"custom"}
    assert described == {"wnut17", "upos", "squad"} and not described & set(TASKS)


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


# ----------------------------------------------------------------------------- one source for each default


def _leaves(d: dict, prefix: str = ""):
    """(dotted key, value) for every leaf of a plain dict; an empty dict is a leaf (it creates a node)."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _without(d: dict, key: str) -> dict:
    """A deep copy of `d` without the leaf `key` (its parent stays, possibly empty)."""
    out = copy.deepcopy(d)
    *parents, last = key.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[last]
    return out


def _at(d: dict, key: str, missing=object()):
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return missing
        d = d[part]
    return d


def _own_values(path) -> tuple[dict, list]:
    """A conf file's own values (Hydra's keys left out: they have no schema) and its defaults list."""
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    data.pop("hydra", None)
    return data, data.pop("defaults", [])


def _group_node(group: str, option: str) -> dict:
    """A group option as composed alone: the schema, then the options its defaults list starts from, then itself."""
    schema = typing.get_type_hints(config.Config)[group]
    node = OmegaConf.structured(schema)
    data, defaults = _own_values(REPO_ROOT / "conf" / group / f"{option}.yaml")
    for base in defaults[: defaults.index("_self_")] if "_self_" in defaults else defaults:
        node = OmegaConf.merge(node, _group_node(group, base))
    return OmegaConf.merge(node, data)


def _is_global(path) -> bool:
    return "# @package _global_" in path.read_text()


CONF_FILES = sorted(p.relative_to(REPO_ROOT / "conf").as_posix() for p in (REPO_ROOT / "conf").rglob("*.yaml"))
# The `# @package _global_` groups, in the order conf/config.yaml lists them: their values merge in this order,
# after every other group's.
GLOBAL_GROUPS = ("experiment", "hparams_search", "debug")


def _global_layers(make_cfg, files: list[str]):
    """The config that the global `files` (one per group) apply to, and their values in merge order."""
    files = sorted(files, key=lambda f: GLOBAL_GROUPS.index(f.split("/")[0]))
    groups, layers = {}, []
    for f in files:
        data, defaults = _own_values(REPO_ROOT / "conf" / f)
        groups.update({k.removeprefix("override /"): v for e in defaults if isinstance(e, dict) for k, v in e.items()
                       if not k.startswith("override /hydra")})
        layers.append((f, data))
    return make_cfg(*(f"{g}={o}" for g, o in groups.items())), layers


def _global_contexts(name: str) -> list[list[str]]:
    """A global file alone, and with each option of the other global groups (debug=smoke runs every experiment)."""
    group = name.split("/")[0]
    return [[name]] + [[name, other] for other in CONF_FILES if other.split("/")[0] in GLOBAL_GROUPS
                       and other.split("/")[0] != group]


@pytest.mark.parametrize("name", CONF_FILES)
def test_no_conf_file_restates_a_default(make_cfg, name):
    """Each value in conf/ changes something: it differs from what the config would be without it (the
    schema's default, or what the file's defaults list, or the groups below a global file, already give).
    A global file's value must matter alone or beside one of the other global groups' options."""
    path = REPO_ROOT / "conf" / name
    data, defaults = _own_values(path)
    contexts = []  # one function per context: the file's values -> the composed config (a plain dict)
    if name == "config.yaml":  # its values come right after the schema, before any group
        contexts.append(lambda d: OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(config.Config), d),
                                                         resolve=False))
    elif _is_global(path):
        for files in _global_contexts(name):
            base, layers = _global_layers(make_cfg, files)

            def compose(d, base=base, layers=layers):
                return OmegaConf.to_container(OmegaConf.merge(base, *(d if f == name else v for f, v in layers)),
                                              resolve=False)
            contexts.append(compose)
    else:
        group = name.split("/")[0]
        schema = typing.get_type_hints(config.Config)[group]
        bases = defaults[: defaults.index("_self_")] if "_self_" in defaults else defaults

        def compose(d):
            node = OmegaConf.structured(schema)
            for b in bases:
                node = OmegaConf.merge(node, _group_node(group, b))
            return OmegaConf.to_container(OmegaConf.merge(node, d), resolve=False)
        contexts.append(compose)
    full = [c(data) for c in contexts]
    restated = [f"{key}: {value!r}" for key, value in _leaves(data)
                if all(_at(c(_without(data, key)), key) == _at(f, key) for c, f in zip(contexts, full))]
    assert not restated, f"conf/{name} restates what the config already is without it: {restated}"


def test_reuse_compares_only_what_the_stage_reads(make_cfg, tmp_path):
    """A general-distilled student is task-agnostic: a run made with one task is reused for another, and
    a change in a key the general stage reads is still found."""
    from tinykd.run import config_differences, save_config

    save_config(tmp_path, make_cfg("stage=general", "task=sst2"))
    assert config_differences(tmp_path / "config.yaml", make_cfg("stage=general", "task=wnut17")) == []
    assert config_differences(tmp_path / "config.yaml", make_cfg("stage=general", "task=wnut17",
                                                                 "corpus.max_lines=7")) == ["corpus.max_lines"]
    save_config(tmp_path, make_cfg("stage=task", "task=sst2"))
    assert "task.name" in config_differences(tmp_path / "config.yaml", make_cfg("stage=task", "task=wnut17"))
