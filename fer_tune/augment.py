"""Data augmentation for a whole batch at once, on the device that trains.

The seed augments one PIL image at a time in DataLoader workers. FER2013 images are
48x48, so that per-image Python work, not the CNN, bounds the step time and leaves the
device waiting. Here, as in airbench, the training set sits on the device as uint8; each
batch is converted to float in [0, 1] and a strategy augments all B images with a handful
of tensor ops, every image drawing its own random parameters from one `torch.Generator`
(so a run is reproducible and resumable):

* the geometric ops of a strategy (flip, rotation, translation, scale) each become a 3x3
  sampling matrix per image; the matrices are multiplied and applied with one
  `affine_grid` + `grid_sample` (bilinear, fill 0) for each interpolation torchvision
  makes (trans7 rotates and zooms: two; every other strategy: one);
* random erasing draws the boxes of the whole batch at once and zeroes them in one fill.

    augment = create_augmentation("trans4")
    g = torch.Generator(device=images.device).manual_seed(0)
    augmented = augment(images, g)  # float [B, 1, 48, 48] in [0, 1] -> same shape, new tensor

Each strategy reproduces, in distribution, the per-image torchvision v2 pipeline that
`torchvision_reference(name)` returns; tests/test_augment.py checks this with two-sample
KS tests; `_apply_affine` says where it is exact and where it approximates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from fer_tune.errors import FerTuneError
from fer_tune.registry import Registry

if TYPE_CHECKING:
    from torchvision.transforms import v2

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")

# The seed's settings (torchvision defaults where the seed gives none).
FLIP_P = 0.5  # RandomHorizontalFlip()
ROTATION_DEGREES = 10.0  # RandomRotation(degrees=10): angle ~ U(-10, 10)
TRANSLATE = 0.1  # RandomAffine(translate=(0.1, 0.1)): shift up to 10% of width / height
SCALE = (0.8, 0.9)  # RandomAffine(scale=(0.8, 0.9)): zoom out
ERASE_P = 0.5  # RandomErasing(): probability of erasing a box
ERASE_SCALE = (0.02, 0.33)  # box area as a fraction of the image
ERASE_RATIO = (0.3, 3.3)  # box aspect ratio h / w, drawn log-uniformly
ERASE_TRIES = 10  # torchvision's attempts at a box that fits

# Sampling matrices (torchvision's `_get_inverse_affine_matrix`) map an output pixel to the
# input point it reads, in pixels from the image centre, x right, y down. Applying A1's
# transform, then A2's, reads the original image at A1 @ A2 @ p.


def _uniform(x: torch.Tensor, g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    shape = shape or (x.shape[0],)
    return torch.rand(shape, generator=g, device=x.device, dtype=x.dtype) * (hi - lo) + lo


def _eye(x: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, device=x.device, dtype=x.dtype).repeat(x.shape[0], 1, 1)


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip(FLIP_P): mirror x for a random subset of the batch."""
    m = _eye(x)
    m[:, 0, 0] = torch.where(_uniform(x, g, 0, 1) < FLIP_P, -1.0, 1.0)
    return m


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomRotation(ROTATION_DEGREES) about the centre; positive is counter-clockwise."""
    angle = torch.deg2rad(_uniform(x, g, -ROTATION_DEGREES, ROTATION_DEGREES))
    cos, sin = angle.cos(), angle.sin()
    m = _eye(x)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


def _translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(translate=(TRANSLATE, TRANSLATE)): whole-pixel shifts, as torchvision rounds."""
    h, w = x.shape[-2:]
    m = _eye(x)
    m[:, 0, 2] = -torch.round(_uniform(x, g, -TRANSLATE * w, TRANSLATE * w))
    m[:, 1, 2] = -torch.round(_uniform(x, g, -TRANSLATE * h, TRANSLATE * h))
    return m


def _scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(scale=SCALE) about the centre."""
    m = _eye(x)
    m[:, 0, 0] = m[:, 1, 1] = 1 / _uniform(x, g, *SCALE)
    return m


def _stages(x: torch.Tensor, g: torch.Generator, *stages: list) -> torch.Tensor:
    """Sample each stage's matrix (its ops composed in order) -> [B, stages, 3, 3]."""
    matrices = []
    for ops in stages:
        m = _eye(x)
        for op in ops:
            m = m @ op(x, g)
        matrices.append(m)
    return torch.stack(matrices, dim=1)


