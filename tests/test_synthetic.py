"""The synthetic faces: shapes, determinism, FER2013's proportions, label noise, and signal."""

import hashlib

import numpy as np
import pytest
import torch

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.data import synthetic
from fer_tune.data.dataset import FerDataset
from fer_tune.data.synthetic import (
    FER2013_CLASS_COUNTS,
    LABEL_NOISE,
    SYNTHETIC_VERSION,
    generate_faces,
    synthetic_dataset,
)

N = 6000  # large enough for proportions within ~1.5 points; drawn once per module (about a second)

GOLDEN_N = 2 * synthetic.CHUNK  # two whole chunks, above the smallest set (MIN_IMAGES)
# sha256 of generate_faces(GOLDEN_N, seed=0): images, labels, usage. If this changes, the generator's
# output changed: bump SYNTHETIC_VERSION (it keys the on-disk cache) and update both.
GOLDEN = (1, "8882e3138fabe7a2622676008f3e7f39440985972c35a7a17a52863f2c335f63")


@pytest.fixture(scope="module")
def faces():
    return generate_faces(N, seed=0, return_clean_labels=True)


def _digest(images, labels, usage):
    digest = hashlib.sha256(images.tobytes())
    digest.update(labels.tobytes())
    digest.update(",".join(usage).encode())
    return digest.hexdigest()


def test_shapes_and_dtypes(faces):
    images, labels, usage, clean = faces
    assert images.shape == (N, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert clean.shape == (N,) and clean.dtype == np.int64
    assert usage.shape == (N,)
    assert set(np.unique(labels)) == set(range(len(EMOTIONS)))


def test_deterministic_per_seed():
    first, again, other = generate_faces(300, 7), generate_faces(300, 7), generate_faces(300, 8)
    assert _digest(*first) == _digest(*again)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_chunking_does_not_change_the_bytes(monkeypatch):
    whole = generate_faces(GOLDEN_N, seed=0)
    monkeypatch.setattr(synthetic, "CHUNK", 7)  # images are drawn independently of their chunk
    assert _digest(*generate_faces(GOLDEN_N, seed=0)) == _digest(*whole)


def test_golden_output_pins_the_version():
    assert (SYNTHETIC_VERSION, _digest(*generate_faces(GOLDEN_N, seed=0))) == GOLDEN


def test_class_proportions_follow_fer2013(faces):
    _, labels, _, clean = faces
    expected = np.array(FER2013_CLASS_COUNTS) / sum(FER2013_CLASS_COUNTS)
    for drawn in (clean, labels):
        share = np.bincount(drawn, minlength=len(EMOTIONS)) / N
        np.testing.assert_allclose(share, expected, atol=0.02)
        assert EMOTIONS[share.argmin()] == "disgust"
        assert EMOTIONS[share.argmax()] == "happy"


def test_usage_split_is_fer2013s_80_10_10(faces):
    usage = faces[2]
    counts = {name: int((usage == name).sum()) for name in ("Training", "PublicTest", "PrivateTest")}
    assert counts == {"Training": 4800, "PublicTest": 600, "PrivateTest": 600}
    assert not np.all(usage[:600] == "PublicTest")  # shuffled, not in blocks


def test_label_noise_rate(faces):
    _, labels, _, clean = faces
    rate = float((labels != clean).mean())
    assert LABEL_NOISE - 0.01 <= rate <= LABEL_NOISE + 0.01, rate
    assert 0.03 <= LABEL_NOISE <= 0.05
    flipped_to = np.bincount(labels[labels != clean], minlength=len(EMOTIONS))
    assert (flipped_to > 0).sum() >= 6  # noise lands on (nearly) every class, not on one


def test_images_vary_and_use_the_range(faces):
    images = faces[0].astype(np.float32)
    per_image_std = images.reshape(N, -1).std(axis=1)
    assert per_image_std.min() > 3
    assert np.median(per_image_std) > 20
    low, high = np.percentile(images, [1, 99])
    assert low < 40 and high > 215
    assert not np.array_equal(images[0], images[1])


@pytest.mark.parametrize(
    "a, b, rows, cols",
    [  # regions of the 12x12 image of 4x4-pixel cells
        ("happy", "sad", slice(7, 11), slice(3, 9)),  # mouth: corners up vs down
        ("surprise", "neutral", slice(7, 11), slice(3, 9)),  # mouth: open vs closed
        ("fear", "angry", slice(1, 6), slice(1, 11)),  # brows and eyes: raised vs lowered
    ],
)
def test_classes_differ_more_than_halves_of_one_class(faces, a, b, rows, cols):
    images, _, _, clean = faces
    # Standardize each image (brightness and contrast are nuisance) and pool 4x4 cells
    # (positions jitter by a few pixels), then compare mean faces.
    x = images.reshape(N, -1).astype(np.float64)
    x = ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).reshape(N, 12, 4, 12, 4).mean((2, 4))
    ia, ib = np.flatnonzero(clean == EMOTIONS.index(a)), np.flatnonzero(clean == EMOTIONS.index(b))

    def gap(i, j):
        return np.abs(x[i].mean(0) - x[j].mean(0))[rows, cols].mean()

    between, within = gap(ia, ib), max(gap(ia[0::2], ia[1::2]), gap(ib[0::2], ib[1::2]))
    assert between > 1.5 * within, (a, b, between, within)  # measured: 2.3-2.6x at N=6000


def test_synthetic_dataset_splits():
    ds = synthetic_dataset(n=1000, seed=3)
    assert isinstance(ds, FerDataset)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (800, 100, 100)
    assert ds.classes == EMOTIONS and ds.source == "synthetic(n=1000, seed=3)"
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert 0.2 < ds.mean < 0.8 and ds.std > 0.1
    assert ds.fingerprint() == synthetic_dataset(n=1000, seed=3).fingerprint()
