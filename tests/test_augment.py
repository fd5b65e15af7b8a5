"""Batched augmentation: every strategy, and against the same transforms applied one image at a
time by torchvision (two-sample KS tests on per-image statistics)."""

import math

import pytest
import torch
from scipy.stats import beta, ks_2samp, kstest
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bench.reference import torchvision_reference
from fer_tune.core import augment
from fer_tune.core.augment import create_augmentation, list_augmentations, mixup
from fer_tune.errors import FerTuneError

STRATEGIES = list_augmentations()
RANDOM = [name for name in STRATEGIES if name != "none"]
N = 2000  # images per side: ~1 s of torchvision per strategy, and it catches the wrong settings below
MIN_P = 1e-3  # fixed seeds, so a pass is a pass; 24 KS tests at 1e-3 -> ~2% chance a right strategy fails


def asymmetric_image() -> torch.Tensor:
    """[1, 48, 48]: a diagonal gradient plus an off-centre bright square, so flips, shifts,
    rotations, zooms and erasing all move the statistics below."""
    ys, xs = torch.linspace(0, 1, 48)[:, None], torch.linspace(0, 1, 48)[None, :]
    image = 0.15 + 0.35 * xs + 0.15 * ys
    image[6:18, 28:42] = 1.0
    return image[None]


IMAGE = asymmetric_image()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batched ops on shared, busy CPU cores run several times faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_references: dict[str, torch.Tensor] = {}


def reference_samples(name: str) -> torch.Tensor:
    """N outputs of the per-image torchvision pipeline, cached across tests."""
    if name not in _references:
        torch.manual_seed(0)
        transform = torchvision_reference(name)
        _references[name] = torch.stack([transform(IMAGE.clone()) for _ in range(N)])
    return _references[name]


def batched_samples(name: str) -> torch.Tensor:
    # A seed other than the reference's: with equal seeds some strategies draw the very same
    # numbers as torchvision, and the test would compare a sample with itself.
    return create_augmentation(name)(IMAGE.expand(N, 1, 48, 48).clone(), torch.Generator().manual_seed(1))