def _coverage(points: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per axis, the share of a bilinear read at grid_sample `points` that lands on the
    image: 1 within the outer pixel centres, falling to 0 one pixel further out."""
    half = points.new_tensor([w / 2, h / 2])
    return (half + 0.5 - points.abs() * half).clamp_(0, 1)  # |points| * half: pixels from the centre


def _interpolates(m: torch.Tensor) -> torch.Tensor:
    """Whether a stage moves pixel centres off pixel centres (rotation, scale), so
    torchvision blends pixels; a flip or whole-pixel shift only copies them."""
    linear, shift = m[:, :2, :2].abs(), m[:, :2, 2]
    copies = torch.isclose(linear, torch.eye(2, device=m.device, dtype=m.dtype), atol=1e-5).all(dim=(1, 2))
    return ~(copies & torch.isclose(shift, shift.round(), atol=1e-5).all(dim=1))


def _apply_affine(x: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
    """Warp image i by its stages[i] ([S, 3, 3], in torchvision's order) with one grid_sample.

    torchvision resamples after every transform with fill 0. To match it at the frame edges:
    * what one transform moves out of the frame stays lost even if a later one moves it back:
      each output pixel is weighted by its coverage, per axis the least over every image read;
    * torchvision's fill computes `img * mask` with `img` already zero-padded, squaring each
      interpolating transform's edge ramp; we do the same (without it a rotation's mean
      intensity is off by ~0.6%, which the KS test catches).
    At most one transform per pass may interpolate (rotation, scale); flips and whole-pixel
    shifts only copy pixels. Exact to float rounding when the copies come after it; a shift
    before it lets pixels within one pixel of the shifted edge blend in what it cut off.
    """
    b, _, h, w = x.shape
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0], device=x.device, dtype=x.dtype))
    to_normalized = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], device=x.device, dtype=x.dtype))
    inside, weight = None, 1.0
    reads = stages[:, -1]  # output pixel -> where stage k reads the image before it
    for k in reversed(range(stages.shape[1])):
        theta = (to_normalized @ reads @ to_pixels)[:, :2]  # in grid_sample's [-1, 1] units
        points = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        cover = _coverage(points, h, w)
        inside = cover if inside is None else torch.minimum(inside, cover)
        weight = weight * torch.where(_interpolates(stages[:, k])[:, None, None], cover.prod(dim=-1), 1.0)
        if k:
            reads = stages[:, k - 1] @ reads
    # border padding: the coverage weights above already take the zeros outside into account
    out = F.grid_sample(x, points, mode="bilinear", padding_mode="border", align_corners=False)
    return out * (inside.prod(dim=-1) * weight)[:, None]


def _random_erase(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomErasing(ERASE_P, ERASE_SCALE, ERASE_RATIO, value=0) for every image at once.

    torchvision draws (area, aspect) pairs until the box fits, at most ERASE_TRIES times,
    and leaves the image as is if none fits; we draw all tries and keep the first that fits.
    """
    b, _, h, w = x.shape
    area = h * w * _uniform(x, g, *ERASE_SCALE, b, ERASE_TRIES)
    aspect = torch.exp(_uniform(x, g, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), b, ERASE_TRIES))
    box_h, box_w = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (box_h < h) & (box_w < w)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    box_h, box_w = box_h.gather(1, first)[:, :, None], box_w.gather(1, first)[:, :, None]
    top = torch.floor(_uniform(x, g, 0, 1, b, 1, 1) * (h - box_h + 1))  # randint(0, h - box_h + 1)
    left = torch.floor(_uniform(x, g, 0, 1, b, 1, 1) * (w - box_w + 1))
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
    box = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    erase = fits.any(dim=1) & (_uniform(x, g, 0, 1) < ERASE_P)
    return x.masked_fill((box & erase[:, None, None])[:, None], 0.0)


