"""Shared fixtures: a tiny learnable dataset, and an isolated cache directory."""

import os

import pytest
import torch

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.data.dataset import FerDataset, Split

# The test run's Ray (tests/ray_cluster.py) has token authentication off; so must every process that joins it.
os.environ["RAY_AUTH_MODE"] = "disabled"


def blob_split(n: int, seed: int, num_classes: int = len(EMOTIONS)) -> Split:
    """Class k is a bright square of side 4 + 3k at a random place on a noisy background."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 60, (n, IMAGE_SIZE, IMAGE_SIZE), generator=generator, dtype=torch.uint8)
    sides = 4 + 3 * labels
    corners = (torch.rand(n, 2, generator=generator) * (IMAGE_SIZE - sides[:, None])).long()
    for image, side, (row, col) in zip(images, sides.tolist(), corners.tolist()):
        image[row : row + side, col : col + side] = 220
    return Split(images, labels)


@pytest.fixture(scope="session")
def tiny_data() -> FerDataset:
    """280 train / 70 validation / 70 test images a small CNN learns in a few epochs."""
    return FerDataset(
        train=blob_split(280, seed=1),
        validation=blob_split(70, seed=2),
        test=blob_split(70, seed=3),
        classes=EMOTIONS,
        source="blobs",
    )


def forbid_ray(monkeypatch) -> None:
    """Fail the test if a sweep gets as far as starting or joining Ray: what it checks must come first."""

    def started(*_args, **_kwargs):
        raise AssertionError("Ray was started before the bad input was found")

    monkeypatch.setattr("fer_tune.search.plan.prepare_cluster", started)


@pytest.fixture
def no_ray(monkeypatch):
    forbid_ray(monkeypatch)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Parsed-data caches go to a per-session temporary folder, never ~/.cache."""
    monkeypatch.setenv("FER_TUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def blob_csv(tmp_path_factory, tiny_data):
    """tiny_data written as a FER2013 CSV, for commands and sweeps that take a data path."""
    from fer_tune.data import write_fer2013_csv

    splits = [(tiny_data.train, "Training"), (tiny_data.validation, "PublicTest"), (tiny_data.test, "PrivateTest")]
    path = tmp_path_factory.mktemp("blobs") / "blobs.csv"
    write_fer2013_csv(
        path,
        torch.cat([s.images for s, _ in splits]),
        torch.cat([s.labels for s, _ in splits]),
        [usage for s, usage in splits for _ in range(len(s))],
    )
    return path


@pytest.fixture
def ray_local():
    """The test run's one Ray (tests/ray_cluster.py: local, sized to the machine, no dashboard, on loopback),
    joined as the CLI joins a cluster; started on first use.

    A test that needs another cluster shuts its connection down; the next user joins the run's Ray again.
    """
    import ray
    import ray_cluster

    from fer_tune.search.cluster import connect_ray

    connect_ray(ray_cluster.address())  # joins; a no-op where this process is connected already
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}, "local Ray must not listen outside"
    return ray


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh working directory: results/ (and the default MLflow store) are relative to it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def no_credentials_left_behind(monkeypatch):
    """fer-tune hands a tracking URI's password to MLflow and libpq through this process's environment
    (tracking/store.py: without_credentials): every test starts and ends without one there."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"):
        monkeypatch.setenv(name, "")  # recorded, so that the end of the test removes it again
        monkeypatch.delenv(name)


def pytest_addoption(parser):
    parser.addoption(
        "--screenshot",
        default=None,
        metavar="PNG",
        help="tests/test_web.py: also write the page's screenshot here (`make screenshot`: docs/serve.png)",
    )
    parser.addoption(
        "--report-screenshot",
        default=None,
        metavar="PNG",
        help="tests/test_report.py: also write the report's screenshot here (`make screenshot`: docs/report.png)",
    )


def pytest_collection_modifyitems(config, items):
    """The slow tests' budgets fit the suite's (tests/budget.py); tests marked `gpu` run only where CUDA is."""
    from budget import bind, check_budgets, heaviest_files_first

    check_budgets(items)
    bind(items)
    heaviest_files_first(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


TOOK: dict[str, float] = {}  # test id -> seconds, setup and teardown included (a module's shared sweep: its first)
BUDGETS: dict[str, float | None] = {}  # test id -> its budget (None: unmarked), from the reports


def pytest_runtest_logreport(report):
    """Runs where the reports arrive: in the one process, or in xdist's controller, which collects no items,
    so each test's budget travels in its report's user_properties (pytest_runtest_makereport below)."""
    TOOK[report.nodeid] = TOOK.get(report.nodeid, 0.0) + report.duration
    for key, value in report.user_properties:
        if key == "budget_s":
            BUDGETS[report.nodeid] = value


def pytest_unconfigure(config):
    import ray_cluster

    ray_cluster.stop()


def pytest_terminal_summary(terminalreporter, config):
    from budget import summary

    if TOOK:
        for line in summary(BUDGETS, TOOK):
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With FER_TUNE_REQUIRE (CI), a skip fails instead, whatever its cause, unless CI cannot avoid it
    (tests/services.py: ALLOWED_SKIPS)."""
    outcome = yield
    report = outcome.get_result()
    from budget import budget_of

    report.user_properties.append(("budget_s", budget_of(item)))
    if not report.skipped or not isinstance(report.longrepr, tuple) or hasattr(report, "wasxfail"):
        return
    from services import REQUIRE_ENV, allowed_skip, required, service_of

    reason = report.longrepr[2]
    if not required() or allowed_skip(reason):
        return
    service = service_of(reason)
    what = f"{service} is required" if service else "no test may skip"
    report.outcome = "failed"
    report.longrepr = f"{what} ({REQUIRE_ENV}, set by .ci/run) but the test skipped: {reason}"