def summary(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics: mean, centre of mass (x, y), fraction of (near-)zero pixels."""
    images = images[:, 0]
    mass = images.sum(dim=(1, 2)).clamp_min(1e-8)
    rows, cols = torch.arange(48.0)[:, None], torch.arange(48.0)[None, :]
    return {
        "mean": images.mean(dim=(1, 2)),
        "centre_x": (images * cols).sum(dim=(1, 2)) / mass,
        "centre_y": (images * rows).sum(dim=(1, 2)) / mass,
        "zero_fraction": (images < 1e-3).float().mean(dim=(1, 2)),
    }


def ks_pvalues(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    sa, sb = summary(a), summary(b)
    return {key: ks_2samp(sa[key].numpy(), sb[key].numpy()).pvalue for key in sa}


def mean_image_z(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |difference of the pixelwise means| in standard errors (constant pixels: 0 if equal)."""
    error = (a.var(dim=0) / len(a) + b.var(dim=0) / len(b)).sqrt()
    diff = (a.mean(dim=0) - b.mean(dim=0)).abs()
    return torch.where(error > 0, diff / error.clamp_min(1e-12), diff * 1e6).max().item()


@pytest.mark.parametrize("name", STRATEGIES)
def test_matches_torchvision_in_distribution(name):
    batched, reference = batched_samples(name), reference_samples(name)
    pvalues = ks_pvalues(batched, reference)
    assert min(pvalues.values()) > MIN_P, pvalues
    # 2304 pixels: |z| > 5 has a ~1e-3 chance in all if the means agree.
    assert mean_image_z(batched, reference) < 5


# What a wrong strategy scores against the right reference (N = 2000, min p over the four
# statistics; measured): rotation 30 deg instead of 10: trans3 4e-103, trans4 6e-40, trans10 9e-28;
# 15 deg: trans3 2e-26, trans4 8e-5, trans10 1e-3; flip p=1.0: trans1 2e-223, trans4 2e-190;
# erasing p=0.25: trans3 2e-54; one pass instead of two for trans7: down to 4e-7 (4 seeds in 10);
# no torchvision edge darkening (see _apply_affine): 3e-11 for a rotation alone.
@pytest.mark.parametrize(
    "name, reference, setting",
    [
        ("trans3", "trans4", None),  # no translation
        ("none", "trans1", None),  # no flip
        ("trans3", "trans3", ("ROTATION_DEGREES", 30.0)),
        ("trans1", "trans1", ("FLIP_P", 1.0)),
    ],
)
def test_distribution_test_detects_a_wrong_strategy(name, reference, setting, monkeypatch):
    expected = reference_samples(reference)  # before the setting changes
    if setting:
        monkeypatch.setattr(augment, *setting)
    pvalues = ks_pvalues(batched_samples(name), expected)
    assert min(pvalues.values()) < 1e-10, pvalues


@pytest.mark.parametrize("name", STRATEGIES)
def test_keeps_shape_dtype_device_and_range_for_a_large_batch(name):
    images = torch.rand(4096, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    before = images.clone()
    out = create_augmentation(name)(images, torch.Generator().manual_seed(0))  # one call, no loop
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1 + 1e-6
    assert torch.equal(images, before)  # the input is left alone


@pytest.mark.parametrize("name", STRATEGIES)
def test_is_reproducible_from_the_generator_seed(name):
    images = torch.rand(64, 1, 48, 48, generator=torch.Generator().manual_seed(0))

    def run(seed: int) -> torch.Tensor:
        return create_augmentation(name)(images, torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert torch.equal(run(7), run(8)) == (name == "none")


@pytest.mark.parametrize("name", STRATEGIES)
def test_single_image_non_square_and_no_grad(name):
    images = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        out = create_augmentation(name)(images, torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 40, 56)


def test_trans1_flips_about_half_exactly():
    images = torch.rand(N, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    out = create_augmentation("trans1")(images, torch.Generator().manual_seed(0))
    flipped = torch.isclose(out, images.flip(-1), atol=1e-5).flatten(1).all(dim=1)
    kept = torch.isclose(out, images, atol=1e-5).flatten(1).all(dim=1)
    assert (flipped ^ kept).all()  # every image is exactly one of the two
    assert abs(flipped.sum().item() - N / 2) < 5 * math.sqrt(N / 4)  # Binomial(N, 0.5), 5 sigma


def test_fixed_geometry_equals_torchvision_pixel_for_pixel():
    """flip, rotate 7.3 deg, shift (3, -4), as trans4 composes them: one pass, same pixels."""
    image = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(0))
    bilinear = dict(interpolation=v2.InterpolationMode.BILINEAR, fill=0)
    expected = TF.rotate(TF.horizontal_flip(image), 7.3, **bilinear)
    expected = TF.affine(expected, angle=0, translate=[3, -4], scale=1, shear=[0, 0], **bilinear)
    a = math.radians(7.3)
    flip_rotate = torch.tensor([[-math.cos(a), math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    shift = torch.tensor([[1.0, 0, -3], [0, 1, 4], [0, 0, 1]])
    out = augment._apply_affine(image[None], torch.stack([flip_rotate, shift])[None])
    torch.testing.assert_close(out[0], expected, atol=1e-4, rtol=0)


def test_mixup_blends_with_a_permutation():
    images = torch.rand(32, 1, 48, 48)
    labels = torch.arange(32)
    mixed, labels_a, labels_b, lam = mixup(images, labels, 0.4, torch.Generator().manual_seed(0))
    assert lam.dim() == 0 and lam.device == images.device and 0 <= lam.item() <= 1  # on the device: no sync
    assert torch.equal(labels_a, labels) and sorted(labels_b.tolist()) == labels.tolist()
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[labels_b])
    again = mixup(images, labels, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(again[3], lam) and torch.equal(again[2], labels_b)


def test_mixup_lambda_is_beta_distributed():
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(2, 1, 4, 4), torch.arange(2)
    lams = [mixup(images, labels, 0.4, generator)[3].item() for _ in range(1000)]
    assert kstest(lams, beta(0.4, 0.4).cdf).pvalue > MIN_P


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_mixup_rejects_non_positive_alpha(alpha):
    with pytest.raises(FerTuneError, match="alpha"):
        mixup(torch.rand(4, 1, 48, 48), torch.arange(4), alpha, torch.Generator())


def test_registry_names_and_unknown_name():
    assert STRATEGIES == ["none", "trans1", "trans3", "trans4", "trans7", "trans10"]
    for lookup in (create_augmentation, torchvision_reference):
        with pytest.raises(FerTuneError, match="trans2.*trans1, trans3, trans4, trans7, trans10"):
            lookup("trans2")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", STRATEGIES)
def test_runs_on_cuda_with_a_cuda_generator(name):
    images = torch.rand(256, 1, 48, 48, device="cuda")

    def run() -> torch.Tensor:
        return create_augmentation(name)(images, torch.Generator("cuda").manual_seed(0))

    out = run()
    assert out.device == images.device and out.shape == images.shape and torch.equal(out, run())
    cpu = create_augmentation(name)(images.cpu(), torch.Generator().manual_seed(0))
    assert abs(out.mean().item() - cpu.mean().item()) < 0.05  # different streams, same distribution
    mixed, _, _, lam = mixup(images, torch.arange(256, device="cuda"), 0.4, torch.Generator("cuda"))
    assert mixed.device == images.device and 0 <= lam <= 1
