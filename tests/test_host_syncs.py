"""fit's training loop makes no host sync per batch: metrics stay on the device until the epoch ends.

On CUDA every `.item()`, `.cpu()`, `.tolist()`, `float(t)` or `if t:` waits for the GPU to finish
all queued work, so one per step leaves the GPU idle while Python prepares the next batch. Here, on
the CPU, those calls are counted while fit trains one epoch of 2 and of 6 batches: the counts must
be equal (what grows with the batches is a per-step sync). Only calls made from fer-tune's own code
count: torch.optim's Adam reads its step counter with `.item()`, but that counter is a CPU tensor by
design (capturable=False), so it costs no GPU sync. (A sync inside a torch op, as boolean-mask
indexing makes, calls no Python method; bench/gpu.py counts those on a GPU with
torch.cuda.set_sync_debug_mode.)
"""

import functools
import sys
import types
from collections import Counter

import pytest
import torch

from fer_tune.core.config import TrainConfig
from fer_tune.core.training import fit
from fer_tune.data.dataset import FerDataset, Split

SYNCING = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
BATCH = 8


def counting(monkeypatch) -> Counter:
    """Patch each syncing Tensor method to count its calls from fer_tune code, by caller."""
    counts: Counter = Counter()
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            caller = sys._getframe(1)
            if caller.f_globals.get("__name__", "").startswith("fer_tune"):
                counts[f"{_name} in {caller.f_code.co_name}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def with_batches(data: FerDataset, batches: int) -> FerDataset:
    train = Split(data.train.images[: batches * BATCH], data.train.labels[: batches * BATCH])
    return FerDataset(train, data.validation, data.test, data.classes, data.source)


def syncs_in_one_epoch(data: FerDataset, batches: int, monkeypatch, **config) -> Counter:
    config = TrainConfig(model="basic", batch_size=BATCH, epochs=1, width=0.25, device="cpu", **config)
    with monkeypatch.context() as patch:
        counts = counting(patch)
        fit(config, with_batches(data, batches))
    return counts


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"augmentation": "trans10", "scheduler": "onecycle", "class_weights": True}, id="busy"),
        pytest.param({"mixup_alpha": 0.4}, id="mixup"),
    ],
)
def test_training_syncs_do_not_grow_with_batches(tiny_data, monkeypatch, config):
    few = syncs_in_one_epoch(tiny_data, 2, monkeypatch, **config)
    many = syncs_in_one_epoch(tiny_data, 6, monkeypatch, **config)
    assert few, "the counter saw nothing: the epoch's own .item() calls should show"
    assert many == few, f"per-batch syncs: {dict(many - few)}"


def test_the_counter_sees_a_per_step_sync(tiny_data, monkeypatch):
    """The check fails when it should: a loss read with .item() every step, as a per-step log would, grows."""
    from fer_tune.core import training

    # The reading function runs with training.py's globals, so the counter takes it for the loop's own code.
    read_each_step = types.FunctionType(_loss_read_on_the_host.__code__, vars(training))
    original = training.train_one_epoch

    def syncing_epoch(model, train, loss_fn, state, autocast):
        return original(model, train, functools.partial(read_each_step, loss_fn), state, autocast)

    monkeypatch.setattr(training, "train_one_epoch", syncing_epoch)
    few = syncs_in_one_epoch(tiny_data, 2, monkeypatch)
    many = syncs_in_one_epoch(tiny_data, 6, monkeypatch)
    # 4 more steps, and the loop calls its loss twice a step (the mixup pair, the same labels without mixup)
    assert (many - few) == {"item in _loss_read_on_the_host": 2 * 4}


def _loss_read_on_the_host(loss_fn, logits, labels):
    loss = loss_fn(logits, labels)
    loss.item()
    return loss
