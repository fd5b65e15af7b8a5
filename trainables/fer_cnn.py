"""The `fer_cnn` trainable: one trial = one `fit` of a CNN on the shared dataset.

The dataset arrives through `tune.with_parameters` (Ray's object store, put
there once by the driver), so no trial parses a file and worker nodes need no
copy of the data.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from fer_tune.config import make_train_config
from fer_tune.data.dataset import FerDataset
from fer_tune.training import fit

STATE_FILE = "state.pt"


def train_fer_cnn(config: dict, data: FerDataset) -> None:
    # Grid sweeps pass each enumerated point as config["point"]; samplers pass the point flat.
    train_config = make_train_config(config.get("point", config), where="trial config")
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))  # Ray does not bound torch's intra-op threads itself

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, weights_only=False)

    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran; Ray's node_ip is shared on one host

    def report(metrics: dict, state) -> None:
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state.state_dict(), os.path.join(folder, STATE_FILE))
            tune.report({**metrics, "node_id": node_id}, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(train_config, data, report, resume=resume)
