"""The sweep's best model, tested, logged and registered: `promote_best(sweep, runs)`.

Runs on the driver after a sweep (Tracker.finish calls it). The best trial's best checkpoint
is rebuilt from the config inside it and scored on the test split (the validation split,
tagged fer_tune.eval_split=validation, where the data has no test split), with
the test-time augmentation the trial was configured with (`tta`: flip by default, tencrop, none):
the registered model does the same averaging, so the logged accuracy is the deployed model's.

Layout: a run named "champion", nested under the sweep's parent run, holds the test metrics
(test_accuracy, test_macro_f1, per-class precision/recall/F1), evaluation/ plots (confusion
matrix, most confident mistakes, the best trial's learning curves), the model card and the
MLflow PyTorch model (pt2, with the TorchScript file among its extra files). The model is
registered under the space's `mlflow.register_as`; it takes the alias `champion` only when
its accuracy beats the current champion's on the same data (the current champion is
re-scored on this data when its data fingerprint differs), else the alias `challenger`;
tracking/promotion.py makes that compare-and-set atomic across concurrent sweeps.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from fer_tune.core.classifier import Predictor, build_model
from fer_tune.core.config import make_train_config
from fer_tune.core.metrics import evaluate
from fer_tune.data.dataset import Split
from fer_tune.search.sweep import Sweep
from fer_tune.tracking.card import CARD_FILE, INPUT, TORCHSCRIPT_FILE, model_card
from fer_tune.tracking.paired import paired_review
from fer_tune.tracking.promotion import ABSENT, CHALLENGER, CHAMPION, PromotionError, promote
from fer_tune.tracking.report import plot_confusion, plot_learning_curves, plot_mistakes
from fer_tune.tracking.runs import SweepRuns
from fer_tune.tracking.settings import mlflow_settings
from fer_tune.tracking.store import download_model, fluent_tracking
from fer_tune.uris import redact

CHAMPION_READ_TRIES = 4  # a store error while reading the champion: tried again after 0.5, 1 and 2 s
CHAMPION_READ_BACKOFF_S = 0.5


@dataclass
class Registration:
    """What `promote_best` registered, and against which champion."""

    name: str
    version: str
    alias: str  # CHAMPION or CHALLENGER
    accuracy: float
    split: str  # "test", or "validation" where the data has no test split
    run_id: str  # the champion run
    rival: tuple[str, float] | None  # the champion it was compared with: (version, accuracy on this data)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def message(self) -> str:
        score = f"{self.split} accuracy {self.accuracy:.4f}"
        if self.alias == CHAMPION:
            beaten = f", beating version {self.rival[0]} ({self.rival[1]:.4f})" if self.rival else ""
            return f"registered {self.uri} as {self.name}@champion: {score}{beaten}"
        if self.rival is None:  # found registered already (a replay): the comparison was made then
            return f"registered {self.uri} as {self.name}@challenger: {score}; {self.name}@champion unchanged"
        return (
            f"registered {self.uri} as {self.name}@challenger: {score} does not beat champion "
            f"version {self.rival[0]} ({self.rival[1]:.4f} on this data); {self.name}@champion unchanged"
        )


def promote_best(sweep: Sweep, runs: SweepRuns) -> Registration:
    """Score the sweep's best checkpoint, log it in a nested champion run, register it and set its alias."""
    data, name = sweep.data, mlflow_settings(sweep.space).register_as
    done = registered_already(runs, name, sweep.name)
    if done is not None and done.alias:  # `results sync` after an outage that hit this step, or a re-run of it
        return done
    state = sweep.best_state()
    config = make_train_config(state["config"], where="best checkpoint")
    model = build_model(config, data.num_classes, data.mean, data.std)
    model.load_state_dict(state["model"])
    predictor = Predictor(model, config.tta).eval()
    split_name, split = ("test", data.test) if data.test is not None else ("validation", data.validation)
    scores = evaluate(model, split, data.num_classes, tta=config.tta, keep_probabilities=True)
    meta = _metadata(sweep, state, config, scores, split_name)

    if done is None:
        params = lambda: {"trial_id": sweep.best.trial_id, **config.model_dump()}
        run_id = runs.child("champion", "champion", params=params)
        log_evaluation(runs, run_id, sweep, scores, split, meta)
        version = log_model(runs, run_id, predictor, split, meta, name)
    else:  # registered, never promoted (its promoter was killed in between, or the promotion failed): finish it
        run_id, version = done.run_id, done.version
    tags = {
        "test_accuracy": f"{scores['accuracy']:.6f}",
        "test_macro_f1": f"{scores['macro_f1']:.6f}",
        "data_fingerprint": data.fingerprint(),
        "eval_split": split_name,
        "tta": config.tta,
        "sweep": sweep.name,
        "trial_id": sweep.best.trial_id,
        "classes": ",".join(data.classes),
    }
    for key, value in tags.items():  # before the alias: a concurrent promoter reads them off the champion
        runs.client.set_model_version_tag(name, version, key, value)
    # Compare and set under the registry's promotion lock (tracking/promotion.py): a strictly better
    # score takes the alias, a tie keeps it with the version registered first.
    champion = lambda: current_champion(runs, name, data, split_name, split)
    ours = scores["probabilities"].argmax(1).numpy()

    def review(rival: tuple[str, float]) -> bool:
        """McNemar on the same images (recorded in `tags`); with `promote: significant` a win needs it."""
        significant = paired_review(runs, sweep, name, rival[0], ours, split, tags)
        return significant or sweep.space.promote != "significant"

    try:
        alias, rival = promote(runs.client, name, version, scores["accuracy"], champion, review)
    except PromotionError as err:
        raise PromotionError(
            f"{err}; {name} version {version} stays registered without an alias: "
            f"`fer-tune results sync {sweep.name}` finishes its promotion"
        ) from None
    for key in ("paired_test", "promote_rule"):
        if key in tags:
            runs.client.set_model_version_tag(name, version, key, tags[key])
    runs.client.set_model_version_tag(name, version, "promotion", _comparison(alias, scores["accuracy"], rival))
    return Registration(name, version, alias, scores["accuracy"], split_name, run_id, rival)


