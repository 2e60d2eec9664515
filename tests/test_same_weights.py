"""The refactoring check (tinykd/bench/same_weights.py): what its comparison forgives and what it does not."""

from __future__ import annotations

from tinykd.bench.same_weights import compare


def record(**files) -> dict:
    entries = sorted({"/".join(n.split("/")[1:3]) for n in files if n.startswith("cache/")})
    return {"runs": {"teacher": []}, "files": files, "cache_entries": entries}


def test_identical_records_compare_equal_whatever_the_run_keyed_names(capsys):
    a = record(**{"smoke/general/x.prev-20261207-214154/student/model.safetensors": "w1",
                  "smoke/teacher/t/teacher/model.safetensors": "w2",
                  "cache/teacher_outputs/aaaa/data-00000-of-00001.arrow": "t1",
                  "cache/datasets/k1/data-00000-of-00001.arrow": "d1",
                  "smoke/augment/a/data/cache-0123456789abcdef.arrow": "own1"})
    b = record(**{"smoke/general/x.prev-20261208-101010/student/model.safetensors": "w1",
                  "smoke/teacher/t/teacher/model.safetensors": "w2",
                  "cache/teacher_outputs/bbbb/data-00000-of-00001.arrow": "t1",
                  "cache/datasets/k1/data-00000-of-00001.arrow": "d1",
                  "smoke/augment/a/data/cache-fedcba9876543210.arrow": "own2"})
    assert compare(a, b) == 0
    assert "identical" in capsys.readouterr().out


def test_a_changed_weight_a_changed_dataset_or_a_changed_key_is_a_difference(capsys):
    base = {"smoke/teacher/t/teacher/model.safetensors": "w", "cache/datasets/k1/data-00000-of-00001.arrow": "d"}
    assert compare(record(**base), record(**{**base, "smoke/teacher/t/teacher/model.safetensors": "other"})) == 1
    assert compare(record(**base), record(**{**base, "cache/datasets/k1/data-00000-of-00001.arrow": "other"})) == 1
    moved = {"smoke/teacher/t/teacher/model.safetensors": "w", "cache/datasets/k2/data-00000-of-00001.arrow": "d"}
    assert compare(record(**base), record(**moved)) == 1
    out = capsys.readouterr().out
    assert "keys changed" in out and "datasets/k1" in out and "datasets/k2" in out
