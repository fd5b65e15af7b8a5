"""The floor plan holds: imports only go down, core and data stay free of the heavy libraries, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); `make lint` runs them. These tests
check that they pass on the tree, that they would catch a violation, and that importing the
core really leaves ray, optuna, mlflow, pandas and matplotlib out of the process.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("ray", "optuna", "mlflow", "pandas", "matplotlib")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: grimp must read the packages of `tree`, not the installed (editable) ones.
    # COLUMNS: lint-imports wraps a long contract name over two lines at the terminal's width.
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tree), "HOME": str(tree), "COLUMNS": "1000"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def contract_names() -> dict[str, str]:
    """Each contract's type ("layers", "forbidden", "acyclic_siblings") -> its name, from pyproject.toml."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return {contract["type"]: contract["name"] for contract in contracts}


def verdicts(stdout: str) -> dict[str, str]:
    """Each contract's type -> "KEPT" or "BROKEN", read from lint-imports' summary line for that contract."""
    lines = stdout.splitlines()
    found = {}
    for kind, name in contract_names().items():
        matches = [line.removeprefix(name).strip() for line in lines if line.startswith(name + " ")]
        assert len(matches) == 1 and matches[0] in ("KEPT", "BROKEN"), f"no verdict for {name!r} in:\n{stdout}"
        found[kind] = matches[0]
    return found


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
    assert verdicts(result.stdout) == {"layers": "KEPT", "forbidden": "KEPT", "acyclic_siblings": "KEPT"}
    assert f"{len(contract_names())} kept, 0 broken" in result.stdout


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


# Each injection breaks exactly one contract: an upward import from a module the upper layer does not
# reach (else it would close a cycle too), a heavy library no layer contract names, a cycle inside one layer.
@pytest.mark.parametrize(
    ("module", "statement", "broken"),
    [
        # a heavy library in the core, even inside a function
        ("fer_tune/core/models/registry.py", "def _log():\n    import mlflow", "forbidden"),
        ("fer_tune/data/dataset.py", "import pandas", "forbidden"),
        # an upward import: the ground reaching into core (under TYPE_CHECKING counts too) ...
        (
            "fer_tune/uris.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fer_tune.core import config",
            "layers",
        ),
        # ... and a trainable reaching into serving, inside a function
        ("trainables/fer_cnn.py", "def _f():\n    from fer_tune.serving import images", "layers"),
        # a cycle between sibling modules of one package
        ("fer_tune/core/metrics.py", "def _f():\n    from fer_tune.core import training", "acyclic_siblings"),
    ],
)
def test_a_forbidden_import_breaks_its_contract_only(tree_copy, module, statement, broken):
    append(tree_copy / module, statement)
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    expected = {kind: "BROKEN" if kind == broken else "KEPT" for kind in contract_names()}
    assert verdicts(result.stdout) == expected, result.stdout


def test_importing_core_and_data_leaves_the_heavy_libraries_out():
    code = (
        "import sys\n"
        "import fer_tune.core.training, fer_tune.core.checkpoint, fer_tune.core.classifier, fer_tune.data\n"
        "import fer_tune.data.describe, fer_tune.data.synthetic\n"
        f"print(sorted(set({HEAVY!r}) & {{m.split('.')[0] for m in sys.modules}}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def layout_sections(readme: str) -> dict[str, str]:
    """The README Layout block's entries: top folder (`search/`, `trainables/`) -> its text."""
    block = readme[readme.index("## Layout") : readme.index("**How a sweep flows.**")]
    sections, current = {}, None
    for line in block.splitlines():
        head = re.match(r"^(?:  )?([a-z_]+)/\s", line)
        if head:
            current = head.group(1)
        if current is not None:
            sections[current] = sections.get(current, "") + line + "\n"
    return sections


def names_module(section: str, stem: str) -> bool:
    """Whether `stem` is named as an entry of a list (`x (what)`, `x,`, `x)` or `x;`), not as an ordinary word."""
    return re.search(rf"(?:^|[\s(,:;/]){re.escape(stem)}(?=\s*[(,);]|\s*$| and )", section, re.M) is not None


def test_the_readme_layout_names_every_module():
    """The README's Layout section is the floor plan a reader gets: a module it does not name in its
    folder's entry, as a list item, is a room missing from the plan."""
    sections = layout_sections((ROOT / "README.md").read_text())
    readme = (ROOT / "README.md").read_text()
    sections = layout_sections(readme)
    unnamed = []
    for path in [p for root in ("fer_tune", "trainables") for p in (ROOT / root).rglob("*.py")]:
        parts = path.relative_to(ROOT).parts
        if path.stem in ("__init__", "__main__"):
            continue
        if parts[0] == "fer_tune" and len(parts) == 2:  # the ground: errors.py, constants.py, ...
            named = f"{path.name}," in readme or f"{path.name} " in readme
        else:
            named = names_module(sections.get(parts[1] if parts[0] == "fer_tune" else parts[0], ""), path.stem)
        if not named:
            unnamed.append("/".join(parts))
    assert unnamed == [], f"README Layout does not name: {unnamed}"


def test_an_ordinary_word_does_not_count_as_naming_a_module():
    section = "  search/        each build step of a sweep's stats table: report/ (html, stats)\n"
    assert names_module(section, "stats") and names_module(section, "html")
    assert not names_module(section, "build") and not names_module(section, "table")
