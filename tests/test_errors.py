"""Config tier, bad inputs: each fails with the problem named and the fix stated.

Most cases call the stage in-process and match the `TinyKDError` message; the ones that
only the command line sees (Hydra's own errors, the exit status, the one-message stderr)
run `python -m tinykd` in a subprocess.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_stage
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

from tinykd.cli import STAGES
from tinykd.errors import NonFiniteLossError, TinyKDError
from tinykd.run import load_checkpoint
from tinykd.tasks import TASKS

# where paths.data_dir points by default
SST2_DEV = Path(os.environ.get("TINYKD_DATA", REPO.parent / "shared" / "data")) / "glue" / "SST-2" / "dev.tsv"


# ----------------------------------------------------------------------------- helpers


def sst2_dir(root: Path, train_lines: list[str]) -> Path:
    """An SST-2 directory: `train.tsv` as given (header first), a real 20-line `dev.tsv`."""
    root.mkdir(parents=True)
    (root / "train.tsv").write_text("".join(line + "\n" for line in train_lines))
    dev = SST2_DEV.read_text().splitlines()[:21]
    (root / "dev.tsv").write_text("\n".join(dev) + "\n")
    return root


def save_tiny_classifier(out: Path, words: list[str], num_labels: int) -> Path:
    """A small BERT classifier and its own WordPiece tokenizer, saved as a model directory."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _compose(*overrides: str):
    """`make_cfg` for module-scoped fixtures (which cannot use the function-scoped one)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["progress=false", *overrides])


@pytest.fixture(scope="module")
def finetuned_teacher(tmp_path_factory, cache_dir) -> Path:
    """stage=teacher on smoke, once for this module: the export the task stage distils from."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYKD_RUNS", str(tmp_path_factory.mktemp("teacher-runs")))
        mp.setenv("TINYKD_CACHE", str(cache_dir))  # the same tiny teacher the tests' runs_dir uses
        res = run_stage(_compose("stage=teacher", "task=sst2", "debug=smoke"))
    export = Path(res["export"])
    assert (export / "config.json").is_file()
    return export


# ----------------------------------------------------------------------------- names Hydra does not check (tests/test_usage.py: those it does)


@pytest.mark.parametrize("override", ["stage.name=nope", "task.name=nope"])
def test_unknown_stage_or_task_name_past_hydra(make_cfg, override):
    """A name set directly (not through the group) is caught by tinykd with the same choices."""
    key = override.split(".")[0]
    choices = STAGES if key == "stage" else tuple(TASKS)
    with pytest.raises(TinyKDError, match=rf"Unknown {key} 'nope'") as e:
        run_stage(make_cfg("stage=teacher", "debug=smoke", override))
    assert all(c in e.value.fix for c in choices)
    assert f"{key}=<name>" in e.value.fix


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_tinykd_error_exits_2_with_one_message_and_no_traceback(cli):
    r = cli("stage=eval", "debug=smoke")  # no model=
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: stage=eval needs a model directory.",
                     "  fix: add model=<path to a model directory>."], r.stderr


# ----------------------------------------------------------------------------- task data


