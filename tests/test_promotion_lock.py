"""The promotion lock is a lease (fer_tune.tracking.promotion), against real processes and a real store.

Promoters run as processes (tests/lock_holder.py) with the lease scaled down to LEASE_S seconds by
FER_TUNE_LOCK_LEASE_S: one SIGKILLed inside the lock is broken by the next promoter within a few
leases; one that holds it for several leases, renewing, is not; two waiters contending for one
expired lease (made to try at the same instant) break it once and then both promote, on SQLite and
on PostgreSQL (a throwaway database: tests/services.py). In-process:
a holder that lost its lock writes no alias and leaves the new holder's lock alone; a waiter gives
up on a live holder without breaking it; a store error while reading the champion is an error,
never "no champion"; a promotion interrupted after the registration is finished on replay;
`models list` with a lock present, and `models unlock`.
"""

import functools
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import blob_split
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow_helpers import subprocess_env
from services import postgres_database
from test_promote_significant import always

from fer_tune.cli.main import main
from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.data.dataset import FerDataset, Split
from fer_tune.search.results import TrialRecord
from fer_tune.search.sweep import Sweep
from fer_tune.search.sweep_file import load_space
from fer_tune.tracking import champion as champion_module
from fer_tune.tracking import promotion
from fer_tune.tracking.champion import current_champion, promote_best
from fer_tune.tracking.promotion import BREAK_INFIX, LOCK_SUFFIX, PromotionError, promote, read_lock, registry_lock
from fer_tune.tracking.runs import SweepRuns

HERE = Path(__file__).parent
LEASE_S = 2.0
PATIENCE_S = 60.0  # the processes' FER_TUNE_LOCK_WAIT_S: a broken lease must come well within it
LOCK_ENV = {"FER_TUNE_LOCK_LEASE_S": str(LEASE_S), "FER_TUNE_LOCK_WAIT_S": str(PATIENCE_S)}
STORE_ERROR = "(sqlite3.OperationalError) database is locked"


