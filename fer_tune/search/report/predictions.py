"""The per-image predictions a report needs, made on the driver at the end of a sweep.

    save_predictions(sweep)   # results/<sweep>/predictions.csv and predictions.json

The champion's and the next best trial's best checkpoints (by the space's metric) are scored on the
validation and the test split (validation only, where the data has no test split) with their own
test-time augmentation, tracked or not: `fer-tune report` then rebuilds every interval and paired
test from results/<sweep>/ alone. predictions.csv has one row per image: split, index in that
split, true label, and the class index each model predicted (columns `champion`, `runner_up`, and
`previous_champion` once the tracker has scored the registry's champion on the same images).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fer_tune.core.checkpoint import load_checkpoint
from fer_tune.core.classifier import build_model
from fer_tune.core.config import make_train_config
from fer_tune.core.metrics import evaluate
from fer_tune.errors import FerTuneError
from fer_tune.search.result_files import PREDICTIONS_FILE, PREDICTIONS_META, read_predictions

ROLES = ("champion", "runner_up")


def ranked(sweep) -> list:
    """The sweep's scored trials: its champion (`sweep.best`: with `select:` the best mean over fresh
    seeds, with a `champion:` rule its pick) first, then the others best first by the space's metric."""
    scored = [r for r in sweep.records if r.best_metric is not None]
    order = sorted(scored, key=lambda r: r.best_metric, reverse=sweep.space.mode == "max")
    return order if sweep.best is None else [sweep.best, *(r for r in order if r is not sweep.best)]


def trial_state(sweep, record) -> dict:
    """The training state in a trial's best checkpoint (by the space's metric)."""
    result = next(r for r in sweep.result_grid if r.path == record.path)
    checkpoint = result.get_best_checkpoint(sweep.space.metric, sweep.space.mode) or result.checkpoint
    with checkpoint.as_directory() as folder:
        return load_checkpoint(folder)


def predict(state: dict, data, splits: dict) -> dict[str, list[int]]:
    """Predicted class per image of each named split, with the trial's own test-time augmentation."""
    config = make_train_config(state["config"], where="checkpoint")
    model = build_model(config, data.num_classes, data.mean, data.std)
    model.load_state_dict(state["model"])
    out = {}
    for name, split in splits.items():
        scores = evaluate(model, split, data.num_classes, tta=config.tta, keep_probabilities=True)
        out[name] = scores["probabilities"].argmax(1).tolist()
    return out


def save_predictions(sweep, chosen: list | None = None) -> Path | None:
    """Score the champion and runner-up (`chosen`, else the first two of `ranked`) and write their predictions."""
    chosen = chosen or ranked(sweep)[:2]
    if not chosen:
        return None
    data = sweep.data
    splits = {"validation": data.validation, **({"test": data.test} if data.test is not None else {})}
    frame = pd.concat(
        [
            pd.DataFrame({"split": name, "index": range(len(split)), "label": split.labels.tolist()})
            for name, split in splits.items()
        ],
        ignore_index=True,
    )
    meta = {"eval_split": "test" if data.test is not None else "validation", "classes": list(data.classes)}
    for role, record in zip(ROLES, chosen):
        predicted = predict(trial_state(sweep, record), data, splits)
        frame[role] = [p for name in splits for p in predicted[name]]
        meta[role] = record.trial_id
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(sweep.out_dir / PREDICTIONS_FILE, index=False)
    (sweep.out_dir / PREDICTIONS_META).write_text(json.dumps(meta, indent=2))
    return sweep.out_dir / PREDICTIONS_FILE


def add_rival(out_dir: Path, predicted, rival: str) -> None:
    """Add the registry's previous champion's predictions on the eval split (column `previous_champion`);
    predictions.csv/.json read by their checked reader (one line where they are damaged)."""
    saved = read_predictions(out_dir)
    if saved is None:
        raise FerTuneError(f"{out_dir / PREDICTIONS_FILE}: not found; the sweep saved no predictions to add to")
    frame, meta = saved["frame"], saved["meta"]
    rows = frame["split"] == meta["eval_split"]
    frame["previous_champion"] = pd.NA
    frame.loc[rows, "previous_champion"] = list(predicted)
    meta["previous_champion"] = rival
    frame.to_csv(out_dir / PREDICTIONS_FILE, index=False)
    (out_dir / PREDICTIONS_META).write_text(json.dumps(meta, indent=2))
