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
from fer_tune.core.threads import use_threads
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
    use_threads(share=cpus)  # Ray does not bound torch's intra-op threads itself

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(folder)

    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran; Ray's node_ip is shared on one host
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]  # the GPU(s) Ray gave this trial: CUDA_VISIBLE_DEVICES shows them
    check_cuda(gpu_ids, train_config.device)
    started_at = time.time()
    cost: dict[str, float] = {}  # params, macs, latency_ms: reported with every epoch (objectives may use them)

    def report(metrics: dict, state) -> None:
        reported_at = time.time()
        if not cost:  # measured once, after the first epoch: a model that cannot train fails in training's words
            cost.update(model_cost(train_config.model_copy(update={"pretrained": False}), data.num_classes))
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state.state_dict(), folder)
            # reported_at: when the epoch ended, on the wall clock (bench/ lines trials' epochs up with it)
            extra = {"node_id": node_id, "reported_at": reported_at, "started_at": started_at}
            extra["gpu_ids"] = ",".join(gpu_ids)
            extra.update(cost)
            tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(train_config, data, report, resume=resume)


def check_cuda(gpu_ids: list[str], device: str) -> None:
    """A trial Ray gave a GPU trains on it: where CUDA is missing, fail in one line rather than on the CPU unseen.

    `device: cpu` in the space asks for the CPU on purpose, and is left alone.
    """
    if gpu_ids and device != "cpu" and not torch.cuda.is_available():
        import socket

        raise FerTuneError(
            f"trial holds GPU {','.join(gpu_ids)} (resources.gpu / --gpus-per-trial) but CUDA is not available on "
            f"{socket.gethostname()} (torch {torch.__version__}); install a CUDA build of torch there, declare no GPU "
            "for that node (ray start --num-gpus 0), or use --gpus-per-trial 0"
        )
