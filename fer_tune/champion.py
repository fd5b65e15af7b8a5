"""The sweep's best model, tested, logged and registered: `promote_best(sweep, runs)`.

Runs on the driver after a sweep (Tracker.finish calls it). The best trial's best checkpoint
is rebuilt from the config inside it and scored on the test split (the validation split,
tagged fer_tune.eval_split=validation, where the data has no test split), with
horizontal-flip test-time augmentation on by default (FLIP_TTA): the registered model does
the same averaging, so the logged accuracy is the deployed model's.

Layout: a run named "champion", nested under the sweep's parent run, holds the test metrics
(test_accuracy, test_macro_f1, per-class precision/recall/F1), evaluation/ plots (confusion
matrix, most confident mistakes, the best trial's learning curves), the model card and the
MLflow PyTorch model (pt2, with the TorchScript file among its extra files). The model is
registered under the space's `mlflow.register_as`; it takes the alias `champion` only when
its accuracy beats the current champion's on the same data (the current champion is
re-scored on this data when its data fingerprint differs), else the alias `challenger`.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from fer_tune.config import make_train_config  # noqa: E402
from fer_tune.data.dataset import Split  # noqa: E402
from fer_tune.serving import CARD_FILE, TORCHSCRIPT_FILE, Predictor, load_model, model_card  # noqa: E402
from fer_tune.tracking import SweepRuns, fluent_tracking  # noqa: E402
from fer_tune.training import build_model, confusion_matrix, per_class_scores  # noqa: E402
from trainables.fer_cnn import STATE_FILE  # noqa: E402

FLIP_TTA = True  # average each face with its mirror image when testing and in the registered model
CHAMPION, CHALLENGER = "champion", "challenger"
MISTAKES_SHOWN = 25  # the most confident mistakes, as a 5x5 grid
INPUT = "float32 [N, 1, 48, 48], grayscale pixel values 0..255"


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
        return (
            f"registered {self.uri} as {self.name}@challenger: {score} does not beat champion "
            f"version {self.rival[0]} ({self.rival[1]:.4f} on this data); {self.name}@champion unchanged"
        )


def promote_best(sweep, runs: SweepRuns, flip_tta: bool = FLIP_TTA) -> Registration:
    """Score the sweep's best checkpoint, log it in a nested champion run, register it and set its alias."""
    data, name = sweep.data, sweep.space.mlflow.register_as
    state = best_state(sweep)
    config = make_train_config(state["config"], where="best checkpoint")
    model = build_model(config, data.num_classes, data.mean, data.std)
    model.load_state_dict(state["model"])
    predictor = Predictor(model, flip_tta).eval()
    split_name, split = ("test", data.test) if data.test is not None else ("validation", data.validation)
    scores = score(predictor, split, data.num_classes)
    meta = _metadata(sweep, state, config, scores, split_name, flip_tta)

    run_id = runs.child("champion", "champion", params=lambda: {"trial_id": sweep.best.trial_id, **config.model_dump()})
    log_evaluation(runs, run_id, sweep, scores, split, meta)
    rival = current_champion(runs, name, data, split_name, split)  # before ours joins the registry
    version = log_model(runs, run_id, predictor, split, meta, name)
    tags = {
        "test_accuracy": f"{scores['accuracy']:.6f}",
        "test_macro_f1": f"{scores['macro_f1']:.6f}",
        "data_fingerprint": data.fingerprint(),
        "eval_split": split_name,
        "flip_tta": str(flip_tta),
        "sweep": sweep.name,
        "trial_id": sweep.best.trial_id,
        "classes": ",".join(data.classes),
    }
    for key, value in tags.items():
        runs.client.set_model_version_tag(name, version, key, value)
    alias = CHAMPION if rival is None or scores["accuracy"] > rival[1] else CHALLENGER
    runs.client.set_registered_model_alias(name, alias, version)
    return Registration(name, version, alias, scores["accuracy"], split_name, run_id, rival)


def log_evaluation(runs: SweepRuns, run_id: str, sweep, scores: dict, split: Split, meta: dict) -> None:
    """Test metrics, tags, plots and the model card into the champion run (test accuracy also on the parent)."""
    client, classes = runs.client, sweep.data.classes
    client.log_batch(run_id, metrics=_metrics(scores, classes))
    for key in ("eval_split", "flip_tta", "trial_id"):
        client.set_tag(run_id, f"fer_tune.{key}", str(meta[key]))
    client.log_metric(runs.parent(), "test_accuracy", scores["accuracy"])
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "evaluation"
        figures.mkdir()
        plot_confusion(scores["confusion"], classes, figures / "confusion_matrix.png")
        plot_mistakes(split, scores["probabilities"], classes, figures / "misclassified.png")
        plot_learning_curves(sweep.best.curve, meta["checkpoint_epoch"], figures / "learning_curves.png")
        client.log_artifacts(run_id, str(figures), "evaluation")
    client.log_text(run_id, model_card(meta, name=sweep.space.mlflow.register_as), CARD_FILE)


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


