"""`make bench-custom`'s data: the SST tree parser and its labels, worked out by hand; the GLUE-to-CSV and
GLUE-to-JSON-Lines conversions read back by tinykd's custom path as the GLUE loader reads the TSVs."""

from __future__ import annotations

from omegaconf import OmegaConf

from tinykd import data
from tinykd.bench.custom import mrpc_jsonl, parse_tree, sst2_csv, tree_labels
from tinykd.config import TaskConfig
from tinykd.data.text import read_glue_tsv
from tinykd.tasks import get_task

# "Not -LRB- very -RRB- good , but fun" with a very negative word and a positive two-word phrase
TREE = "(1 (2 (1 Not) (2 (2 -LRB-) (2 very) (2 -RRB-))) (3 (0 good\\/bad) (3 (2 ,) (3 (2 but) (4 fun)))))"


def test_parse_tree_by_hand():
    nodes = parse_tree(TREE)
    assert nodes[0] == (1, ["Not", "(", "very", ")", "good/bad", ",", "but", "fun"])  # root first, unescaped
    assert [label for label, _ in nodes] == [1, 2, 1, 2, 2, 2, 2, 3, 0, 3, 2, 3, 2, 4]
    assert nodes[7] == (3, ["good/bad", ",", "but", "fun"])


def test_tree_labels_by_hand():
    # root 1: negative; a node labelled 4 (fun) and one labelled 0 (good/bad); mixed: "good/bad , but fun" (3, four
    # words) against the root (1, eight words)
    assert tree_labels(parse_tree(TREE)) == ["negative", "has_very_positive_phrase", "has_very_negative_phrase",
                                             "mixed"]
    # a one-word negative phrase does not make a sentence mixed; a neutral root is neither positive nor negative
    assert tree_labels(parse_tree("(2 (1 dull) (3 (2 but) (3 nice)))")) == []
    assert tree_labels(parse_tree("(3 (3 (3 very) (2 nice)) (1 (1 dull) (2 ending)))")) == ["positive", "mixed"]


def _task(**kw):
    return OmegaConf.merge(OmegaConf.structured(TaskConfig), {"name": "t", **kw})


def test_conversions_read_back_as_glue(tmp_path):
    # GLUE TSVs: no quoting, so quotes and commas are text; SST-2 rows end in a space
    sst = tmp_path / "SST-2"
    sst.mkdir()
    rows = 'sentence\tlabel\nit \'s " quoted " , and fun \t1\nflat , dull \t0\nok \t1\n'
    for split in ("train", "dev"):
        (sst / f"{split}.tsv").write_text(rows)
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    pairs = '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said " yes " .\tHe agreed , " yes " .\n0\t3\t4\tA b .\tC d .\n'
    for split in ("train", "dev"):
        (mrpc / f"{split}.tsv").write_text(pairs, encoding="utf-8")

    cache = str(tmp_path / "cache")
    for glue_dir, convert, name, task in (
        (sst, sst2_csv, "sst2", dict(text_columns=["text"], label_column="label")),
        (mrpc, mrpc_jsonl, "mrpc", dict(text_columns=["sentence1", "sentence2"], label_column="label")),
    ):
        files = convert(glue_dir, tmp_path / f"{name}-out")
        cfg = _task(train=str(files["train"]), dev=str(files["dev"]), **task)
        spec = data.build_spec(cfg, cache)
        got = data.read(cfg, spec, "dev", cache)
        want = read_glue_tsv(glue_dir / "dev.tsv", get_task(name))
        assert got["text_a"] == want["text_a"] and got["text_b"] == want["text_b"] and got["label"] == want["label"]
