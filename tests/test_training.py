"""fit(): metrics contract, learning, determinism, exact resume, every optimizer and schedule."""

import copy
import math

import pytest
import torch

from fer_tune.core.checkpoint import load_checkpoint, save_checkpoint
from fer_tune.core.classifier import Predictor, build_model
from fer_tune.core.config import TrainConfig
from fer_tune.core.metrics import class_weights, confusion_matrix, evaluate, per_class_scores
from fer_tune.core.optim import OPTIMIZERS, SCHEDULERS
from fer_tune.core.training import Diverged, fit
from fer_tune.data.dataset import FerDataset, Split
from fer_tune.errors import FerTuneError

METRICS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "epoch_seconds")
SMALL = dict(model="basic", batch_size=16, augmentation="none", dropout=0.0)


def weights(state) -> dict:
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def test_fit_reports_every_epoch_and_learns(tiny_data):
    seen = []
    history = fit(TrainConfig(**SMALL, epochs=8, lr=3e-3), tiny_data, lambda m, s: seen.append((m, s.epoch)))
    assert [epoch for _, epoch in seen] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert history == [m for m, _ in seen]
    for metrics in history:
        assert set(metrics) == set(METRICS)
        assert all(math.isfinite(v) for v in metrics.values())
    assert max(m["val_accuracy"] for m in history) > 0.9  # the blobs are easy; chance is 1/7
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_same_seed_same_result_and_different_seed_differs(tiny_data):
    config = TrainConfig(**{**SMALL, "augmentation": "trans10", "dropout": 0.3}, epochs=2)
    runs = []
    for seed in (0, 0, 1):
        fit(config.model_copy(update={"seed": seed}), tiny_data, lambda m, s: s.epoch == 2 and runs.append(weights(s)))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in metrics.items() if k != "epoch_seconds"} for metrics in history]


@pytest.mark.parametrize("scheduler", ["cos_warm", "plateau", "onecycle", "step"])
def test_resume_is_exact(tiny_data, scheduler, tmp_path):
    """Stopping after epoch 2 and resuming from the checkpoint file (loaded with weights_only=True)
    gives bit-identical weights and metrics to an unbroken run."""
    config = TrainConfig(
        **{**SMALL, "augmentation": "trans7", "dropout": 0.3},
        mixup_alpha=0.4,
        scheduler=scheduler,
        T_0=1,
        T_mult=2,
        plateau_patience=0,
        epochs=4,
    )
    unbroken = {}

    def keep(metrics, state):
        if state.epoch == 2:
            save_checkpoint(state.state_dict(), tmp_path)
        unbroken["w"] = weights(state)

    full_history = fit(config, tiny_data, keep)
    resumed = {}
    resume = load_checkpoint(tmp_path)  # weights_only=True: plain types and tensors only
    resumed_history = fit(config, tiny_data, lambda m, s: resumed.update(w=weights(s)), resume=resume)
    assert without_timing(resumed_history) == without_timing(full_history)
    assert all(torch.equal(unbroken["w"][k], resumed["w"][k]) for k in unbroken["w"])


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimizer_trains(tiny_data, optimizer):
    lr = 0.05 if optimizer == "sgd" else 3e-3
    history = fit(TrainConfig(**SMALL, optimizer=optimizer, lr=lr, epochs=3), tiny_data)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def lrs(tiny_data, **overrides) -> list[float]:
    """The learning rate after each epoch."""
    return [m["lr"] for m in fit(TrainConfig(**SMALL, lr=0.01, **overrides), tiny_data)]


def test_every_scheduler_is_registered_and_runs(tiny_data):
    assert set(SCHEDULERS.names()) == {"none", "plateau", "step", "cos_warm", "cosine", "onecycle"}
    for name in SCHEDULERS.names():
        assert len(lrs(tiny_data, scheduler=name, epochs=2)) == 2


@pytest.mark.slow(seconds=20)
def test_schedules_shape_the_learning_rate(tiny_data):
    assert lrs(tiny_data, scheduler="none", epochs=2) == [0.01, 0.01]
    assert lrs(tiny_data, scheduler="step", step_size=2, gamma=0.5, epochs=4) == pytest.approx(
        [0.01, 0.005, 0.005, 0.0025]
    )
    # cos_warm(T_0=2, T_mult=1): down for two epochs, then a warm restart back to the peak.
    warm = lrs(tiny_data, scheduler="cos_warm", T_0=2, T_mult=1, epochs=4)
    assert warm[0] == pytest.approx(0.005) and warm[1] == pytest.approx(0.01) and warm[2] == pytest.approx(0.005)
    cosine = lrs(tiny_data, scheduler="cosine", epochs=3)
    assert cosine[0] > cosine[1] > cosine[2] == pytest.approx(0.0)
    # OneCycle warms up for 30% of training (to ~0.006 after epoch 1 of 6, ~0.0099 after epoch 2), then anneals.
    onecycle = lrs(tiny_data, scheduler="onecycle", epochs=6)
    assert onecycle[0] < onecycle[1] <= 0.01 and onecycle[-1] < 1e-4
    # Plateau with patience 0 and a huge lr: the val loss fails to improve at some point and lr drops.
    plateau = lrs(tiny_data, scheduler="plateau", plateau_patience=0, plateau_factor=0.1, epochs=5)
    assert plateau[0] == 0.01 and min(plateau) < 0.01


