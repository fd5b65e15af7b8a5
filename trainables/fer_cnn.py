"""The `fer_cnn` trainable: one trial = one `fit` of a CNN on the shared dataset.

The dataset arrives through `tune.with_parameters` (Ray's object store, put
there once by the driver), so no trial parses a file and worker nodes need no
copy of the data.
"""

from __future__ import annotations

import logging
import tempfile
import time

import torch

from fer_tune.core.checkpoint import load_checkpoint, save_checkpoint
from fer_tune.core.config import make_train_config
from fer_tune.core.cost import model_cost
from fer_tune.core.training import fit
from fer_tune.data.dataset import FerDataset
from fer_tune.errors import FerTuneError
from trainables.registry import TRAINABLES


@TRAINABLES.register("fer_cnn")
def train_fer_cnn(config: dict, data: FerDataset, unavailable: dict[str, str] | None = None) -> None:
    """`unavailable`: model -> why its ImageNet weights cannot be loaded, found once by the driver."""
    import ray  # here, not at the top: importing the registry must not start Ray's import
    from ray import tune

    # Ray logs a line per saved checkpoint from every trial; the driver's console reports trials itself.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)

    train_config = make_train_config(config, where="trial config")
    if train_config.pretrained and train_config.model in (unavailable or {}):
        raise FerTuneError(unavailable[train_config.model])  # the driver's one line, before any work
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # Ray does not bound torch's intra-op threads itself

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(folder)

    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran; Ray's node_ip is shared on one host
    # params, macs, latency_ms: measured once, before training, and reported with every epoch (objectives may use them)
    cost = model_cost(train_config.model_copy(update={"pretrained": False}), data.num_classes)

    def report(metrics: dict, state) -> None:
        reported_at = time.time()
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state.state_dict(), folder)
            # reported_at: when the epoch ended, on the wall clock (bench/ lines trials' epochs up with it)
            extra = {"node_id": node_id, "reported_at": reported_at, **cost}
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(train_config, data, report, resume=resume)