def _comparison(alias: str, accuracy: float, rival: tuple[str, float] | None) -> str:
    """The promotion decision as recorded on the new version (full precision, read from the metrics)."""
    if rival is None:
        return f"{alias}: first version with an accuracy on this data ({accuracy!r})"
    tie = "== (a tie keeps the champion)" if alias == CHALLENGER else "== (a tie: the version registered first wins)"
    relation = ">" if accuracy > rival[1] else "<=" if accuracy < rival[1] else tie
    return f"{alias}: accuracy {accuracy!r} {relation} champion version {rival[0]}'s {rival[1]!r} on this data"


def registered_already(runs: SweepRuns, name: str, sweep: str) -> Registration | None:
    """The version this sweep registered before, if any (finding it by its `sweep` tag keeps this step idempotent).

    Its `alias` is "" where it was registered but never promoted (no alias, no `promotion` tag): its
    promoter was killed in between, and promote_best finishes the promotion. A store error propagates
    (the tracker keeps the step pending), never "not registered yet", which would register it twice.
    """
    try:
        versions = runs.client.search_model_versions(f"name = '{name}' and tags.sweep = '{sweep}'")
    except MlflowException as err:
        if err.error_code in ABSENT:  # no such registered model yet
            return None
        raise
    if not versions:
        return None
    version = versions[0]
    metrics = runs.client.get_run(version.run_id).data.metrics
    if CHAMPION in version.aliases:
        alias = CHAMPION
    elif version.aliases or "promotion" in version.tags:  # challenger now, or once and displaced since
        alias = CHALLENGER
    else:
        alias = ""
    split = version.tags.get("eval_split", "test")
    return Registration(name, str(version.version), alias, metrics.get("test_accuracy", float("nan")), split,
                        version.run_id, None)  # fmt: skip


def log_evaluation(runs: SweepRuns, run_id: str, sweep: Sweep, scores: dict, split: Split, meta: dict) -> None:
    """Test metrics, tags, plots and the model card into the champion run (test accuracy also on the parent)."""
    client, classes = runs.client, sweep.data.classes
    client.log_batch(run_id, metrics=_metrics(scores, classes))
    for key in ("eval_split", "tta", "trial_id"):
        client.set_tag(run_id, f"fer_tune.{key}", str(meta[key]))
    client.log_metric(runs.parent(), "test_accuracy", scores["accuracy"])
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "evaluation"
        figures.mkdir()
        plot_confusion(scores["confusion"], classes, figures / "confusion_matrix.png")
        plot_mistakes(split, scores["probabilities"], classes, figures / "misclassified.png")
        plot_learning_curves(sweep.best.curve, meta["checkpoint_epoch"], figures / "learning_curves.png")
        client.log_artifacts(run_id, str(figures), "evaluation")
    client.log_text(run_id, model_card(meta, name=mlflow_settings(sweep.space).register_as), CARD_FILE)


def log_model(runs: SweepRuns, run_id: str, predictor: Predictor, split: Split, meta: dict, name: str) -> str:
    """Log the predictor as an MLflow PyTorch model (TorchScript and card attached) and register it; its version."""
    with tempfile.TemporaryDirectory() as folder:
        scripted, card = Path(folder) / TORCHSCRIPT_FILE, Path(folder) / CARD_FILE
        torchscript(predictor).save(str(scripted))
        card.write_text(model_card(meta, name=name))
        example = split.images[:2].unsqueeze(1).float().numpy()  # a batch of 2: the export keeps N dynamic
        with torch.no_grad():
            signature = mlflow.models.infer_signature(example, predictor(torch.from_numpy(example)).numpy())
        with fluent_tracking(runs.uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                predictor,
                name="model",
                signature=signature,
                input_example=example,
                registered_model_name=name,
                metadata=meta,
                extra_files=[str(scripted), str(card)],
                # pt2 (torch.export) loads without fer_tune's code: serving needs only these two.
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
                serialization_format="pt2",
            )
    return str(info.registered_model_version)