def best_state(sweep) -> dict:
    """The training state saved in the best trial's best checkpoint (by the space's metric)."""
    space = sweep.space
    result = next(r for r in sweep.result_grid if r.path == sweep.best.path)
    checkpoint = result.get_best_checkpoint(space.metric, space.mode) or result.checkpoint
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


@torch.no_grad()
def score(predictor: Predictor, split: Split, num_classes: int, batch_size: int = 1024) -> dict:
    """Accuracy, macro-F1, per-class scores and confusion matrix of `predictor` on `split`."""
    probabilities = torch.cat([predictor(split.images[i : i + batch_size]) for i in range(0, len(split), batch_size)])
    predictions = probabilities.argmax(1)
    confusion = confusion_matrix(split.labels, predictions, num_classes)
    return {
        "accuracy": (predictions == split.labels).float().mean().item(),
        **per_class_scores(confusion),
        "confusion": confusion,
        "probabilities": probabilities,
    }


def current_champion(runs: SweepRuns, name: str, data, split_name: str, split: Split) -> tuple[str, float] | None:
    """(version, accuracy on this data) of `name`@champion, or None where there is none yet."""
    try:
        current = runs.client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no such model, or no champion alias yet
        return None
    tags = current.tags
    if tags.get("data_fingerprint") == data.fingerprint() and tags.get("eval_split") == split_name:
        return str(current.version), float(tags["test_accuracy"])
    # Measured on other data: score it on ours. Compared by class name, so its class list may differ.
    champion = load_model(f"models:/{name}/{current.version}", runs.uri)
    predicted = np.array(champion.classes)[champion.predict(split.images.numpy()).argmax(1)]
    return str(current.version), float((predicted == np.array(data.classes)[split.labels.numpy()]).mean())


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


def _metadata(sweep, state: dict, config, scores: dict, split_name: str, flip_tta: bool) -> dict:
    """What the MLmodel file records about the model: read back by the model card and `predict`."""
    data = sweep.data
    per_class = {
        c: {k: round(scores[k][i], 4) for k in ("precision", "recall", "f1")} for i, c in enumerate(data.classes)
    }
    return {
        "classes": list(data.classes),
        "input": INPUT,
        "output": f"float32 [N, {data.num_classes}] class probabilities, in `classes` order",
        "flip_tta": flip_tta,
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
    }


def plot_confusion(confusion: torch.Tensor, classes, out: Path) -> None:
    """Rows: true class, columns: predicted; colour is the row share, the number the count."""
    counts = confusion.numpy()
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if shares[row, col] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_mistakes(split: Split, probabilities: torch.Tensor, classes, out: Path) -> None:
    """The most confident mistakes: each image with its true and predicted class."""
    confidence, predictions = probabilities.max(1)
    wrong = (predictions != split.labels).nonzero().flatten()
    shown = wrong[confidence[wrong].argsort(descending=True)][:MISTAKES_SHOWN].tolist()
    fig, axes = plt.subplots(5, 5, figsize=(7.5, 8.5))
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        ax.imshow(split.images[i].numpy(), cmap="gray", vmin=0, vmax=255)
        true, predicted = classes[int(split.labels[i])], classes[int(predictions[i])]
        ax.set_title(f"{true} → {predicted}\n{confidence[i].item():.2f}", fontsize=8)
    fig.suptitle(f"most confident mistakes ({len(wrong)} of {len(split)} wrong): true → predicted")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_learning_curves(curve: pd.DataFrame, checkpoint_epoch: int, out: Path) -> None:
    """Loss and accuracy per epoch of the best trial; the dashed line marks the registered checkpoint."""
    fig, (loss, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, kind in ((loss, "loss"), (accuracy, "accuracy")):
        for split in ("train", "val"):
            if f"{split}_{kind}" in curve:
                ax.plot(curve["epoch"], curve[f"{split}_{kind}"], marker=".", label=split)
        ax.axvline(checkpoint_epoch, color="gray", linestyle="--", linewidth=1)
        ax.set(xlabel="epoch", title=kind)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
