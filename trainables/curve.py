"""The `curve` trainable: a trial that reports a learning curve instead of training a CNN.

What the suite's orchestration tests exercise (Ray Tune, Optuna, ASHA and MO-ASHA, the dead-trial
stop, resume after SIGKILL, node loss, MLflow, promotion) does not depend on how the numbers were
made; training a CNN on two CPU cores made each of those tests cost minutes. A `trainable: curve`
space runs everything a real sweep runs except the CNN: each epoch, it reports the metrics a
`fer_cnn` trial reports (train/val loss and accuracy, val macro-F1, lr, epoch_seconds, the cost
metrics), read from a curve source, with a checkpoint per epoch and resume from it.

    trainable: curve
    curve: {sleep_s: 0.2, hold: {epoch: 2, until: /tmp/go}}   # optional (fer_tune.core.curves.CurveSettings)

The curves come from fer_tune.core.curves (a deterministic function of configuration and seed: some
configurations learn, some stay at chance, some diverge); a table of recorded curves is one more
source there. A checkpoint holds the trial's config, its model's initial weights (so the driver can
build, score and register a champion as it does after real training), the epoch and the history.
"""

from __future__ import annotations

import logging
import tempfile
import time

import torch

from fer_tune.core.checkpoint import load_checkpoint, save_checkpoint
from fer_tune.core.classifier import build_model
from fer_tune.core.config import make_train_config
from fer_tune.core.cost import count_macs, count_params
from fer_tune.core.curves import CurveSettings, curve_source, hold, proxy_latency_ms
from fer_tune.core.training import Diverged
from fer_tune.data.dataset import FerDataset
from trainables.registry import TRAINABLES


@TRAINABLES.register("curve")
def train_curve(
    config: dict, data: FerDataset, unavailable: dict[str, str] | None = None, curve: CurveSettings | None = None
) -> None:
    """`unavailable` is fer_cnn's (weights this trainable never loads); `curve`: the space's `curve:` section."""
    import ray
    from ray import tune

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    settings = curve or CurveSettings()
    train_config = make_train_config(config, where="trial config")
    torch.set_num_threads(1)  # the model is built once, for its weights and cost; nothing here needs threads

    history: list[dict] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            history = list(load_checkpoint(folder)["history"])

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        untrained = train_config.model_copy(update={"pretrained": False})
        model = build_model(untrained, data.num_classes, data.mean, data.std)
    weights = model.state_dict()
    macs = count_macs(model, train_config.image_size)
    cost = {"params": count_params(model), "macs": macs, "latency_ms": proxy_latency_ms(macs)}
    counts = data.validation.class_counts(data.num_classes)
    chance = max(counts) / max(1, sum(counts))  # the majority-class rate, the dead-trial rule's floor
    source = curve_source(settings)

    node_id = ray.get_runtime_context().get_node_id()
    gpu_ids = ",".join(str(i) for i in ray.get_gpu_ids())
    started_at = time.time()
    for epoch in range(len(history) + 1, train_config.epochs + 1):
        hold(settings, epoch)
        started = time.perf_counter()
        if settings.sleep_s:
            time.sleep(settings.sleep_s)
        metrics = source.metrics(train_config, epoch, chance)
        if metrics is None:
            raise Diverged(f"diverged at epoch {epoch} (train_loss nan); lower lr or add a schedule with warm-up")
        metrics = {"epoch": epoch, **metrics, "epoch_seconds": time.perf_counter() - started}
        history.append(metrics)
        state = {"config": train_config.model_dump(), "model": weights, "epoch": epoch, "history": list(history)}
        extra = {"node_id": node_id, "reported_at": time.time(), "started_at": started_at, "gpu_ids": gpu_ids}
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state, folder)
            tune.report({**metrics, **extra, **cost}, checkpoint=tune.Checkpoint.from_directory(folder))
