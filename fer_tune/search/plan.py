"""A sweep's start-up, decided once: `prepare_sweep` checks and resolves, `run_sweep` gets the plan.

    plan = prepare_sweep(space, name=None, storage=None, resume=False)   # no Ray, no data yet
    start_cluster(plan)                                                   # Ray, and does a trial fit on it
    sweep = run_sweep(plan, data, callbacks=tracker.callbacks())

The cheap checks come first and touch nothing: where Ray stores the sweep, the sweep's name
(SPACE-DATE-TIME, or with --resume the latest of this space), and that a new sweep's name is free
or a resumed one can be restored. Starting or joining Ray is its own step, so that a caller can
put its own cheap checks (the tracking store) before it.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from ray import tune

from fer_tune.constants import CLAIMS_DIR, RAY_DIR, RESULTS_DIR
from fer_tune.errors import FerTuneError
from fer_tune.search.cluster import check_resources, connect_ray
from fer_tune.search.sweep_file import SpaceFile
from fer_tune.uris import redact


@dataclass(frozen=True)
class SweepPlan:
    """What the start-up checks decided about one sweep; built by `prepare_sweep` only."""

    space: SpaceFile
    name: str
    storage: str  # Ray's storage: an absolute local path, or a URI (s3://, gs://)
    resume: bool  # continue the interrupted sweep `name`
    address: str | None = None  # the Ray cluster to join (None: RAY_ADDRESS, else a local Ray)
    data_source: str | None = None  # the data, where not the space's own source (recorded in sweep.json)
    finished: bool = False  # resume only: the sweep ran to its end already, so there is nothing to run

    @property
    def experiment(self) -> str:
        """Ray's experiment folder of the sweep."""
        return f"{self.storage}/{self.name}"


def prepare_sweep(
    space: SpaceFile,
    *,
    name: str | None = None,
    storage: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    data_source: str | None = None,
) -> SweepPlan:
    """Resolve the storage and the name and check them (one-line errors); starts nothing, writes nothing."""
    storage = storage_path(storage)
    name = name or sweep_name(space, storage, resume)
    if resume:
        check_resumable(name, storage)
    else:
        check_new(name, storage)
    done = resume and finished(name)
    return SweepPlan(space, name, storage, resume, address, data_source, finished=done)


_claimed: dict[str, IO] = {}  # open for this process's life: the lock goes when the process does, killed or not


def claim_name(name: str) -> None:
    """Hold sweep `name` for this process: a second `fer-tune run --name NAME` started at the same moment
    refuses in one line instead of writing into the same folders (its check of the name came before either
    wrote anything). A lock (flock), not a file's existence: a killed sweep leaves nothing to clean up."""
    if name in _claimed:
        return
    folder = RESULTS_DIR / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{name}.lock", "a")  # noqa: SIM115 (held open until the process ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FerTuneError(
            f"--name {name}: another fer-tune is running the sweep of that name right now; wait for it to end, "
            "or choose another --name"
        ) from None
    _claimed[name] = handle


def start_cluster(plan: SweepPlan) -> None:
    """Start or join the plan's Ray cluster and check that one trial's request fits on a node of it."""
    prepare_cluster(plan.space, plan.address)


def check_new(name: str, storage: str) -> None:
    """A new sweep may not reuse a name: it would overwrite the old one's tables and merge their runs."""
    taken = [str(p) for p in (RESULTS_DIR / name, Path(storage) / name) if "://" not in str(p) and p.exists()]
    if taken:
        raise FerTuneError(
            f"--name {name}: a sweep of that name exists already ({', '.join(taken)}); continue it with "
            f"--resume --name {name}, or choose another --name"
        )


def check_resumable(name: str, storage: str) -> str:
    """The experiment folder of an interrupted sweep `name`, or a one-line error."""
    path = f"{storage}/{name}"
    if not tune.Tuner.can_restore(path):
        raise FerTuneError(f"--resume: no interrupted sweep at {redact(path)}; start one without --resume")
    return path


def finished(name: str) -> bool:
    """Whether sweep `name` ran to its end and wrote its results (a --resume then has nothing to run)."""
    return (RESULTS_DIR / name / "sweep.json").is_file()


def prepare_cluster(space: SpaceFile, address: str | None) -> None:
    """Start or join Ray (in bounded time) and check that one trial's request fits on a node of it."""
    cluster = connect_ray(address)
    check_resources(space.resources.cpu, space.resources.gpu, cluster)
    cuda = [p for p in space.space if p.name == "device" and any(str(v).startswith("cuda") for v in p.values)]
    if cuda and space.resources.gpu == 0:
        raise FerTuneError(
            f"{space.path}: space.device: {cuda[0].values[0]!r} needs a GPU, but each trial asks for none "
            "(resources.gpu: 0); use device auto, or --gpus-per-trial"
        )


def storage_path(storage: str | Path | None) -> str:
    """Ray's storage: an absolute local path (default results/ray), or a URI (s3://, gs://) as given."""
    storage = str(storage or RESULTS_DIR / RAY_DIR)
    return storage if "://" in storage else str(Path(storage).resolve())


def sweep_name(space: SpaceFile, storage: str, resume: bool) -> str:
    """A new sweep's name (SPACE-DATE-TIME); with `resume`, the latest sweep of this space."""
    return (latest_sweep(storage, space.name) if resume else None) or f"{space.name}-{datetime.now():%Y%m%d-%H%M%S}"


def latest_sweep(storage: Path | str, space_name: str) -> str | None:
    """The most recently started sweep of this space under `storage`, for --resume without --name."""
    folder = Path(storage)
    candidates = sorted(folder.glob(f"{space_name}-*"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return candidates[-1].name if candidates else None