@AUGMENTATIONS.register("none")
def none(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """No augmentation."""
    return x


@AUGMENTATIONS.register("trans1")
def trans1(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip."""
    return _apply_affine(x, _stages(x, g, [_flip]))


# A flip keeps the frame and copies pixels, so below it shares a stage with the rotation after it.
@AUGMENTATIONS.register("trans3")
def trans3(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomErasing."""
    return _random_erase(_apply_affine(x, _stages(x, g, [_flip, _rotate])), g)


@AUGMENTATIONS.register("trans4")
def trans4(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomAffine(translate=0.1), RandomErasing."""
    return _random_erase(_apply_affine(x, _stages(x, g, [_flip, _rotate], [_translate])), g)


@AUGMENTATIONS.register("trans7")
def trans7(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomAffine(translate=0.1, scale=(0.8, 0.9)),
    RandomErasing."""
    # Two passes, because torchvision interpolates the rotation and the zoom separately:
    # one pass is sharper, with a thinner dark edge, and fails the KS test on the fraction of
    # zero pixels (p down to 4e-7 at 2000 images, 4 seeds in 10).
    rotated = _apply_affine(x, _stages(x, g, [_flip, _rotate]))
    return _random_erase(_apply_affine(rotated, _stages(x, g, [_scale, _translate])), g)  # scale, then shift


@AUGMENTATIONS.register("trans10")
def trans10(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomOrder([RandomHorizontalFlip, RandomAffine(translate=0.1),
    RandomChoice([RandomRotation(10), RandomAffine(scale=(0.8, 0.9))])]), order and choice per image."""
    b = x.shape[0]
    rotate_or_scale = torch.where(_uniform(x, g, 0, 1)[:, None, None] < 0.5, _rotate(x, g), _scale(x, g))
    stages = torch.stack([_flip(x, g), _translate(x, g), rotate_or_scale], dim=1)
    order = _uniform(x, g, 0, 1, b, 3).argsort(dim=1)  # a random permutation per image
    stages = stages[torch.arange(b, device=x.device)[:, None], order]
    return _apply_affine(x, stages)


def create_augmentation(name: str) -> Augmentation:
    """The batched strategy `name`: (float images [B, 1, H, W] in [0, 1], generator) -> images."""
    return AUGMENTATIONS.get(name)


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def torchvision_reference(name: str) -> v2.Transform:
    """The per-image torchvision v2 pipeline (on a float [1, H, W] tensor) that strategy
    `name` reproduces: the seed's transforms, with bilinear interpolation and fill 0."""
    from torchvision.transforms import v2  # only tests and benchmarks need torchvision here

    AUGMENTATIONS.get(name)  # unknown names fail with the list of valid ones
    bilinear = dict(interpolation=v2.InterpolationMode.BILINEAR, fill=0)
    flip = v2.RandomHorizontalFlip(FLIP_P)
    rotate = v2.RandomRotation(ROTATION_DEGREES, **bilinear)
    translate = v2.RandomAffine(0, translate=(TRANSLATE, TRANSLATE), **bilinear)
    scale = v2.RandomAffine(0, scale=SCALE, **bilinear)
    translate_scale = v2.RandomAffine(0, translate=(TRANSLATE, TRANSLATE), scale=SCALE, **bilinear)
    erase = v2.RandomErasing(ERASE_P, ERASE_SCALE, ERASE_RATIO, value=0)
    pipelines = {
        "none": [v2.Identity()],
        "trans1": [flip],
        "trans3": [flip, rotate, erase],
        "trans4": [flip, rotate, translate, erase],
        "trans7": [flip, rotate, translate_scale, erase],
        "trans10": [v2.RandomOrder([flip, translate, v2.RandomChoice([rotate, scale])])],
    }
    return v2.Compose(pipelines[name])


def mixup(
    images: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend every image with a random partner from the batch (Zhang et al. 2017,
    https://arxiv.org/abs/1710.09412); lam ~ Beta(alpha, alpha), one draw per batch.

    Returns (mixed, labels_a, labels_b, lam); train on
    lam * loss(out, labels_a) + (1 - lam) * loss(out, labels_b).
    """
    if not alpha > 0:
        raise FerTuneError(f"mixup alpha must be > 0, got {alpha!r}")
    # Beta(a, a) is the first coordinate of Dirichlet(a, a); torch.distributions takes no generator.
    concentration = torch.full((2,), float(alpha), device=images.device)
    lam = torch._sample_dirichlet(concentration, generator)[0].item()
    perm = torch.randperm(images.shape[0], generator=generator, device=images.device)
    return lam * images + (1 - lam) * images[perm], labels, labels[perm], lam
