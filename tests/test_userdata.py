"""Your own data (tinykd/data/files.py and text.py): every supported file kind read to the same rows, labels by
problem type, and each bad input refused with the file, the row or line, and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pandas as pd
import pytest

from tinykd import data
from tinykd.choices import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from tinykd.config import REPO_ROOT
from tinykd.errors import TinyKDError

ROWS = [("a fine film", "pos"), ("dull and long", "neg"), ("a joy", "pos"), ("tedious", "neg")]


def task(make_cfg, tmp_path, train, dev, *overrides):
    cfg = make_cfg("stage=task", "task=custom", f"task.train={train}", f"task.dev={dev}", *overrides)
    return cfg.task, str(tmp_path / "raw")


def spec_and_rows(make_cfg, tmp_path, train, dev, *overrides, split="dev"):
    t, raw = task(make_cfg, tmp_path, train, dev, *overrides)
    spec = data.build_spec(t, raw)
    return spec, data.read(t, spec, split, raw)


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(make_cfg, tmp_path, train, dev, *overrides, split="dev") -> TinyKDError:
    with pytest.raises(TinyKDError) as err:
        spec_and_rows(make_cfg, tmp_path, train, dev, *overrides, split=split)
    assert err.value.fix, "every refusal says how to fix it"
    return err.value


# ----------------------------------------------------------------------------- every file kind, the same rows


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "jsonl", "parquet", "arrow"])
def test_every_file_kind_reads_the_same_rows(make_cfg, tmp_path, kind):
    df = pd.DataFrame(ROWS, columns=["review", "sentiment"])
    path = tmp_path / f"data.{kind}"
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif kind == "json":
        path.write_text(json.dumps(df.to_dict(orient="records")))
    elif kind == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif kind == "parquet":
        df.to_parquet(path)
    else:
        datasets.Dataset.from_pandas(df).save_to_disk(str(path))
    spec, dev = spec_and_rows(make_cfg, tmp_path, path, path, "task.text_columns=[review]",
                              "task.label_column=sentiment")
    assert spec.label_names == ("neg", "pos") and spec.problem_type == SINGLE_LABEL and not spec.pair
    assert dev["text_a"] == [r[0] for r in ROWS] and dev["label"] == [1, 0, 1, 0]
    assert spec.metrics == ("accuracy", "macro_f1")


def test_labels_in_numeric_order_and_task_labels_fix_the_order(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", "text,label\na,10\nb,2\nc,2\nd,10\n")
    spec, dev = spec_and_rows(make_cfg, tmp_path, f, f)
    assert spec.label_names == ("2", "10") and dev["label"] == [1, 0, 0, 1]  # 2 < 10, not "10" < "2"
    spec, dev = spec_and_rows(make_cfg, tmp_path, f, f, "task.labels=[10,2]")
    assert spec.label_names == ("10", "2") and dev["label"] == [0, 1, 1, 0]


def test_pairs_regression_and_text_that_looks_like_a_number_or_null(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", 'q,a,score\n"1,5",NA,0.5\nnull,"two\nlines",4\n')
    spec, dev = spec_and_rows(make_cfg, tmp_path, f, f, "task.text_columns=[q,a]", "task.label_column=score",
                              "task.problem_type=regression")
    assert spec.pair and spec.label_names is None and spec.num_labels == 1 and spec.metrics == ("pearson", "spearman")
    assert dev["text_a"] == ["1,5", "null"] and dev["text_b"] == ["NA", "two\nlines"] and dev["label"] == [0.5, 4.0]


def test_multi_label_as_lists_and_as_columns(make_cfg, tmp_path):
    lists = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in [
        {"text": "a", "tags": ["sport", "news"]}, {"text": "b", "tags": []}, {"text": "c", "tags": ["art"]}]))
    spec, dev = spec_and_rows(make_cfg, tmp_path, lists, lists, "task.label_column=tags",
                              f"task.problem_type={MULTI_LABEL}")
    assert spec.label_names == ("art", "news", "sport") and spec.is_multi_label
    assert spec.metrics == ("micro_f1", "macro_f1", "exact_match")
    assert dev["label"] == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
    cols = write(tmp_path / "d.csv", "text,sport,art\na,1,0\nb,0,0\nc,0,1\n")
    spec, dev = spec_and_rows(make_cfg, tmp_path, cols, cols, "task.label_columns=[sport,art]",
                              f"task.problem_type={MULTI_LABEL}")
    assert spec.label_names == ("sport", "art") and dev["label"] == [[1, 0], [0, 0], [0, 1]]


# ----------------------------------------------------------------------------- bad input


def test_missing_column_lists_the_columns(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", "review,label\nok,1\nbad,0\n")
    e = refused(make_cfg, tmp_path, f, f)  # text_columns defaults to [text]
    assert str(f) in e.problem and "no column 'text'" in e.problem and "review, label" in e.problem
    assert "task.text_columns" in e.fix
    e = refused(make_cfg, tmp_path, f, f, "task.text_columns=[review]", "task.label_column=lable")
    assert "no column 'lable'" in e.problem and "task.label_column" in e.fix


def test_empty_file_and_header_only(make_cfg, tmp_path):
    empty = write(tmp_path / "empty.csv", "")
    assert f"{empty} is empty" in refused(make_cfg, tmp_path, empty, empty).problem
    header = write(tmp_path / "header.csv", "text,label\n")
    assert f"{header} holds no rows" in refused(make_cfg, tmp_path, header, header).problem


def test_unsupported_extension(make_cfg, tmp_path):
    f = write(tmp_path / "d.xlsx", "whatever")
    e = refused(make_cfg, tmp_path, f, f)
    assert "'.xlsx'" in e.problem and "task.format=" in e.fix and ".csv" in e.fix


def test_mixed_label_types(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", "text,label\na,1\nb,0\nc,pos\n")
    e = refused(make_cfg, tmp_path, f, f)
    assert "mixes numbers and strings" in e.problem and "'1'" in e.problem and "'pos'" in e.problem
    assert f"{f} row 3, line 4" in e.problem
    j = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    assert "mixes" in refused(make_cfg, tmp_path, j, j).problem


def test_dev_label_missing_from_train(make_cfg, tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nc,pos\nd,neutral\n")
    e = refused(make_cfg, tmp_path, train, dev)
    assert f"{dev} row 2, line 3" in e.problem and "'neutral'" in e.problem and "['neg', 'pos']" in e.problem


def test_empty_text(make_cfg, tmp_path):
    f = write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n\n{"text": "  ", "label": 0}\n')
    e = refused(make_cfg, tmp_path, f, f)
    assert f"{f} row 2, line 3" in e.problem and "column 'text' is empty" in e.problem


def test_multi_label_row_with_an_unknown_label(make_cfg, tmp_path):
    train = write(tmp_path / "train.jsonl", '{"text": "a", "tags": ["x"]}\n{"text": "b", "tags": ["y", "x"]}\n')
    dev = write(tmp_path / "dev.jsonl", '{"text": "c", "tags": ["x", "z"]}\n')
    e = refused(make_cfg, tmp_path, train, dev, "task.label_column=tags", f"task.problem_type={MULTI_LABEL}")
    assert f"{dev} row 1, line 1" in e.problem and "'z'" in e.problem and "['x', 'y']" in e.problem
    not_list = write(tmp_path / "nl.jsonl", '{"text": "c", "tags": "x"}\n')
    e = refused(make_cfg, tmp_path, not_list, not_list, "task.label_column=tags", f"task.problem_type={MULTI_LABEL}")
    assert "not a list of labels" in e.problem and "task.label_columns" in e.fix


def test_regression_column_with_a_non_number(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", "text,score\na,0.5\nb,high\n")
    e = refused(make_cfg, tmp_path, f, f, "task.label_column=score", f"task.problem_type={REGRESSION}")
    assert f"{f} row 2, line 3" in e.problem and "'high', not a number" in e.problem


def test_not_utf8_names_the_line(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nok,1\n".encode() + "caf\xe9,0\n".encode("latin-1"))
    e = refused(make_cfg, tmp_path, f, f)
    assert f"{f} line 3 is not valid UTF-8" in e.problem and "iconv" in e.fix


def test_csv_row_with_the_wrong_number_of_fields(make_cfg, tmp_path):
    f = write(tmp_path / "d.csv", 'text,label\n"quoted, fine",1\nnot, quoted,0\n')
    e = refused(make_cfg, tmp_path, f, f)
    assert f"{f} line 3: 3 fields, but the header has 2" in e.problem and "quote" in e.fix
    short = write(tmp_path / "s.csv", "text,label\nonly text\n")
    assert "line 2: 1 fields" in refused(make_cfg, tmp_path, short, short).problem


def test_config_problems_are_refused_at_start_up(make_cfg, tmp_path):
    from tinykd.config import check

    f = write(tmp_path / "d.csv", "text,label\na,1\n")
    for overrides, message in [
        (("task.text_columns=[a,b,c]",), "one text column"),
        (("task.label_columns=[a,b]",), "describes multi-label data"),
        (("task.metrics=[micro_f1]",), "micro_f1 cannot score single_label_classification"),
        (("task.problem_type=regression", "task.labels=[a,b]"), "has none"),
    ]:
        with pytest.raises(TinyKDError, match=message):
            check(make_cfg("stage=task", "task=custom", f"task.train={f}", f"task.dev={f}", *overrides))
    with pytest.raises(TinyKDError, match="Unknown task 'custom'"):  # task=custom without files
        check(make_cfg("stage=task", "task=custom"))


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_a_bad_file_exits_with_status_2_from_the_command_line(cli, tmp_path):
    f = write(tmp_path / "d.csv", "text,label\nok,1\nnot, quoted,0\n")
    proc = cli("stage=teacher", "task=custom", f"task.train={f}", f"task.dev={f}", "debug=smoke")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {f} line 3: 3 fields" in proc.stderr and "fix:" in proc.stderr and "Traceback" not in proc.stderr


def test_a_hub_dataset_offline_is_a_clear_error(make_cfg, tmp_path):
    cfg = make_cfg("stage=task", "task=custom", "task.hub=someone/reviews", "task.train=train", "task.dev=validation")
    with pytest.raises(TinyKDError) as err:
        data.build_spec(cfg.task, str(tmp_path / "raw"))
    assert "split 'train' of hub dataset someone/reviews" in err.value.problem and "HF_HUB_OFFLINE" in err.value.fix


@pytest.mark.slow  # over 8 s; the default tier stays under ~5 min (make test-slow runs it)
def test_a_task_file_outside_the_repository_with_config_dir(runs_dir, tmp_path):
    """A user's own conf/task/<name>.yaml, kept in their directory, found with Hydra's --config-dir."""
    data = write(tmp_path / "d.csv", "review,stars\n" + "".join(f"text number {i},{i % 3}\n" for i in range(40)))
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "reviews.yaml").write_text(
        f"name: reviews\ntrain: {data}\ndev: {data}\ntext_columns: [review]\nlabel_column: stars\nmax_seq_len: 16\n")
    proc = subprocess.run([sys.executable, "-m", "tinykd", "--config-dir", str(tmp_path / "conf"), "stage=teacher",
                           "task=reviews", "debug=smoke", "train.teacher.max_steps=1", "progress=false"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage=teacher task=reviews" in proc.stdout and "teacher dev accuracy" in proc.stdout
