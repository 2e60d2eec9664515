"""Data: GLUE files on disk, packing, batch order, resumable batching, metrics, the cache."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from tinykd import config
from tinykd.data import batches as batching, cache, corpus, text
from tinykd.errors import TinyKDError
from tinykd.metrics import compute_metrics
from tinykd.tasks import get_task

GLUE = config.REPO_ROOT / "../shared/data/glue"

VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
         "a": 5, "b": 6, "c": 7, "d": 8, "e": 9, "f": 10, "g": 11}


@pytest.fixture(scope="module")
def tokenizer():
    # BertTokenizer from a dict; BertTokenizerFast(vocab_file=...) silently builds a 5-token vocab.
    tok = BertTokenizer(vocab=dict(VOCAB))
    assert tok.convert_tokens_to_ids(["a", "g"]) == [5, 11] and tok.pad_token_id == 0
    return tok


@pytest.fixture(scope="module")
def tiny_ds(tokenizer):
    """Seven examples of different lengths (so batches need padding), labels 0..6."""
    texts = ["a", "a b", "b c d", "c", "d e f g", "e f", "g a b c d"]
    enc = tokenizer(texts)
    return datasets.Dataset.from_dict({**{k: enc[k] for k in batching.MODEL_INPUTS}, "labels": list(range(7))})


# ----------------------------------------------------------------------------- GLUE files


@pytest.mark.parametrize("task, folder, rows", [
    ("sst2", "SST-2", 872), ("cola", "CoLA", 1043), ("mrpc", "MRPC", 408),
    ("rte", "RTE", 277), ("stsb", "STS-B", 1500), ("wnli", "WNLI", 71),
])
def test_read_glue_dev_row_counts(task, folder, rows):
    spec = get_task(task)
    cols = text.read_glue_tsv(GLUE / folder / "dev.tsv", spec)
    assert len(cols["text_a"]) == len(cols["text_b"]) == len(cols["label"]) == rows
    assert all(isinstance(a, str) and a for a in cols["text_a"])
    if not spec.pair:
        assert all(b is None for b in cols["text_b"])
    else:
        assert all(isinstance(b, str) and b for b in cols["text_b"])
    if spec.is_regression:
        assert all(0.0 <= y <= 5.0 for y in cols["label"]) and len(set(cols["label"])) > 2
    else:
        assert set(cols["label"]) == set(range(spec.num_labels))


def test_read_glue_sst2_train_and_dev_labels():
    spec = get_task("sst2")
    assert len(text.read_glue_tsv(GLUE / "SST-2" / "train.tsv", spec)["label"]) == 67349
    assert Counter(text.read_glue_tsv(GLUE / "SST-2" / "dev.tsv", spec)["label"]) == {0: 428, 1: 444}


def test_read_glue_limit_takes_first_rows():
    spec = get_task("mrpc")
    full = text.read_glue_tsv(GLUE / "MRPC" / "dev.tsv", spec)
    five = text.read_glue_tsv(GLUE / "MRPC" / "dev.tsv", spec, limit=5)
    assert {k: v[:5] for k, v in full.items()} == five
    assert len(five["label"]) == 5


def test_read_glue_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TinyKDError, match="not found") as e:
        text.read_glue_tsv(tmp_path / "dev.tsv", get_task("sst2"))
    assert "task.data_dir" in e.value.fix


def test_read_glue_bad_label_names_file_and_line(tmp_path):
    f = tmp_path / "dev.tsv"
    f.write_text("sentence\tlabel\ngood film\t1\nbad film\t7\n", encoding="utf-8")
    with pytest.raises(TinyKDError) as e:
        text.read_glue_tsv(f, get_task("sst2"))
    assert "line 3" in e.value.problem and str(f) in e.value.problem and "'7'" in e.value.problem


# ----------------------------------------------------------------------------- packing


def test_pack_blocks_by_hand_keeps_last_short_block():
    CLS, SEP = 2, 3
    blocks = corpus.pack_blocks([[10, 11, 12], [13], [14, 15, 16, 17]], block_len=5, cls_id=CLS, sep_id=SEP)
    # body of 5 − 2 = 3 tokens per block; 8 tokens -> 3 + 3 + 2
    assert blocks == [[CLS, 10, 11, 12, SEP], [CLS, 13, 14, 15, SEP], [CLS, 16, 17, SEP]]


def test_pack_blocks_exact_multiple_and_empty():
    assert corpus.pack_blocks([[1, 2], [3, 4]], block_len=4, cls_id=7, sep_id=8) == [[7, 1, 2, 8], [7, 3, 4, 8]]
    assert corpus.pack_blocks([], block_len=4, cls_id=7, sep_id=8) == []


# ----------------------------------------------------------------------------- batch order


def test_epoch_batches_cover_every_index_once_with_short_last_batch():
    batches = batching.epoch_batches(10, 3, seed=0, epoch=0, shuffle=True)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(10))


def test_epoch_batches_without_shuffle_are_in_order():
    assert batching.epoch_batches(7, 3, seed=5, epoch=2, shuffle=False) == [[0, 1, 2], [3, 4, 5], [6]]


def test_epoch_batches_order_depends_only_on_seed_and_epoch():
    a = batching.epoch_batches(50, 8, seed=3, epoch=1, shuffle=True)
    assert a == batching.epoch_batches(50, 8, seed=3, epoch=1, shuffle=True)
    assert a != batching.epoch_batches(50, 8, seed=3, epoch=2, shuffle=True)
    assert a != batching.epoch_batches(50, 8, seed=4, epoch=1, shuffle=True)
    assert a != batching.epoch_batches(50, 8, seed=3, epoch=1, shuffle=False)


def test_grouped_batches_hold_similar_lengths_and_every_row_once():
    """group_by_length: every row once, the short batch last, each batch drawn from one sorted group of 50
    batches, so a batch's lengths span far less than a random batch's; seeded."""
    import numpy as np

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 200, size=4000)
    grouped = batching.epoch_batches(4000, 16, seed=1, epoch=0, shuffle=True, lengths=lengths)
    plain = batching.epoch_batches(4000, 16, seed=1, epoch=0, shuffle=True)
    assert sorted(i for b in grouped for i in b) == list(range(4000))
    assert all(len(b) == 16 for b in grouped)  # 4000 = 250 x 16
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padded(grouped) < 0.6 * padded(plain)  # tokens computed with padding: much less
    # each batch is a run of its group sorted longest first (the first group: batches of the first 800 rows)
    group = sorted(plain_order := [i for b in plain for i in b][:800], key=lambda i: -lengths[i])
    assert any(b == group[:16] for b in grouped) and set(plain_order) == set(group)
    assert grouped == batching.epoch_batches(4000, 16, seed=1, epoch=0, shuffle=True, lengths=lengths)
    assert grouped != batching.epoch_batches(4000, 16, seed=1, epoch=1, shuffle=True, lengths=lengths)
    short = batching.epoch_batches(100, 16, seed=1, epoch=0, shuffle=True, lengths=lengths[:100])
    assert [len(b) for b in short][-1] == 4 and all(len(b) == 16 for b in short[:-1])


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_batcher_first_epoch_covers_every_example(tiny_ds):
    b = batching.Batcher(tiny_ds, tokenizer=BertTokenizer(vocab=dict(VOCAB)), batch_size=3, seed=0)
    assert b.batches_per_epoch == 3
    epoch = _take(b.iterate(), 3)
    assert [len(x["labels"]) for x in epoch] == [3, 3, 1]
    seen = sorted(int(y) for x in epoch for y in x["labels"])
    assert seen == list(range(7))
    # each row, with its padding removed, is the original example
    for x in epoch:
        assert set(x) >= {"input_ids", "attention_mask", "token_type_ids", "labels"}
        for ids, mask, label in zip(x["input_ids"], x["attention_mask"], x["labels"]):
            assert ids[mask.bool()].tolist() == tiny_ds[int(label)]["input_ids"]
            assert (ids[~mask.bool()] == 0).all()


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_batcher_resume_equals_skipping(tiny_ds, tokenizer, k):
    b = batching.Batcher(tiny_ds, tokenizer, batch_size=3, seed=11)
    from_zero = _take(b.iterate(0), k + 4)
    resumed = _take(b.iterate(start_micro_step=k), 4)
    _same_batches(from_zero[k:], resumed)


def test_batcher_epochs_differ_in_order(tiny_ds, tokenizer):
    b = batching.Batcher(tiny_ds, tokenizer, batch_size=3, seed=11)
    six = _take(b.iterate(), 6)
    order = [[int(y) for y in x["labels"]] for x in six]
    assert sorted(sum(order[3:], [])) == list(range(7))
    assert order[:3] != order[3:]


def test_batcher_rejects_empty_dataset(tokenizer):
    with pytest.raises(TinyKDError, match="empty"):
        batching.Batcher(datasets.Dataset.from_dict({"input_ids": []}), tokenizer, batch_size=2, seed=0)


def test_eval_batches_yield_every_example_in_order(tiny_ds, tokenizer):
    batches = list(batching.eval_batches(tiny_ds, tokenizer, batch_size=3))
    assert [len(x["labels"]) for x in batches] == [3, 3, 1]
    assert [int(y) for x in batches for y in x["labels"]] == list(range(7))
    rows = [ids[m.bool()].tolist() for x in batches for ids, m in zip(x["input_ids"], x["attention_mask"])]
    assert rows == tiny_ds["input_ids"]


# ----------------------------------------------------------------------------- metrics


def test_classification_metrics_by_hand():
    preds = np.array([1, 0, 1, 1, 0])
    labels = np.array([1, 1, 0, 1, 0])
    tp, fp, fn, tn = 2, 1, 1, 1
    got = compute_metrics(("accuracy", "f1", "matthews"), preds, labels)
    assert list(got) == ["accuracy", "f1", "matthews"]
    assert math.isclose(got["accuracy"], 3 / 5)
    assert math.isclose(got["f1"], 2 * tp / (2 * tp + fp + fn))  # 2/3
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 1/6
    assert math.isclose(got["matthews"], mcc)


def test_regression_metrics_by_hand():
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    labels = np.array([2.0, 4.0, 5.0, 9.0])
    # deviations from the means 2.5 and 5: (−1.5, −.5, .5, 1.5) and (−3, −1, 0, 4)
    cov = 1.5 * 3 + 0.5 * 1 + 0.5 * 0 + 1.5 * 4  # 11
    r = cov / math.sqrt((2.25 + 0.25 + 0.25 + 2.25) * (9 + 1 + 0 + 16))  # 11/√130
    assert math.isclose(compute_metrics(("pearson",), preds, labels)["pearson"], r)

    # ranks (1,2,3,4) vs (1,3,2,4): Σd² = 2 -> ρ = 1 − 6·2 / (4·(16 − 1)) = 0.8
    got = compute_metrics(("spearman", "pearson"), np.array([0.1, 5.0, 7.0, 100.0]), np.array([10.0, 30.0, 20.0, 40.0]))
    assert math.isclose(got["spearman"], 0.8)
    assert not math.isclose(got["pearson"], 0.8)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(("bleu",), np.array([1]), np.array([1]))


# ----------------------------------------------------------------------------- cache


def test_cached_dataset_builds_once_then_loads(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return datasets.Dataset.from_dict({"x": [1, 2, 3], "y": ["a", "b", "c"]})

    first = cache.cached_dataset(tmp_path, "k1", build)
    second = cache.cached_dataset(tmp_path, "k1", build)
    assert len(calls) == 1
    assert first.to_dict() == second.to_dict() == {"x": [1, 2, 3], "y": ["a", "b", "c"]}
    # a different key is a different entry
    cache.cached_dataset(tmp_path, "k2", build)
    assert len(calls) == 2
    # written atomically: only the final entries remain, no temporary directories
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1", "k2"]


def test_cached_dataset_failed_build_leaves_no_entry(tmp_path):
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.cached_dataset(tmp_path, "k", broken)
    assert not (tmp_path / "k").exists()
    assert cache.cached_dataset(tmp_path, "k", lambda: datasets.Dataset.from_dict({"x": [7]}))["x"] == [7]