def current_champion(runs: SweepRuns, name: str, data, split_name: str, split: Split) -> tuple[str, float] | None:
    """(version, accuracy on this data) of `name`@champion, or None where there is none yet.

    "None yet" is MLflow saying so (no such model, no such alias); any other error is the store's: it is
    retried CHAMPION_READ_TRIES times with backoff, then a PromotionError, never "no champion", which
    would let any model take the alias.
    """
    try:
        current = _store_read(name, lambda: runs.client.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as err:  # RESOURCE_DOES_NOT_EXIST: no such model; INVALID_PARAMETER_VALUE: no such alias
        if err.error_code in (*ABSENT, "INVALID_PARAMETER_VALUE"):
            return None
        raise
    tags = current.tags
    if tags.get("data_fingerprint") == data.fingerprint() and tags.get("eval_split") == split_name:
        # the metric, not the tag: the tag is rounded for display, and a rounded rival lets a tie win
        metrics = _store_read(name, lambda: runs.client.get_run(current.run_id).data.metrics)
        return str(current.version), metrics["test_accuracy"]
    # Measured on other data: score it on ours. Compared by class name, so its class list may differ.
    with tempfile.TemporaryDirectory() as folder:
        local = download_model(f"models:/{name}/{current.version}", runs.uri, folder)
        champion = mlflow.pyfunc.load_model(local)
    classes = np.array((champion.metadata.metadata or {})["classes"])
    images = split.images.unsqueeze(1).float().numpy()  # the registered input: float pixel values 0..255
    predicted = classes[np.asarray(champion.predict(images)).argmax(1)]
    return str(current.version), float((predicted == np.array(data.classes)[split.labels.numpy()]).mean())


def _store_read(name: str, request):
    """A read of `name`'s champion, retried with backoff on store errors; an answer that something does not
    exist (RESOURCE_DOES_NOT_EXIST, INVALID_PARAMETER_VALUE) is raised at once for the caller to decide."""
    for attempt in range(CHAMPION_READ_TRIES):
        try:
            return request()
        except MlflowException as err:
            if err.error_code in (*ABSENT, "INVALID_PARAMETER_VALUE"):
                raise
            failure = err
        except OSError as err:
            failure = err
        if attempt + 1 < CHAMPION_READ_TRIES:
            time.sleep(CHAMPION_READ_BACKOFF_S * 2**attempt)
    reason = (getattr(failure, "message", None) or str(failure) or type(failure).__name__).strip().splitlines()[0]
    raise PromotionError(
        redact(f"registered model {name}: could not read its champion after {CHAMPION_READ_TRIES} tries: {reason}")
    )


def torchscript(predictor: Predictor) -> torch.jit.ScriptModule:
    """The predictor as TorchScript, for deployments that load it with torch.jit.load alone."""
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; consumers still use it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(predictor)


def _metrics(scores: dict, classes) -> list[Metric]:
    values = {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"]}
    for kind in ("precision", "recall", "f1"):
        values.update({f"test_{kind}_{c}": v for c, v in zip(classes, scores[kind])})
    return [Metric(key, float(value), 0, 0) for key, value in values.items()]


def _metadata(sweep: Sweep, state: dict, config, scores: dict, split_name: str) -> dict:
    """What the MLmodel file records about the model: read back by the model card and `predict`."""
    data = sweep.data
    per_class = {
        c: {k: round(scores[k][i], 4) for k in ("precision", "recall", "f1")} for i, c in enumerate(data.classes)
    }
    return {
        "classes": list(data.classes),
        "input": INPUT,
        "output": f"float32 [N, {data.num_classes}] class probabilities, in `classes` order",
        "tta": config.tta,
        "eval_split": split_name,
        "metrics": {
            "accuracy": round(scores["accuracy"], 6),
            "macro_f1": round(scores["macro_f1"], 6),
            "per_class": per_class,
        },
        "data": {"source": data.source, "fingerprint": data.fingerprint()},
        "sweep": sweep.name,
        "trial_id": sweep.best.trial_id,
        "checkpoint_epoch": int(state["epoch"]),
        "train_config": config.model_dump(),
        "torchscript": f"extra_files/{TORCHSCRIPT_FILE}",
        "cost": dict(sweep.best.cost),  # params, macs, latency_ms (fer_tune.core.cost); `serve` shows latency
    }
