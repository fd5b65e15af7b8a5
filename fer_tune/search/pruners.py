"""The sweep's pruner (Ray Tune's trial scheduler), and ASHA whose rungs survive --resume.

    pruner = build_pruner(space, state_dir="results/ray/quick-20261122-101500")

Ray's `Tuner.restore` brings the trial scheduler back as it was pickled before the first trial
ran (ray-project/ray#30838): ASHA's rung records are lost, and a resumed sweep stops other
trials than an uninterrupted one would. `PersistentASHA` writes its state to
`<experiment>/pruner_state.pkl` after every decision and reads it back when the restored
sweep starts; the experiment folder is Ray's storage, a local path or a URI (s3://, gs://,
file://), written through the same pyarrow filesystem Ray uses for it. A resumed trial re-runs
the epochs after its last checkpoint, and Ray's own experiment snapshot may lag behind: so a
decision already made for (trial, epoch) is replayed, and a trial once told to stop is stopped
again whatever epoch it reports.

Two rules against spending epochs on trials that learned nothing, both reading the sweep's
`ChanceRule` (fer_tune.search.outcome: the validation split's majority-class rate):
- `DeadTrialStop` (a Ray Tune stopper, so it holds under every pruner): a trial still at or
  below chance after `dead_trials.grace` epochs stops.
- `RungFloorASHA`, opt-in (`pruner.min_rung_results: N`, default 0): an ASHA rung holding fewer
  than N results does not promote blindly. Ray's ASHA continues the first trial to reach a rung
  whatever its score (an empty rung has no cutoff, and one result is its own cutoff): in
  `make run`'s quick sweep three trials at the majority-class rate ran all their epochs that way,
  which `DeadTrialStop` now ends at its grace. Below N results a trial continues only if it is
  above chance, even inside the grace; from then on ASHA's quantile decides. Measured
  (`python -m bench.sweep --compare`), it saved 17% of the epochs where nothing learned
  (synthetic faces) but cost 2-4 points in 2 of 5 seeds on digits, whose learners all start at
  chance: so it is off unless asked for. Rungs seeded from an earlier sweep (`seed_rungs`,
  --warm-start) count as results.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

from ray.tune import schedulers
from ray.tune.stopper import Stopper

from fer_tune.search.outcome import CHANCE_METRIC, EPOCH, ChanceRule, majority_rate
from fer_tune.search.sweep_file import SpaceFile

TIME_ATTR = EPOCH  # pruners count our epochs, not Ray's training_iteration
STATE_FILE = "pruner_state.pkl"
SEARCH_PROPERTIES = ("_metric", "_mode", "_metric_op")


def build_pruner(
    space: SpaceFile,
    state_dir: str | Path | None = None,
    rule: ChanceRule | None = None,
    earlier: dict[str, dict[int, float]] | None = None,
):
    """Ray Tune's trial scheduler for the space's `pruner:`; ASHA persists its state in `state_dir`.

    With a chance `rule`, ASHA's thin rungs do not promote trials at chance; `earlier` curves (a warm
    start's, key -> {epoch: metric}) seed ASHA's rungs (see the module docstring).
    """
    config = space.pruner
    max_t = space.budget.max_epochs
    if config.name == "asha":
        grace = min(config.grace_period, max_t)
        options = dict(time_attr=TIME_ATTR, max_t=max_t, grace_period=grace, reduction_factor=config.reduction_factor)
        floor = dict(rule=rule, min_rung_results=config.min_rung_results)
        if state_dir is None:
            pruner = RungFloorASHA(**floor, **options)
        else:
            pruner = PersistentASHA(state_path(state_dir), **floor, **options)
        pruner.seed_rungs(earlier or {}, space.mode)
        return pruner
    if config.name == "hyperband":
        return schedulers.HyperBandScheduler(time_attr=TIME_ATTR, max_t=max_t, reduction_factor=config.reduction_factor)
    if config.name == "median":
        return schedulers.MedianStoppingRule(time_attr=TIME_ATTR, grace_period=config.grace_period)
    return schedulers.FIFOScheduler()


def state_path(state_dir: str | Path) -> str:
    """The state file in `state_dir`: a local path, or a URI joined as a URI (Path would make s3:// s3:/)."""
    state_dir = str(state_dir)
    return f"{state_dir.rstrip('/')}/{STATE_FILE}" if "://" in state_dir else str(Path(state_dir) / STATE_FILE)


def chance_rule(space: SpaceFile, validation_counts: list[int]) -> ChanceRule | None:
    """The sweep's chance rule from its `dead_trials:` and the validation split's class counts; None when off."""
    config = space.dead_trials
    if not config.enabled:
        return None
    return ChanceRule(majority_rate(validation_counts), config.margin, config.grace)


class DeadTrialStop(Stopper):
    """Stops a trial still at or below chance after the rule's grace epochs (any pruner)."""

    def __init__(self, rule: ChanceRule):
        self.rule = rule

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.rule.dead(int(result.get(EPOCH, 0)), result.get(CHANCE_METRIC))

    def stop_all(self) -> bool:
        return False


class RungFloorASHA(schedulers.ASHAScheduler):
    """ASHA whose rungs with fewer than `min_rung_results` results continue only trials above chance."""

    def __init__(self, rule: ChanceRule | None = None, min_rung_results: int = 0, **options):
        super().__init__(**options)
        self._rule, self._min_rung_results = rule, min_rung_results

    def on_trial_result(self, tune_controller, trial, result):
        thin = self._rule is not None and self._thin_rung(trial.trial_id, result)
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.CONTINUE and thin and self._rule.at_chance(result.get(CHANCE_METRIC)):
            self._num_stopped += 1
            return self.STOP
        return decision

    def seed_rungs(self, curves: dict[str, dict[int, float]], mode: str) -> int:
        """Put earlier trials' results (key -> {epoch: metric}, `mode` max or min) into the rungs at
        their milestones. Idempotent (the same keys overwrite themselves); returns how many went in.
        """
        seeded, op = 0, 1.0 if mode == "max" else -1.0
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                for key, curve in curves.items():
                    value = curve.get(int(milestone))
                    if value is not None and math.isfinite(value):
                        recorded[f"earlier:{key}"] = op * value
                        seeded += 1
        return seeded

    def _thin_rung(self, trial_id: str, result: dict) -> bool:
        """Whether the rung ASHA judges this result at holds fewer than min_rung_results results.

        Mirrors Ray's _Bracket.on_result: the highest rung at or below the epoch not yet holding the trial.
        """
        bracket = self._trial_info.get(trial_id)
        epoch = result.get(self._time_attr)
        if bracket is None or epoch is None or epoch >= self._max_t:
            return False
        for milestone, recorded in bracket._rungs:
            if epoch < milestone or trial_id in recorded:
                continue
            return len(recorded) < self._min_rung_results
        return False


class PersistentASHA(RungFloorASHA):
    """ASHA that saves its rungs and decisions after each one, and restores them after Tuner.restore."""

    def __init__(self, state_file: str | Path, **options):
        super().__init__(**options)
        self._state_file = str(state_file)
        self._decisions: dict[tuple[str, int], str] = {}  # (trial id, epoch) -> CONTINUE or STOP
        self._stopped: set[str] = set()  # trial ids told to stop
        self._loaded = False

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._load()
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial):
        self._load()
        if trial.trial_id not in self._trial_info:  # a restored trial keeps its bracket
            super().on_trial_add(tune_controller, trial)
            self._save()

    def on_trial_result(self, tune_controller, trial, result):
        self._load()
        if trial.trial_id in self._stopped:
            return self.STOP
        key = (trial.trial_id, int(result.get(TIME_ATTR, -1)))
        if key not in self._decisions:  # a resumed trial reporting an epoch again gets the same answer
            self._decisions[key] = super().on_trial_result(tune_controller, trial, result)
            if self._decisions[key] == self.STOP:
                self._stopped.add(trial.trial_id)
            self._save()
        return self._decisions[key]

    def on_trial_complete(self, tune_controller, trial, result):
        self._load()
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
            self._save()

    def on_trial_remove(self, tune_controller, trial):
        self._load()
        self._trial_info.pop(trial.trial_id, None)
        self._save()

    def _save(self) -> None:
        if "://" in self._state_file:  # an object store: one put, which is atomic by itself
            filesystem, path = _filesystem(self._state_file)
            filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(path) as stream:
                stream.write(pickle.dumps(self.__dict__))
            return
        temporary = f"{self._state_file}.tmp"
        Path(temporary).parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            pickle.dump(self.__dict__, file)
        os.replace(temporary, self._state_file)  # atomic: a SIGKILL leaves the old state or the new one

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        state = _read(self._state_file)  # our own file, written by _save above
        if state is not None:
            # metric and mode come from Tune's set_search_properties, which refuses to set them twice
            kept = {key: value for key, value in state.items() if key not in SEARCH_PROPERTIES}
            self.__dict__.update({**kept, "_loaded": True})


def _filesystem(uri: str):
    """Ray's way to reach its storage (ray.train._internal.storage.get_fs_and_path): pyarrow's, for the URI."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _read(state_file: str) -> dict | None:
    """The saved state, or None where no decision was saved yet."""
    if "://" not in state_file:
        if not os.path.isfile(state_file):
            return None
        with open(state_file, "rb") as file:
            return pickle.load(file)
    import pyarrow.fs

    filesystem, path = _filesystem(state_file)
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return pickle.loads(stream.readall())
