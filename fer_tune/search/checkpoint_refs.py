"""A killed sweep's snapshot may name a checkpoint Ray already deleted: point it at the one that replaced it.

    repointed = repair_checkpoint_refs("results/ray/quick-20261207-201500")   # before Tuner.restore

Ray keeps `num_to_keep` checkpoints per trial. When a trial reports a new one, Ray deletes the one it
replaces at once, and writes its experiment snapshot (experiment_state-*.json, what `Tuner.restore`
reads) a moment later. A driver SIGKILLed in between leaves a snapshot whose trial names a deleted
checkpoint, and Ray's restore of that trial then fails ("checkpoint ... does not exist"): a trial
lost to an unlucky instant. The newer checkpoint is on disk (Ray never deletes the latest), so
before restoring, each trial whose latest checkpoint is gone is pointed at the newest checkpoint
in its own folder; best-checkpoint entries that are gone are dropped. The trial then resumes from
the epoch after that checkpoint, and the pruner's saved decisions (fer_tune.search.pruners) cover
the epochs it already reported.

Hand-written on Ray's internals (the snapshot's format) because Ray offers no hook between reading
the snapshot and restoring the trials; tests/test_moo.py's SIGKILL test breaks if the format moves.
Local experiment folders only: on object storage (s3://, gs://) deletion and snapshot are uploads
that Ray orders itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CHECKPOINT_GLOB = "checkpoint_*"


def repair_checkpoint_refs(experiment: str | Path) -> list[str]:
    """Re-point the newest snapshot's missing checkpoints (see the module docstring); the trial ids re-pointed."""
    if "://" in str(experiment):
        return []
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

    snapshot = _find_newest_experiment_checkpoint(str(experiment))
    if snapshot is None:
        return []
    state = _loads_with_cloudpickle(Path(snapshot).read_text())
    repointed, trial_data = [], []
    for trial_json, metadata_json in state["trial_data"]:
        trial_id, metadata_json, changed = _repair_trial(Path(experiment), trial_json, metadata_json)
        trial_data.append([trial_json, metadata_json])
        if changed:
            repointed.append(trial_id)
    if repointed:
        temporary = f"{snapshot}.tmp"
        with open(temporary, "w") as file:
            json.dump({**state, "trial_data": trial_data}, file, cls=TuneFunctionEncoder)
        os.replace(temporary, snapshot)  # atomic: a second SIGKILL leaves the old snapshot or the repaired one
    return repointed


def _repair_trial(experiment: Path, trial_json: str, metadata_json: str) -> tuple[str, str, bool]:
    """(trial id, its metadata, whether it changed): the latest checkpoint re-pointed where it is missing."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment.trial import Trial
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = Trial.from_json_state(trial_json, stub=True)
    metadata = _TrainingRunMetadata.from_json_state(metadata_json)
    manager = metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    if latest is None or _exists(latest.checkpoint.path):
        return trial.trial_id, metadata_json, False
    # The trial's folder in this experiment (the snapshot's paths may be those of a moved folder)
    folder = experiment / trial.storage.trial_dir_name
    newest = max(folder.glob(CHECKPOINT_GLOB), key=lambda path: path.name, default=None)
    manager._checkpoint_results = [r for r in manager._checkpoint_results if _exists(r.checkpoint.path)]
    if newest is None:  # nothing to resume from: the trial starts again, as Ray does for one never checkpointed
        manager._latest_checkpoint_result = None
    else:
        moved = Checkpoint(path=str(newest), filesystem=latest.checkpoint.filesystem)
        manager._latest_checkpoint_result = _TrainingResult(checkpoint=moved, metrics=latest.metrics)
        if not manager._checkpoint_results:
            manager._checkpoint_results = [manager._latest_checkpoint_result]
    metadata.invalidate_cache()
    return trial.trial_id, metadata.get_json_state(), True


def _exists(path: str) -> bool:
    return Path(path).is_dir()