@dataclass
class Registry:
    """One test's registered model `name` in the store at `uri` (its lock: `lock`)."""

    uri: str
    name: str
    folder: Path

    @property
    def lock(self) -> str:
        return self.name + LOCK_SUFFIX

    @functools.cached_property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri, registry_uri=self.uri)

    def register(self, accuracies: dict[str, float]) -> MlflowClient:
        """The registered model, with one version per entry, each tagged with its `accuracy`."""
        experiment = self.client.create_experiment(self.name, artifact_location=(self.folder / "artifacts").as_uri())
        run = self.client.create_run(experiment).info.run_id
        self.client.create_registered_model(self.name)
        for version, accuracy in accuracies.items():
            created = self.client.create_model_version(self.name, source=f"runs:/{run}/model", run_id=run)
            assert str(created.version) == version
            self.client.set_model_version_tag(self.name, version, "accuracy", str(accuracy))
        return self.client

    def promoter(self, version: str, *options) -> subprocess.Popen:
        """tests/lock_holder.py promoting `version`, under a lease of LEASE_S."""
        return subprocess.Popen(
            [sys.executable, str(HERE / "lock_holder.py"), self.uri, self.name, version, *map(str, options)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(**LOCK_ENV),
        )

    def aliases(self) -> dict[str, str]:
        return {alias: str(version) for alias, version in self.client.get_registered_model(self.name).aliases.items()}

    def models(self) -> list[str]:
        """This test's registered models: the model, and its lock and breakers' markers while there are any."""
        return sorted(m.name for m in self.client.search_registered_models() if m.name.startswith(self.name))

    def held(self):
        return read_lock(self.client, self.lock)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, its tables made once: each test gets a copy."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def postgres_store():
    """One PostgreSQL store for the module (its tables made once); each test has its own model names."""
    with postgres_database() as uri:
        MlflowClient(uri).search_experiments()
        yield uri


@pytest.fixture
def sqlite(sqlite_template, tmp_path) -> Registry:
    shutil.copy(sqlite_template, tmp_path / "mlflow.db")
    return Registry(f"sqlite:///{tmp_path / 'mlflow.db'}", "locked", tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Registry:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite")
    return Registry(request.getfixturevalue("postgres_store"), f"locked-{uuid.uuid4().hex[:8]}", tmp_path)


def next_line(process: subprocess.Popen, expected: str) -> str:
    line = process.stdout.readline()
    assert line.startswith(expected), (line, process.poll(), process.stderr.read()[-3000:] if process.poll() else "")
    return line.strip()


def finished(process: subprocess.Popen, timeout: float = PATIENCE_S + 60) -> list[str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out.splitlines()


def before_in_lock(lines: list[str]) -> list[str]:
    """What a promoter printed before it held the lock."""
    return lines[: [line.startswith("in-lock") for line in lines].index(True)]


def kill_in_the_lock(registry: Registry) -> int:
    """Start version 1's promoter, SIGKILL it while it holds the lock; its pid."""
    dead = registry.promoter("1", "--hold", registry.folder / "never")
    next_line(dead, "ready")
    next_line(dead, "in-lock")
    dead.kill()
    dead.communicate(timeout=60)
    assert registry.held().holder.endswith(f":{dead.pid}")
    return dead.pid


@pytest.mark.integration
def test_a_promoter_killed_holding_the_lock_is_broken_by_the_next_one(sqlite):
    store = sqlite  # PostgreSQL: the racing test below kills a holder there too
    store.register({"1": 0.5, "2": 0.6})
    go = store.folder / "go"
    after = store.promoter("2", "--go", go)  # imported meanwhile; it promotes once the holder is dead
    dead = kill_in_the_lock(store)
    next_line(after, "ready")

    started = time.monotonic()
    go.touch()
    lines = finished(after)
    took = time.monotonic() - started
    broke = [line for line in lines if "broke promotion lock" in line]
    assert len(broke) == 1, lines
    assert broke[0].startswith(f"[fer-tune] registered model {store.name}: broke promotion lock {store.lock} of ")
    assert f":{dead}: no renewal of its {LEASE_S:g} s lease for " in broke[0], broke
    assert lines[-1] == "done champion", lines
    assert took < PATIENCE_S / 2, took  # a lease or two after it looked, not the waiter's whole patience
    assert store.aliases() == {"champion": "2"}
    assert store.models() == [store.name]  # the lock released, no breaker's marker left


@pytest.mark.integration
def test_a_slow_holder_that_keeps_renewing_its_lease_is_not_broken(sqlite):
    sqlite.register({"1": 0.5, "2": 0.6})
    hold, go = sqlite.folder / "hold", sqlite.folder / "go"
    holder, waiter = sqlite.promoter("1", "--hold", hold), sqlite.promoter("2", "--go", go)
    next_line(holder, "ready")
    next_line(holder, "in-lock")
    next_line(waiter, "ready")
    first = sqlite.held()
    go.touch()  # the waiter polls the lock from here on

    time.sleep(2.5 * LEASE_S)  # the holder outlives its lease twice over while the waiter watches
    now = sqlite.held()
    assert waiter.poll() is None and holder.poll() is None
    assert now.owner == first.owner and now.renewal != first.renewal  # still the holder's, and renewed
    released = time.time()
    hold.touch()

    held_lines, waited_lines = finished(holder), finished(waiter)
    assert held_lines[-2:] == ["delete-lock", "done champion"], held_lines  # it released its own lock
    assert waited_lines[0].startswith("in-lock") and float(waited_lines[0].split()[1]) > released, waited_lines
    assert not [line for line in waited_lines if "broke" in line]
    assert waited_lines[-2:] == ["delete-lock", "done champion"]
    assert sqlite.aliases() == {"champion": "2", "challenger": "1"}
    assert sqlite.models() == [sqlite.name]


@pytest.mark.integration
def test_two_waiters_racing_to_break_one_expired_lease_break_it_once(store):
    store.register({"1": 0.5, "2": 0.6, "3": 0.7})
    go, barrier = store.folder / "go", store.folder / "barrier"
    barrier.mkdir()
    waiters = [store.promoter(version, "--go", go, "--barrier", barrier, 2) for version in ("2", "3")]
    kill_in_the_lock(store)
    for waiter in waiters:
        next_line(waiter, "ready")
    go.touch()  # both watch the dead holder's lease from the same moment, and try to break it together

    outputs = [finished(waiter) for waiter in waiters]
    assert len(list(barrier.iterdir())) == 2  # both did try
    breakers = [lines for lines in outputs if any("broke promotion lock" in line for line in lines)]
    assert len(breakers) == 1, outputs
    # a lock deleted before a process's own `in-lock` is a lease it broke: one such deletion in all
    assert sorted(before_in_lock(lines).count("delete-lock") for lines in outputs) == [0, 1], outputs
    assert all(lines[-1].startswith("done ") for lines in outputs), outputs
    assert store.aliases() == {"champion": "3", "challenger": "2"}  # whichever went first, the same end
    assert store.models() == [store.name]


def test_a_holder_that_lost_its_lock_writes_no_alias_and_leaves_the_new_lock(sqlite):
    client = sqlite.register({"1": 0.5})

    def stalled_past_its_lease():
        """Inside the lock: meanwhile another promoter broke it and holds a lock of its own."""
        client.delete_registered_model(sqlite.lock)
        client.create_registered_model(sqlite.lock, tags={"owner": "another", "holder": "elsewhere:7", "lease_s": "60"})
        return None

    with pytest.raises(PromotionError) as raised:
        promote(client, sqlite.name, "1", 0.5, stalled_past_its_lease)
    message = str(raised.value)
    assert "\n" not in message
    assert f"lost promotion lock {sqlite.lock} before setting the aliases of version 1" in message
    assert "now held by elsewhere:7" in message and message.endswith("aliases left as they were")
    assert sqlite.aliases() == {}
    held = sqlite.held()
    assert held is not None and held.owner == "another", held  # its release did not delete the other's lock


def test_a_waiter_gives_up_on_a_live_holder_without_breaking_it(sqlite, monkeypatch):
    client = sqlite.register({"1": 0.5})
    monkeypatch.setattr(promotion, "LEASE_S", 1.0)
    with registry_lock(client, sqlite.name) as held:
        started = time.monotonic()
        with pytest.raises(PromotionError, match=r"still held by \S+:\d+, which keeps renewing it, after \d+ s"):
            with registry_lock(client, sqlite.name, wait_s=3):
                pass
        assert time.monotonic() - started >= 3  # three leases, renewed, unbroken
        assert sqlite.held().owner == held.owner
    assert sqlite.held() is None


def flaky(monkeypatch, failures: int) -> list[int]:
    """MlflowClient.get_model_version_by_alias raises the store's "database is locked" `failures` times first."""
    calls, real = [], MlflowClient.get_model_version_by_alias

    def read(self, *args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise MlflowException(STORE_ERROR, TEMPORARILY_UNAVAILABLE)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", read)
    return calls


def test_a_store_error_reading_the_champion_is_an_error_not_no_champion(sqlite, tiny_data, monkeypatch):
    runs = SweepRuns(sqlite.uri, "lock", "s", {}, {})
    monkeypatch.setattr(champion_module, "CHAMPION_READ_BACKOFF_S", 0.01)
    read = lambda: current_champion(runs, sqlite.name, tiny_data, "test", tiny_data.test)
    assert read() is None  # MLflow says: no such registered model
    client = sqlite.register({"1": 0.5})
    assert read() is None  # MLflow says: no such alias
    client.log_metric(client.get_model_version(sqlite.name, "1").run_id, "test_accuracy", 0.75)
    for key, value in {"data_fingerprint": tiny_data.fingerprint(), "eval_split": "test"}.items():
        client.set_model_version_tag(sqlite.name, "1", key, value)
    client.set_registered_model_alias(sqlite.name, "champion", "1")

    calls = flaky(monkeypatch, failures=2)
    assert read() == ("1", 0.75) and len(calls) == 3  # a passing error is retried
    calls = flaky(monkeypatch, failures=99)
    with pytest.raises(PromotionError) as raised:
        read()
    expected = f"registered model {sqlite.name}: could not read its champion after 4 tries: {STORE_ERROR}"
    assert str(raised.value) == expected
    assert len(calls) == 4


# ---- promote_best: a "sweep" whose best checkpoint answers one class for every image (no Ray, no training)
COUNTS = {0: 30, 1: 10, 2: 12}  # test images per class: the model answering class 0 is right on 30 of 52


@dataclass
class OneModelSweep(Sweep):
    state: dict | None = None

    def state_of(self, record: TrialRecord) -> dict:
        return self.state


class Killed(BaseException):
    """What a SIGKILL does to a promoter between its registration and its promotion, in-process."""


def killed(*args, **kwargs):
    raise Killed


@pytest.fixture(scope="module")
def counted() -> FerDataset:
    labels = torch.tensor([k for k, n in COUNTS.items() for _ in range(n)])
    images = torch.randint(0, 255, (len(labels), IMAGE_SIZE, IMAGE_SIZE), generator=torch.Generator().manual_seed(5),
                           dtype=torch.uint8)  # fmt: skip
    return FerDataset(train=blob_split(70, 1), validation=blob_split(70, 2), test=Split(images, labels),
                      classes=EMOTIONS, source="counted")  # fmt: skip


def one_model_sweep(registry: Registry, data: FerDataset, name: str, answer: int) -> OneModelSweep:
    state = always(answer, data)  # a checkpoint whose model answers `answer` for every image
    space_file = registry.folder / f"{name}.yaml"
    space_file.write_text(f"name: {name}\nmlflow: {{register_as: {registry.name}}}\nspace:\n  model: basic\n")
    space = load_space(space_file)
    curve = pd.DataFrame({"epoch": [1], "val_accuracy": [0.5], "val_loss": [1.0]})
    best = TrialRecord(f"{name}_00000", {}, curve, space.metric, space.mode, 1)
    return OneModelSweep(name, space, data, pd.DataFrame(), [best], best, registry.folder / name, 1.0, None,
                         state=state)  # fmt: skip


@pytest.mark.integration
def test_an_interrupted_promotion_is_finished_on_replay_not_before_the_champion_can_be_read(
    sqlite, counted, monkeypatch
):
    client, name = sqlite.client, sqlite.name
    runs = lambda: SweepRuns(sqlite.uri, "lock", "good", {}, {})
    good = one_model_sweep(sqlite, counted, "good", answer=0)
    with monkeypatch.context() as patch:  # killed after registering version 1, before promoting it
        patch.setattr(champion_module, "promote", killed)
        with pytest.raises(Killed):
            promote_best(good, runs())
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert sqlite.aliases() == {}  # registered, not promoted

    monkeypatch.setattr(champion_module, "CHAMPION_READ_BACKOFF_S", 0.01)
    with monkeypatch.context() as patch:  # `results sync good` while the store fails every champion read
        flaky(patch, failures=99)
        with pytest.raises(PromotionError) as raised:
            promote_best(good, runs())
    assert str(raised.value) == (
        f"registered model {name}: could not read its champion after 4 tries: {STORE_ERROR}; "
        f"{name} version 1 stays registered without an alias: `fer-tune results sync good` finishes its promotion"
    )
    assert sqlite.aliases() == {} and sqlite.models() == [name]  # no alias taken blind; the lock released

    replayed = promote_best(good, runs())  # `results sync good` once the store answers
    assert (replayed.version, replayed.alias) == ("1", "champion"), replayed.message
    assert replayed.accuracy == pytest.approx(COUNTS[0] / sum(COUNTS.values()))
    assert sqlite.aliases() == {"champion": "1"}
    assert client.get_model_version(name, "1").tags["promotion"].startswith("champion: first version")
    assert len(client.search_model_versions(f"name = '{name}'")) == 1  # finished, not registered twice
    assert promote_best(good, runs()).version == "1"  # and done: a replay now changes nothing


def test_models_list_leaves_promotion_locks_out(sqlite, capsys):
    client = sqlite.register({"1": 0.5})
    client.create_registered_model(f"{sqlite.name}-empty")
    client.create_registered_model(sqlite.lock, tags={"owner": "x", "holder": "host:1"})
    client.create_registered_model(f"{sqlite.lock}{BREAK_INFIX}x", tags={"breaker": "host:2"})
    capsys.readouterr()
    assert main(["models", "list", "--tracking-uri", sqlite.uri]) == 0
    out = capsys.readouterr().out
    assert f"{sqlite.name}  (models:/{sqlite.name}@champion)\n" in out
    assert f"{sqlite.name}-empty  (models:/{sqlite.name}-empty@champion)\n  (no versions)\n" in out
    assert LOCK_SUFFIX not in out


def test_models_unlock_removes_a_lock_and_says_so(sqlite, capsys):
    client = sqlite.register({"1": 0.5})
    with registry_lock(client, sqlite.name) as held:
        client.create_registered_model(f"{sqlite.lock}{BREAK_INFIX}{held.owner}")  # a breaker that died mid-break
        capsys.readouterr()
        assert main(["models", "unlock", sqlite.name, "--tracking-uri", sqlite.uri]) == 0
        out = capsys.readouterr().out
        removed = f"removed {sqlite.lock} and 1 lock breaker marker(s) (held by {held.holder}, last renewed "
        assert out.startswith(removed), out
        assert out.count("\n") == 1 and sqlite.models() == [sqlite.name]
    assert "no longer this promoter's" in capsys.readouterr().out  # its holder, told at release
    assert main(["models", "unlock", sqlite.name, "--tracking-uri", sqlite.uri]) == 0
    none = f"registered model {sqlite.name}: no promotion lock ({sqlite.lock} does not exist)\n"
    assert capsys.readouterr().out == none