@pytest.mark.parametrize(
    "option", [{"label_smoothing": 0.2}, {"class_weights": True}, {"mixup_alpha": 0.4}], ids=lambda o: next(iter(o))
)
def test_each_loss_option_changes_the_loss(option, tiny_data):
    """Same seed, same data, one epoch: turning the option on changes the training loss (and it stays finite).

    The train split is made imbalanced (class 1 kept at 4 images) so that inverse-frequency weights are not all 1.
    """
    keep = (tiny_data.train.labels != 1) | (torch.arange(len(tiny_data.train)) < 7 * 4)
    train = Split(tiny_data.train.images[keep], tiny_data.train.labels[keep])
    data = FerDataset(train, tiny_data.validation, tiny_data.test, tiny_data.classes, "imbalanced blobs")
    plain = fit(TrainConfig(**SMALL, epochs=1), data)[0]["train_loss"]
    changed = fit(TrainConfig(**SMALL, epochs=1, **option), data)[0]["train_loss"]
    assert math.isfinite(changed) and changed != pytest.approx(plain, rel=1e-3), (plain, changed)


def test_class_weights_are_inverse_frequency():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(labels, num_classes=4)
    assert w[3] == 0  # absent class
    assert w[0] * 6 == pytest.approx(w[1] * 3) == pytest.approx(w[2] * 1)
    assert w[:3].mean() == pytest.approx(1.0)


def test_per_class_scores_match_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 5, (300,), generator=generator)
    predicted = torch.where(
        torch.rand(300, generator=generator) < 0.6, truth, torch.randint(0, 5, (300,), generator=generator)
    )
    confusion = confusion_matrix(truth, predicted, num_classes=5)
    assert confusion.tolist() == sklearn_metrics.confusion_matrix(truth, predicted).tolist()
    scores = per_class_scores(confusion)
    assert scores["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(truth, predicted, average="macro"))
    assert scores["recall"] == pytest.approx(list(sklearn_metrics.recall_score(truth, predicted, average=None)))
    assert scores["precision"] == pytest.approx(list(sklearn_metrics.precision_score(truth, predicted, average=None)))


def test_evaluate_confusion_counts_every_image(tiny_data):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 7))
    result = evaluate(model, tiny_data.validation, num_classes=7, batch_size=16, keep_probabilities=True)
    assert result["confusion"].sum() == len(tiny_data.validation)
    assert result["confusion"].diag().sum() / len(tiny_data.validation) == pytest.approx(result["accuracy"])
    assert result["probabilities"].shape == (len(tiny_data.validation), 7)
    assert "probabilities" not in evaluate(model, tiny_data.validation, num_classes=7)  # fit keeps none


def test_evaluate_with_flip_tta_scores_what_the_predictor_predicts(tiny_data):
    """One evaluation function: with tta="flip" it averages the mirror image's probabilities as the
    deployed Predictor does, and its loss is the cross-entropy of those averaged probabilities."""
    torch.manual_seed(0)
    model = build_model(TrainConfig(**SMALL), 7, tiny_data.mean, tiny_data.std).eval()
    split = tiny_data.validation
    result = evaluate(model, split, num_classes=7, tta="flip", keep_probabilities=True)
    with torch.no_grad():
        expected = Predictor(model, tta="flip")(split.images)
    assert torch.allclose(result["probabilities"], expected, atol=1e-6)
    assert result["accuracy"] == pytest.approx((expected.argmax(1) == split.labels).float().mean().item())
    assert result["loss"] == pytest.approx(torch.nn.functional.nll_loss(expected.log(), split.labels).item(), rel=1e-5)
    plain = evaluate(model, split, num_classes=7, keep_probabilities=True)
    assert not torch.allclose(plain["probabilities"], result["probabilities"])  # the mirror view counted


@pytest.mark.gpu
def test_cuda_path_trains_with_bf16_and_channels_last(tiny_data):
    """Data on the GPU as uint8, batched augmentation there, bf16 autocast, channels_last."""
    config = TrainConfig(**{**SMALL, "augmentation": "trans10"}, epochs=8, lr=3e-3, device="cuda")
    seen = []
    history = fit(config, tiny_data, lambda m, s: seen.append(next(s.model.parameters())))
    assert seen[0].is_cuda and seen[0].dtype == torch.float32  # master weights stay fp32 under autocast
    assert max(m["val_accuracy"] for m in history) > 0.9


@pytest.mark.gpu
def test_cuda_resume_is_exact(tiny_data):
    config = TrainConfig(**{**SMALL, "augmentation": "trans7", "dropout": 0.3}, epochs=3, device="cuda")
    saved, unbroken, resumed = {}, {}, {}

    def keep(metrics, state):
        if state.epoch == 1:
            saved["state"] = copy.deepcopy(state.state_dict())
        unbroken["w"] = weights(state)

    fit(config, tiny_data, keep)
    fit(config, tiny_data, lambda m, s: resumed.update(w=weights(s)), resume=saved["state"])
    assert all(torch.allclose(unbroken["w"][k], resumed["w"][k]) for k in unbroken["w"])


def test_a_nan_loss_stops_training_at_once(tiny_data):
    seen = []
    config = TrainConfig(**SMALL, optimizer="sgd", lr=1e8, scheduler="none", epochs=5)
    with pytest.raises(Diverged, match=r"^diverged at epoch 1 \(train_loss nan"):
        fit(config, tiny_data, lambda metrics, state: seen.append(metrics))
    assert seen == []  # nothing was reported: no NaN reaches a pruner or a results table


def test_cuda_out_of_memory_is_one_line_naming_the_batch_size(tiny_data, monkeypatch):
    """Injected here (no GPU on CI): the real error is raised by the CUDA allocator inside a step."""
    import fer_tune.core.training as training

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training, "train_one_epoch", out_of_memory)
    with pytest.raises(FerTuneError, match=r"CUDA out of memory training basic at batch_size 16 .*resources\.gpu"):
        fit(TrainConfig(**SMALL, epochs=1), tiny_data)
