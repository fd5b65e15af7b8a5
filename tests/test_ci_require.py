"""`.ci/run`'s rule (FER_TUNE_REQUIRE): in CI every skip fails but the CUDA one, whatever the skip's cause.

The cases run in one pytest process per setting, on a small test file, with the suite's conftest loaded
as a plugin; each test's outcome is read from the JUnit XML report.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

SKIPS = {
    "service": 'pytest.skip("chromium is not installed")',
    "importorskip": 'pytest.importorskip("a_module_that_is_not_installed")',
    "other": 'pytest.skip("some other reason")',
    "cuda": 'pytest.skip("needs a CUDA device")',
}


def outcomes(folder: Path, require: str | None) -> dict[str, str]:
    """Each case's outcome (failed, skipped or passed) in a pytest run with FER_TUNE_REQUIRE=require."""
    cases = "".join(f"\n\ndef test_{name}():\n    {line}\n" for name, line in SKIPS.items())
    (folder / "test_cases.py").write_text("import pytest\n" + cases)
    env = {k: v for k, v in os.environ.items() if k != "FER_TUNE_REQUIRE"}
    if require is not None:
        env["FER_TUNE_REQUIRE"] = require
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider"]
    subprocess.run(command + ["--junitxml=out.xml", "test_cases.py"], cwd=folder, env=env, capture_output=True,
                   timeout=300)  # fmt: skip
    found = {}
    for case in ET.parse(folder / "out.xml").getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "skipped", "error"}
        found[case.get("name").removeprefix("test_")] = {"failure": "failed", "skipped": "skipped"}.get(
            next(iter(kinds), ""), "passed"
        )
    return found


@pytest.fixture(scope="module")
def in_ci(tmp_path_factory) -> dict[str, str]:
    return outcomes(tmp_path_factory.mktemp("ci"), require="browser,postgres")


@pytest.fixture(scope="module")
def locally(tmp_path_factory) -> dict[str, str]:
    return outcomes(tmp_path_factory.mktemp("local"), require=None)


@pytest.mark.parametrize("skip", ["service", "importorskip", "other"])
def test_in_ci_a_skip_fails_whatever_its_cause(in_ci, skip):
    assert in_ci[skip] == "failed"


def test_in_ci_the_cuda_skip_stands(in_ci):
    assert in_ci["cuda"] == "skipped"


@pytest.mark.parametrize("skip", ["service", "importorskip", "other", "cuda"])
def test_locally_a_skip_is_a_skip(locally, skip):
    assert locally[skip] == "skipped"
