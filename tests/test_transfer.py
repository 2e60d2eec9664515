"""Teacher-labelled transfer data (task.transfer): read for every task family, never what dev or test scores,
labelled once by the teacher and cached, mixed with the training rows as asked, and refused before any step
when it cannot be read."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from conftest import run_stage
from tinykd import config, data
from tinykd.config import REPO_ROOT
from tinykd.errors import TinyKDError
from tinykd.losses import gold_label_loss, task_loss
from tinykd.run import read_results

SHARED = REPO_ROOT.parent / "shared" / "data"
TWEETS = SHARED / "tweets" / "tweeteval.txt"


def tweets(n: int, skip: int = 0) -> list[str]:
    with open(TWEETS, encoding="utf-8") as f:
        return [next(f).strip() for _ in range(skip + n)][skip:]


def dev_sentences(n: int) -> list[str]:
    """The first `n` WNUT-17 dev sentences, their words joined by spaces."""
    out, words = [], []
    for line in (SHARED / "ner" / "wnut17" / "dev.conll").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            words.append(line.split("\t")[0] if "\t" in line else line.split()[0])
        elif words:
            out.append(" ".join(words))
            words = []
        if len(out) == n:
            break
    return out


def teacher_cache_entries(cache_dir: Path) -> dict[str, int]:
    root = cache_dir / "teacher_outputs"
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else {}


# ----------------------------------------------------------------------------- end to end, per family


def test_token_transfer_end_to_end(make_cfg, tmp_path, cache_dir):
    """WNUT-17 with tweets: dev sentences hidden among them (one as it is, one upper-cased with other spacing and
    punctuation) are dropped, one with a word added is kept; the dev figure is dev's own (stage=eval of the export gives it again); a second run with another seed
    reads the teacher's labels from the cache instead of computing them again."""
    leaked = dev_sentences(3)
    lines = tweets(60) + [leaked[0], leaked[1].upper().replace(" ", "  ") + " !!", leaked[2] + " banana"]
    transfer = tmp_path / "tweets.txt"
    transfer.write_text("\n".join(lines) + "\n", encoding="utf-8")
    given = ("task=wnut17", "debug=smoke", f"task.transfer={transfer}")
    pipeline = run_stage(make_cfg("stage=pipeline", *given))
    run_dir = Path(pipeline["student_export"]).parent
    res = read_results(run_dir)
    t = res["transfer"]
    assert t["read"] == 63 and t["equal_to_a_scored_example"] == 2
    assert t["examples"] == 61 and t["drawn"] == t["rows"] and t["training_rows"] > 0
    assert "transfer data" in (Path(pipeline["student_export"]) / "README.md").read_text()
    # the dev figure is computed on dev alone
    ev = run_stage(make_cfg("stage=eval", "task=wnut17", "debug=smoke", f"model={pipeline['student_export']}"))
    assert ev["dev"]["entity_f1"] == pytest.approx(res["dev"]["entity_f1"], abs=1e-9)
    assert ev["dev"]["token_accuracy"] == pytest.approx(res["dev"]["token_accuracy"], abs=1e-9)
    # the teacher's labels are cached once: another seed's run adds no entry and rewrites none
    before = teacher_cache_entries(cache_dir)
    assert len(before) >= 2  # the training rows' and the transfer rows'
    again = run_stage(make_cfg("stage=task", *given, "seed=7", f"runs.task={tmp_path / 'again'}",
                               f"runs.teacher={Path(pipeline['teacher_export']).parent}",
                               f"runs.general={Path(pipeline['general_export']).parent}"))
    assert teacher_cache_entries(cache_dir) == before
    assert again["transfer"]["rows"] == t["rows"]


