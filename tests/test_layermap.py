"""Layer maps: teacher layer per student layer, validation messages, resolved matches."""

from __future__ import annotations

import pytest

from tinykd.errors import TinyKDError
from tinykd.layermap import LayerMatch, format_table, resolve_matches, teacher_layers


# ----------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    "n_teacher, n_student, expected",
    [
        # 6/4 = 1.5: m·1.5 = 1.5, 3, 4.5, 6 -> round half up -> 2, 3, 5, 6
        (6, 4, [2, 3, 5, 6]),
        (12, 4, [3, 6, 9, 12]),
        (4, 2, [2, 4]),
        (6, 6, [1, 2, 3, 4, 5, 6]),
        # 12/5 = 2.4: 2.4, 4.8, 7.2, 9.6, 12 -> 2, 5, 7, 10, 12
        (12, 5, [2, 5, 7, 10, 12]),
        (5, 1, [5]),
    ],
)
def test_uniform(n_teacher, n_student, expected):
    assert teacher_layers("uniform", n_teacher, n_student) == expected


def test_uniform_rule_holds_for_every_depth_pair():
    """g(m) = floor(m·N/M + 1/2) in exact integer arithmetic; strictly increasing; g(M) = N."""
    for n in range(1, 25):
        for m_count in range(1, n + 1):
            g = teacher_layers("uniform", n, m_count)
            assert g == [(2 * m * n + m_count) // (2 * m_count) for m in range(1, m_count + 1)], (n, m_count)
            assert all(a < b for a, b in zip(g, g[1:])), (n, m_count, g)
            assert g[-1] == n and g[0] >= 1


def test_last():
    assert teacher_layers("last", 6, 4) == [3, 4, 5, 6]
    assert teacher_layers("last", 12, 4) == [9, 10, 11, 12]
    assert teacher_layers("last", 3, 3) == [1, 2, 3]


def test_list():
    assert teacher_layers("list", 6, 3, [1, 3, 6]) == [1, 3, 6]
    # any sequence works (a tuple here; an OmegaConf ListConfig from the config)
    assert teacher_layers("list", 6, 2, (2, 4)) == [2, 4]


# ----------------------------------------------------------------------------- errors


def test_list_out_of_range_names_student_layer_and_valid_range():
    with pytest.raises(TinyKDError) as e:
        teacher_layers("list", 6, 3, [1, 7, 6])
    assert "student layer 2" in e.value.problem and "teacher layer 7" in e.value.problem
    assert "1..6" in e.value.problem
    assert "distill.layers" in e.value.fix and "1..6" in e.value.fix
    assert "Fix:" in str(e.value)


def test_list_zero_is_out_of_range():
    with pytest.raises(TinyKDError) as e:
        teacher_layers("list", 4, 2, [0, 4])
    assert "student layer 1" in e.value.problem and "1..4" in e.value.problem


@pytest.mark.parametrize("layers", [[1, 2], [1, 2, 3, 4], None])
def test_list_wrong_length(layers):
    with pytest.raises(TinyKDError) as e:
        teacher_layers("list", 6, 3, layers)
    assert "one teacher layer per student layer" in e.value.problem
    assert "3-layer student" in e.value.problem
    assert "distill.layers" in e.value.fix and "1..6" in e.value.fix


@pytest.mark.parametrize("strategy", ["uniform", "last"])
def test_student_deeper_than_teacher(strategy):
    with pytest.raises(TinyKDError) as e:
        teacher_layers(strategy, 4, 6)
    assert f"layer_map={strategy}" in e.value.problem
    assert "6" in e.value.problem and "4" in e.value.problem
    assert "layer_map=list" in e.value.fix


def test_unknown_strategy():
    with pytest.raises(TinyKDError) as e:
        teacher_layers("skip", 6, 4)
    assert "'skip'" in e.value.problem
    assert "uniform" in e.value.fix and "last" in e.value.fix and "list" in e.value.fix


def test_resolve_matches_validates_too():
    with pytest.raises(TinyKDError):
        resolve_matches("uniform", 2, 4, {"hidden": 1.0})


# ----------------------------------------------------------------------------- matches


def test_resolve_matches_all_features():
    got = resolve_matches("uniform", 6, 4, {"embedding": 1.0, "attention": 2.0, "hidden": 0.5})
    g = [2, 3, 5, 6]
    expected = [LayerMatch("embedding", 0, 0, 1.0)]
    expected += [LayerMatch("attention", m, tl, 2.0) for m, tl in zip(range(1, 5), g)]
    expected += [LayerMatch("hidden", m, tl, 0.5) for m, tl in zip(range(1, 5), g)]
    assert got == expected


def test_resolve_matches_leaves_out_zero_weight_and_missing_features():
    got = resolve_matches("last", 6, 2, {"embedding": 0.0, "attention": 1.0})
    assert got == [LayerMatch("attention", 1, 5, 1.0), LayerMatch("attention", 2, 6, 1.0)]
    assert resolve_matches("uniform", 4, 2, {"embedding": 0, "attention": 0, "hidden": 0}) == []


def test_resolve_matches_embedding_is_zero_to_zero():
    got = resolve_matches("list", 6, 2, {"embedding": 3.0}, layers=[4, 6])
    assert got == [LayerMatch("embedding", 0, 0, 3.0)]


def test_format_table_has_header_and_every_row():
    matches = resolve_matches("uniform", 12, 4, {"embedding": 1.0, "attention": 1.0, "hidden": 0.25})
    lines = format_table(matches).splitlines()
    assert lines[0].split() == ["feature", "student", "teacher", "loss", "weight"]
    assert len(lines) == len(matches) + 1 == 10
    for line, m in zip(lines[1:], matches):
        assert line.split() == [m.feature, str(m.student_layer), str(m.teacher_layer), "mse", f"{m.weight:g}"]
    # columns are aligned: every row starts its second column at the same offset
    assert len({line.index(line.split()[1], len(line.split()[0])) for line in lines}) == 1


def test_kept_maps_each_student_layer_to_the_layer_it_was_pruned_from():
    from tinykd.layermap import teacher_layers

    assert teacher_layers("kept", 6, 4, [3, 4, 5, 6]) == [3, 4, 5, 6]
    assert teacher_layers("uniform", 6, 4) == [2, 3, 5, 6]  # what a pruned student's first layers would otherwise meet
    with pytest.raises(TinyKDError, match="the pruned student's layers"):
        teacher_layers("kept", 6, 4, None)
