"""The house's layering, checked rather than remembered: import-linter's contracts (pyproject.toml,
[tool.importlinter]: no cycles at any level, stages over the library, the data wing below training, the pure
modules at the bottom), and no module reaching into another module's private (`_leading_underscore`) names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinykd.config import REPO_ROOT

SOURCES = ("tinykd", "stages", "tests")


def package_view(root: Path) -> Path:
    """The package as it installs (stages/ as tinykd.stages: pyproject's package-dir), copied under `root`, so
    that the import graph holds the stages too."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "tinykd", root / "tinykd", ignore=ignore)
    shutil.copytree(REPO_ROOT / "stages", root / "tinykd" / "stages", ignore=ignore)
    return root


def lint_imports(view: Path) -> subprocess.CompletedProcess:
    script = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert script, "import-linter is not installed: pip install -e '.[dev]'"
    return subprocess.run([script, str(REPO_ROOT / "pyproject.toml"), "--no-cache", "--no-logo"], cwd=view,
                          env={"PYTHONPATH": str(view), "PATH": str(Path(sys.executable).parent)},
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold(tmp_path):
    proc = lint_imports(package_view(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_a_back_edge_from_the_data_wing_breaks_both_contracts(tmp_path):
    """The contracts can fail: the data wing importing a training module is a cycle and a layer violation."""
    view = package_view(tmp_path)
    with open(view / "tinykd" / "data" / "cache.py", "a") as f:
        f.write("\nfrom tinykd import students  # a back-edge\n")
    proc = lint_imports(view)
    assert proc.returncode != 0
    assert "0 kept, 2 broken" in proc.stdout
    assert "tinykd.data is not allowed to import tinykd.students" in proc.stdout


def test_the_library_importing_a_stage_breaks_the_layers(tmp_path):
    view = package_view(tmp_path)
    with open(view / "tinykd" / "models.py", "a") as f:
        f.write("\nimport tinykd.stages.task  # the library over a stage\n")
    proc = lint_imports(view)
    assert proc.returncode != 0 and "tinykd.models is not allowed to import tinykd.stages" in proc.stdout


# ----------------------------------------------------------------------------- private names


def private_uses(source: str, where: str) -> list[str]:
    """Every `from tinykd.x import _y` and every `x._y` where `x` names a tinykd module (or a stage) in `source`."""
    tree = ast.parse(source)
    ours = ("tinykd", "stages")
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{where}:{node.lineno}: from {node.module} import {alias.name}")
                modules.add(alias.asname or alias.name)  # may be a module (from tinykd import data)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ours:
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_module_s_private_name():
    found = [use for folder in SOURCES for path in sorted((REPO_ROOT / folder).rglob("*.py"))
             for use in private_uses(path.read_text(), str(path.relative_to(REPO_ROOT)))]
    assert not found, "a private name used outside its module (make it public where both can import it):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("source, uses", [
    ("from tinykd.data.files import _utf8, read_rows\n", ["x.py:1: from tinykd.data.files import _utf8"]),
    ("from tinykd import data\ndata._cache = 1\nprint(data.load_split, data.__name__)\n", ["x.py:2: data._cache"]),
    ("import tinykd.run as run\nrun._first_line(None)\n", ["x.py:2: run._first_line"]),
    ("import os\nos._exit(0)\nfrom datasets import _x\n", []),  # not ours
])
def test_the_private_name_scan_finds_what_it_should(source, uses):
    assert private_uses(source, "x.py") == uses


# ----------------------------------------------------------------------------- the stages' package


def test_the_stages_install_as_tinykd_stages_and_no_top_level_stages(tmp_path):
    """Outside the checkout the environment holds tinykd (with tinykd.stages) and no package named `stages`."""
    probe = ("import importlib.util as u, tinykd.stages.task as t; "
             "print(t.__file__); print(u.find_spec('stages'))")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    where, top = proc.stdout.split()
    assert Path(where).resolve() == (REPO_ROOT / "stages" / "task.py").resolve() and top == "None"


def test_a_tinykd_without_its_stages_says_to_reinstall(tmp_path):
    """An environment whose tinykd lacks tinykd.stages (installed before they moved there): a TinyKDError with
    the fix, not Python's ModuleNotFoundError."""
    shutil.copytree(REPO_ROOT / "tinykd", tmp_path / "tinykd", ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
             f"sys.path.insert(0, {str(tmp_path)!r}); "
             "from tinykd.cli import stage_module; from tinykd.errors import TinyKDError\n"
             "try:\n    stage_module('eval')\nexcept TinyKDError as e:\n    print(e.problem); print(e.fix)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tinykd.stages" in proc.stdout and "are not installed" in proc.stdout and "make install" in proc.stdout


# ----------------------------------------------------------------------------- the data wing's task types


def test_every_task_type_module_gives_the_same_functions():
    """text, tokens and qa (tinykd.data.TYPES) give the functions tinykd.data calls, with the same parameters: a
    fourth task type is one module beside them."""
    import inspect

    from tinykd import data

    interface = ("spec", "read", "featurise", "cache_parts", "has_labels", "augmented_settings", "read_transfer",
                 "input_texts")
    reference = data.TYPES["sequence_classification"]
    assert set(data.TYPES) == {"sequence_classification", "token_classification", "question_answering"}
    for kind, module in data.TYPES.items():
        for name in interface:
            assert list(inspect.signature(getattr(module, name)).parameters) == \
                list(inspect.signature(getattr(reference, name)).parameters), (kind, name)
        assert hasattr(module, "AUGMENTED_KEY") and hasattr(module, "AUGMENTED_COLUMNS"), kind
