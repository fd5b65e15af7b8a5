"""The floor plan holds: imports only go down, core and data stay free of the heavy libraries, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); `make lint` runs them. These tests
check that they pass on the tree, that they would catch a violation, and that importing the
core really leaves ray, optuna, mlflow, pandas and matplotlib out of the process.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("ray", "optuna", "mlflow", "pandas", "matplotlib")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp must read the packages of `tree`, not the installed (editable) ones.
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tree), "HOME": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    """The packages and pyproject.toml copied to a scratch folder, to break on purpose."""
    for package in ("fer_tune", "trainables"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_contracts_pass_on_the_tree():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        # a heavy library in the core, even inside a function
        ("fer_tune/core/models/registry.py", "def _log():\n    import mlflow", "core and data run on a bare GPU box"),
        ("fer_tune/data/dataset.py", "import pandas", "core and data run on a bare GPU box"),
        # an upward import: search reaching into tracking (under TYPE_CHECKING counts too)
        (
            "fer_tune/search/sweep.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fer_tune.tracking import tracker",
            "Layers",
        ),
        ("fer_tune/core/training.py", "import trainables", "Layers"),
        # a cycle between sibling modules of one package
        ("fer_tune/core/metrics.py", "def _f():\n    from fer_tune.core import training", "No import cycles"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tree_copy, module, statement, broken):
    append(tree_copy / module, statement)
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    broken_lines = [line for line in result.stdout.splitlines() if "BROKEN" in line or line.startswith(broken)]
    assert any(line.startswith(broken) for line in broken_lines), result.stdout


def test_importing_core_and_data_leaves_the_heavy_libraries_out():
    code = (
        "import sys\n"
        "import fer_tune.core.training, fer_tune.core.checkpoint, fer_tune.core.classifier, fer_tune.data\n"
        "import fer_tune.data.describe, fer_tune.data.synthetic\n"
        f"print(sorted(set({HEAVY!r}) & {{m.split('.')[0] for m in sys.modules}}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