def test_missing_data_file(make_cfg, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    with pytest.raises(TinyKDError, match=re.escape(f"data file {empty / 'train.tsv'} not found")) as e:
        run_stage(make_cfg("stage=teacher", "debug=smoke", f"task.data_dir={empty}"))
    assert "task.data_dir=" in e.value.fix


def test_empty_data_file(make_cfg, tmp_path):
    data = sst2_dir(tmp_path / "sst2", ["sentence\tlabel"])
    with pytest.raises(TinyKDError, match=re.escape(f"{data / 'train.tsv'} holds no examples")) as e:
        run_stage(make_cfg("stage=teacher", "debug=smoke", f"task.data_dir={data}"))
    assert "task.data_dir" in e.value.fix


def test_missing_column(make_cfg, tmp_path):
    data = sst2_dir(tmp_path / "sst2", ["sentence\tlabel", "a fine film\t1", "no label column here"])
    with pytest.raises(TinyKDError, match=re.escape(
            f"{data / 'train.tsv'} line 3: 1 tab-separated columns, but task sst2 reads column 2")) as e:
        run_stage(make_cfg("stage=teacher", "debug=smoke", f"task.data_dir={data}"))
    assert "task=<name>" in e.value.fix


def test_label_out_of_range(make_cfg, tmp_path):
    data = sst2_dir(tmp_path / "sst2", ["sentence\tlabel", "a fine film\t1", "a dull film\t0", "odd one\t7"])
    with pytest.raises(TinyKDError, match=re.escape(
            f"{data / 'train.tsv'} line 4: label '7' is out of range for task sst2 (expected one of ['0', '1'])")) as e:
        run_stage(make_cfg("stage=teacher", "debug=smoke", f"task.data_dir={data}"))
    assert "fix or remove that row" in e.value.fix


# ----------------------------------------------------------------------------- layer maps, heads, vocabularies


def test_layer_map_beyond_teacher_depth(make_cfg):
    # smoke: teacher 4 layers, student 2
    with pytest.raises(TinyKDError,
                       match=r"student layer 2 -> teacher layer 9, but the teacher has layers 1\.\.4") as e:
        run_stage(make_cfg("stage=general", "debug=smoke", "distill.layer_map=list", "distill.layers=[1,9]"))
    assert "distill.layers" in e.value.fix and "1..4" in e.value.fix


def test_layer_map_not_one_per_student_layer(make_cfg):
    with pytest.raises(TinyKDError, match=r"got \[1, 2, 3\] for a 2-layer student") as e:
        run_stage(make_cfg("stage=general", "debug=smoke", "distill.layer_map=list", "distill.layers=[1,2,3]"))
    assert "distill.layers=[t1,...,t2]" in e.value.fix


def test_attention_scores_with_different_head_counts(make_cfg):
    with pytest.raises(TinyKDError, match=r"the student has 2 heads and the teacher 4") as e:
        run_stage(make_cfg("stage=general", "debug=smoke", "student.num_heads=2"))
    assert "distill.attention_heads=mean" in e.value.fix

    # the option the message names does fix it
    res = run_stage(make_cfg("stage=general", "debug=smoke", "student.num_heads=2", "distill.attention_heads=mean",
                             "train.general.max_steps=2"))
    assert res["steps"] == 2
    assert (Path(res["export"]) / "config.json").is_file()


def test_student_vocabulary_differs_from_teachers(make_cfg, tmp_path, finetuned_teacher):
    student = save_tiny_classifier(tmp_path / "other-vocab", ["zebra", "quokka", "##s"], num_labels=2)
    with pytest.raises(TinyKDError, match=re.escape(f"Student vocabulary (8 tokens, {student}) differs from the "
                                                    "teacher's (")) as e:
        run_stage(make_cfg("stage=task", "task=sst2", "debug=smoke", f"stage.teacher_dir={finetuned_teacher}",
                           f"student.init={student}"))
    assert "student.init=random" in e.value.fix and "teacher's tokenizer" in e.value.fix


# ----------------------------------------------------------------------------- non-finite loss


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(make_cfg):
    # lr=1e30: step 1's update leaves weights ~1e30 (finite), so step 2's loss overflows to nan
    cfg = make_cfg("stage=general", "debug=smoke", "train.general.lr=1e30", "train.general.save_every=1")
    with pytest.raises(NonFiniteLossError, match=r"Loss became (nan|inf|-inf) at step (\d+)") as e:
        run_stage(cfg)
    failed_at = int(re.search(r"at step (\d+)", e.value.problem).group(1))
    assert "train.<phase>.lr" in e.value.fix

    run_dir = Path(cfg.runs.general)
    assert str(run_dir / "checkpoints" / "last.pt") in e.value.problem
    ckpt = load_checkpoint(run_dir)
    assert ckpt is not None and ckpt["phase"] == "general"
    assert 1 <= ckpt["step"] < failed_at
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    # the student's weights load strictly into a plain BertModel of the smoke student's shape
    sd = {k.removeprefix("student."): v for k, v in ckpt["model"].items() if k.startswith("student.")}
    vocab, width = sd["embeddings.word_embeddings.weight"].shape
    student = BertModel(BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64,
                                   max_position_embeddings=sd["embeddings.position_embeddings.weight"].shape[0]),
                        add_pooling_layer=any(k.startswith("pooler.") for k in sd))
    student.load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------- teacher sources


def test_teacher_path_does_not_exist(make_cfg):
    # the default teacher (minilm_l6), its offline package switched off
    with pytest.raises(TinyKDError, match=r"teacher path /does/not/exist does not exist") as e:
        run_stage(make_cfg("stage=teacher", "teacher.path=/does/not/exist", "teacher.package=null"))
    assert "teacher.path=" in e.value.fix


def test_hub_id_while_offline_fails_fast(make_cfg, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = make_cfg("stage=teacher", "teacher.path=some-org/some-model", "teacher.package=null")
    t0 = time.monotonic()
    with pytest.raises(TinyKDError, match=r"'some-org/some-model' is a hub id, but the hub is offline") as e:
        run_stage(cfg)
    assert time.monotonic() - t0 < 5, "an offline hub id must fail at once, not after a network timeout"
    assert "HF_HUB_OFFLINE" in e.value.fix and "teacher.path=<local model directory>" in e.value.fix


# ----------------------------------------------------------------------------- eval, resume


def test_eval_without_model(make_cfg):
    with pytest.raises(TinyKDError, match=r"stage=eval needs a model directory") as e:
        run_stage(make_cfg("stage=eval", "debug=smoke"))
    assert "model=" in e.value.fix


def test_eval_model_with_other_label_count(make_cfg, tmp_path):
    model = save_tiny_classifier(tmp_path / "three-labels", ["good", "bad"], num_labels=3)
    with pytest.raises(TinyKDError, match=re.escape(f"Model {model} has 3 output labels; task sst2 has 2")) as e:
        run_stage(make_cfg("stage=eval", "task=sst2", "debug=smoke", f"model={model}"))
    assert "task=<name>" in e.value.fix


def test_resume_without_checkpoint(make_cfg):
    cfg = make_cfg("stage=teacher", "task=sst2", "debug=smoke", "resume=true")
    with pytest.raises(TinyKDError, match=re.escape(
            f"resume=true but {Path(cfg.runs.teacher) / 'checkpoints' / 'last.pt'} does not exist")) as e:
        run_stage(cfg)
    assert "drop resume=true" in e.value.fix


def test_hub_dataset_while_offline(make_cfg, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TinyKDError, match="Could not load GLUE sst2 from the Hugging Face hub") as e:
        run_stage(make_cfg("stage=teacher", "task=sst2", "debug=smoke", "task.source=hub"))
    assert "task.source=tsv" in e.value.fix