@pytest.mark.slow
def test_sequence_transfer_end_to_end(make_cfg, tmp_path, cache_dir):
    """SST-2 with one text a line; a dev sentence among them is dropped; share 0.5 draws as many transfer rows as
    there are training rows."""
    dev = (SHARED / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1].split("\t")[0]
    transfer = tmp_path / "texts.txt"
    transfer.write_text("\n".join([*tweets(400), dev]) + "\n", encoding="utf-8")
    res = run_stage(make_cfg("stage=pipeline", "task=sst2", "debug=smoke", f"task.transfer={transfer}",
                             "task.transfer_share=0.5", "task.train_limit=100", "task.transfer_limit=500"))
    t = read_results(Path(res["student_export"]).parent)["transfer"]
    assert t["equal_to_a_scored_example"] == 1 and t["rows"] == 400
    assert t["drawn"] == t["training_rows"] == 100
    ev = run_stage(make_cfg("stage=eval", "task=sst2", "debug=smoke", f"model={res['student_export']}"))
    assert ev["dev"]["accuracy"] == pytest.approx(res["dev"]["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_qa_transfer_end_to_end(make_cfg, tmp_path):
    """SQuAD with (question, context) rows of a JSON Lines file, then with `other_paragraphs`: every transfer window is
    labelled by the teacher (its logits per token), none is a dev question."""
    doc = json.loads((SHARED / "squad" / "train.json").read_text(encoding="utf-8"))
    paragraphs = [p for a in doc["data"][-2:] for p in a["paragraphs"]][:20]
    rows = [{"question": qa["question"], "context": p["context"]} for p in paragraphs for qa in p["qas"][:2]]
    transfer = tmp_path / "pairs.jsonl"
    transfer.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for source, name in ((transfer, "file"), ("other_paragraphs", "other")):
        res = run_stage(make_cfg("stage=pipeline", "task=squad", "debug=smoke", f"task.transfer={source}",
                                 "task.transfer_limit=40", f"name={name}"))
        t = read_results(Path(res["student_export"]).parent)["transfer"]
        assert t["read"] == 40 and t["rows"] >= 40 and t["drawn"] == t["rows"]  # a pair's windows are its rows
        ev = run_stage(make_cfg("stage=eval", "task=squad", "debug=smoke", f"model={res['student_export']}"))
        assert ev["dev"]["squad_f1"] == pytest.approx(res["dev"]["squad_f1"], abs=1e-9)


# ----------------------------------------------------------------------------- the parts


def _rows(n: int, transfer: bool = False) -> datasets.Dataset:
    """n featurised rows; transfer rows carry `transfer` = 1, as data.load_transfer makes them."""
    ds = datasets.Dataset.from_dict({"input_ids": [[1, i] for i in range(n)], "labels": list(range(n))})
    return ds.add_column("transfer", [1] * n) if transfer else ds


@pytest.mark.parametrize("share, train, transfer, want", [
    (None, 10, 25, 25),  # every transfer row once
    (0.5, 10, 25, 10),  # 0.5 / 0.5 x 10 = 10: a subset of them
    (0.2, 10, 25, 2),  # 0.2 / 0.8 x 10 = 2.5 -> 2 (round half to even)
    (0.8, 10, 25, 40),  # 0.8 / 0.2 x 10 = 40 > 25: all of them, 15 a second time
])
def test_mix_keeps_every_training_row_and_draws_the_share_asked(share, train, transfer, want):
    mixed = data.mix(_rows(train), _rows(transfer, True), share, seed=0)
    flags = mixed["transfer"]
    assert flags.count(0) == train and flags.count(1) == want
    assert [r["labels"] for r, f in zip(mixed, flags) if f == 0] == list(range(train))
    drawn = [r["input_ids"][1] for r, f in zip(mixed, flags) if f == 1]
    counts = [drawn.count(i) for i in range(transfer)]
    assert max(counts) - min(counts) <= 1 if want >= transfer else max(counts) == 1  # repeated evenly, or distinct
    again = data.mix(_rows(train), _rows(transfer, True), share, seed=0)
    assert again["input_ids"] == mixed["input_ids"]  # seeded


def test_the_gold_label_loss_leaves_transfer_rows_out():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    batch = {"labels": torch.tensor([0, 0, 1]), "transfer": torch.tensor([0, 1, 0])}
    # by hand: rows 0 and 2, cross-entropy -log softmax: row 0 log(1 + e^-2), row 2 log 2
    want = (torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log(torch.tensor(2.0))) / 2
    got = gold_label_loss(logits, batch, "single_label_classification", "sequence_classification")
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
    only = gold_label_loss(logits, {**batch, "transfer": torch.ones(3, dtype=torch.long)},
                           "single_label_classification", "sequence_classification")
    only.backward()  # no gold rows: zero, and still a loss to step on
    assert only.item() == 0.0 and logits.grad is not None
    without = gold_label_loss(logits.detach(), {"labels": batch["labels"]}, "single_label_classification",
                              "sequence_classification")
    assert without.item() == pytest.approx(task_loss(logits.detach(), batch["labels"],
                                                     "single_label_classification").item())


# ----------------------------------------------------------------------------- bad transfer files


@pytest.mark.parametrize("content, match", [
    (b"", "holds no text"),
    (b"\n  \n", "holds no text"),
    (b"a fine line\n\xff\xfe broken\n", "line 2 is not valid UTF-8"),
])
def test_an_unreadable_text_file_is_refused_before_any_step(make_cfg, tmp_path, content, match, capsys):
    bad = tmp_path / "transfer.txt"
    bad.write_bytes(content)
    with pytest.raises(TinyKDError, match=match):
        run_stage(make_cfg("stage=pipeline", "task=wnut17", "debug=smoke", f"task.transfer={bad}"))
    assert "pipeline: teacher" not in capsys.readouterr().out  # refused before the first step


@pytest.mark.parametrize("task, rows, match", [
    ("wnut17", [{"text": "no tokens column"}], "tokens"),
    ("squad", [{"question": "where?"}], "context"),
])
def test_a_table_without_the_task_s_columns_is_refused(make_cfg, tmp_path, task, rows, match):
    bad = tmp_path / "transfer.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TinyKDError, match=match):
        run_stage(make_cfg("stage=pipeline", f"task={task}", "debug=smoke", f"task.transfer={bad}"))


@pytest.mark.parametrize("overrides, match", [
    (("task.transfer=/no/such/file.txt",), "no such file"),
    (("task.transfer=other_paragraphs",), "pairs QA questions"),
    (("task.transfer={tweets}", "stage.phases=[finetune]"), "baseline"),
    (("task.transfer={tweets}", "distill.teacher_cache=none"), "teacher_cache"),
    (("task.transfer={tweets}", "task.transfer_share=1.5"), "transfer_share"),
])
def test_impossible_transfer_settings_are_refused_at_start_up(make_cfg, overrides, match):
    with pytest.raises(TinyKDError, match=match):
        config.check(make_cfg("stage=task", "task=wnut17", *(o.format(tweets=TWEETS) for o in overrides)))


def test_stages_that_do_not_distil_do_not_read_transfer_keys(make_cfg):
    """The teacher's (and augment's, eval's) result does not depend on task.transfer: its reuse check ignores it."""
    cfg = make_cfg("stage=teacher", "task=wnut17")
    assert not config.result_depends_on(cfg, "task.transfer")
    assert config.result_depends_on(make_cfg("stage=task", "task=wnut17"), "task.transfer")
    assert config.result_depends_on(make_cfg("stage=pipeline", "task=wnut17"), "task.transfer_share")
