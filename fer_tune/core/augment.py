"""Data augmentation for a whole batch at once, on the device that trains.

The seed augments one PIL image at a time in DataLoader workers. FER2013 images are
48x48, so that per-image Python work, not the CNN, bounds the step time and leaves the
device waiting. Here, as in airbench, the training set sits on the device as uint8; each
batch is converted to float in [0, 1] and a strategy augments all B images with a handful
of tensor ops, every image drawing its own random parameters from one `torch.Generator`
(so a run is reproducible and resumable):

* the geometric ops of a strategy (flip, rotation, translation, scale) each become a 3x3
  sampling matrix per image; each interpolation torchvision makes (trans7 rotates, then
  zooms: two; trans3, trans4, trans10: one) is one `grid_sample` on a grid built by
  broadcasting (`_warp`), and the flips and whole-pixel shifts around it join it exactly
  (they only copy pixels); trans1 only flips and is an index flip;
* random erasing draws the boxes of the whole batch at once and zeroes them in one multiply.

    augment = create_augmentation("trans4")
    g = torch.Generator(device=images.device).manual_seed(0)
    augmented = augment(images, g)  # float [B, 1, 48, 48] in [0, 1] -> same shape, new tensor

Ten-crop (Khaireddin & Chen 2021, https://arxiv.org/abs/2105.03588): with `tta: tencrop` a model
trains on random CROP_SIZE crops of each augmented face (`random_crop`, after the strategy, so
the strategy still sees the whole face) and is scored on the average of its ten views
(`tta_views`: the four corner crops, the centre crop and their mirror images). The crop is no
strategy of its own because it changes the image size, which the model and the evaluation
must agree on: `tta` decides both.

Each strategy reproduces, in distribution, the per-image torchvision v2 pipeline that
`bench.reference.torchvision_reference(name)` returns (tests/test_augment.py checks this with two-sample
KS tests); with the same draws it gives the same pixels to float rounding. bench/pipeline.py
measures it against torchvision one image at a time in a DataLoader.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fer_tune.errors import FerTuneError
from fer_tune.registry import Registry

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
CROP_SIZE = 40  # Khaireddin & Chen 2021: 40x40 crops of the 48x48 faces, in training and for ten-crop
TTA_MODES = ("none", "flip", "tencrop")  # test-time views: the image; + its mirror; ten crops

# Sampling matrices (torchvision's `_get_inverse_affine_matrix`) map an output pixel to the
# input point it reads, in pixels from the image centre, x right, y down. Applying A1's
# transform, then A2's, reads the original image at A1 @ A2 @ p.


def _uniform(x: torch.Tensor, g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    shape = shape or (x.shape[0],)
    return torch.rand(shape, generator=g, device=x.device, dtype=x.dtype) * (hi - lo) + lo


def _eye(x: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, device=x.device, dtype=x.dtype).expand(x.shape[0], 3, 3).clone()


def _matrices(x: torch.Tensor, a, b, tx, c, d, ty) -> torch.Tensor:
    """[B, 3, 3] sampling matrices [[a, b, tx], [c, d, ty], [0, 0, 1]]; each entry a [B] tensor or a number."""
    zero, one = x.new_zeros(x.shape[0]), x.new_ones(x.shape[0])
    entries = [e if torch.is_tensor(e) else (zero if e == 0 else one * e) for e in (a, b, tx, c, d, ty)]
    return torch.stack([*entries, zero, zero, one], dim=1).view(-1, 3, 3)


def _flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip(FLIP_P): mirror x for a random subset of the batch."""
    return _matrices(x, torch.where(_uniform(x, g, 0, 1) < FLIP_P, -1.0, 1.0), 0, 0, 0, 1, 0)


def _rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomRotation(ROTATION_DEGREES) about the centre; positive is counter-clockwise."""
    angle = torch.deg2rad(_uniform(x, g, -ROTATION_DEGREES, ROTATION_DEGREES))
    cos, sin = angle.cos(), angle.sin()
    return _matrices(x, cos, -sin, 0, sin, cos, 0)


def _translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(translate=(TRANSLATE, TRANSLATE)): whole-pixel shifts, as torchvision rounds."""
    h, w = x.shape[-2:]
    tx = -torch.round(_uniform(x, g, -TRANSLATE * w, TRANSLATE * w))
    ty = -torch.round(_uniform(x, g, -TRANSLATE * h, TRANSLATE * h))
    return _matrices(x, 1, 0, tx, 0, 1, ty)


def _scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomAffine(scale=SCALE) about the centre."""
    zoom = 1 / _uniform(x, g, *SCALE)
    return _matrices(x, zoom, 0, 0, 0, zoom, 0)


def _compose(x: torch.Tensor, g: torch.Generator, *ops) -> torch.Tensor:
    """Draw each op's matrix, in order, and compose them into one [B, 3, 3] sampling matrix."""
    m = ops[0](x, g)
    for op in ops[1:]:
        m = m @ op(x, g)
    return m


def _centres(n: int, x: torch.Tensor) -> torch.Tensor:
    """Pixel centres of an axis of n pixels, in pixels from the image centre."""
    return torch.arange(n, device=x.device, dtype=x.dtype) + (0.5 - n / 2)


def _reads(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: the point (x, y) that output pixel p of image i reads, m[i] @ p, in pixels
    from the centre; the sum of a term along x and one along y (on CPU ~10x faster than
    affine_grid's batched matmul)."""
    h, w = x.shape[-2:]
    along_x = m[:, :2, 0, None] * _centres(w, x) + m[:, :2, 2, None]  # [B, 2, W]
    along_y = m[:, :2, 1, None] * _centres(h, x)  # [B, 2, H]
    return along_x[:, :, None, :] + along_y[:, :, :, None]


def _in_frame(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W]: 1.0 where the flip and whole-pixel shift m[i] reads a pixel in the frame."""
    h, w = x.shape[-2:]
    rows = (m[:, 1, 1, None] * _centres(h, x) + m[:, 1, 2, None]).abs() < h / 2
    cols = (m[:, 0, 0, None] * _centres(w, x) + m[:, 0, 2, None]).abs() < w / 2
    return (rows.to(x.dtype)[:, :, None] * cols.to(x.dtype)[:, None, :])[:, None]  # a product of two ranges


def _warp(
    x: torch.Tensor, m: torch.Tensor, before: torch.Tensor | None = None, after: torch.Tensor | None = None
) -> torch.Tensor:
    """Three of torchvision's transforms in one resampling, each bilinear with fill 0:
    `before` (a flip and a whole-pixel shift), `m` (any affine map; it may blend pixels) and
    `after` (a flip and a shift). Output pixel p of image i reads it at before @ m @ after @ p.

    torchvision fills by warping a ones image along with the image (zeros outside both) and
    multiplying the two, which squares the edge ramp of a transform that blends (without it a
    rotation's mean intensity is off by ~0.6%, which the KS test catches); the ones image's
    warp is `cover` below. Flips and shifts map pixel centres onto pixel centres, so a bilinear
    read commutes with them: `before` becomes zeroing what it moves out of the frame, `after`
    a shifted grid and zeroing what it moves in. Exact to float rounding.
    """
    h, w = x.shape[-2:]
    half = torch.tensor([w / 2, h / 2], device=x.device, dtype=x.dtype)[:, None, None]
    mid = m if after is None else m @ after
    if before is not None:
        shift = _eye(x)
        shift[:, :2, 2] = -before[:, :2, 2]  # source pixel s survives `before` if s - its shift is inside
        x = x * _in_frame(x, shift)
    # Every [B, 2, H, W] step is in place: on CPU a fresh buffer per batch costs page faults
    # that took more time than the arithmetic (glibc returns freed memory to the OS eagerly).
    grid = _reads(x, mid if before is None else before @ mid).div_(half)  # grid_sample's [-1, 1] units
    out = F.grid_sample(x, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False)
    # Per axis, a bilinear read of ones with zeros outside is 1 up to the outer pixel centres and
    # falls to 0 one pixel further out (3x cheaper than grid_sample on a ones image).
    points = grid.mul_(half) if before is None else _reads(x, mid)  # in pixels, where `mid` reads
    cover = points.abs_().neg_().add_(half + 0.5).clamp_(0, 1)
    out = out.mul_(cover[:, :1]).mul_(cover[:, 1:])
    if after is not None:
        out = out.mul_(_in_frame(x, after))  # what `after` moves into the frame is fill
    return out


def _interpolates(m: torch.Tensor) -> torch.Tensor:
    """Whether a sampling matrix moves pixel centres off pixel centres (rotation, scale), so
    torchvision blends pixels; a flip or whole-pixel shift only copies them."""
    linear, shift = m[..., :2, :2].abs(), m[..., :2, 2]
    copies = torch.isclose(linear, torch.eye(2, device=m.device, dtype=m.dtype), atol=1e-5).all(dim=(-2, -1))
    return ~(copies & torch.isclose(shift, shift.round(), atol=1e-5).all(dim=-1))


def _apply_affine(x: torch.Tensor, stages: torch.Tensor) -> torch.Tensor:
    """Apply image i's transforms stages[i] ([S, 3, 3], in torchvision's order), each with fill
    0 as torchvision does, in one `_warp` for the batch.

    At most one transform per image may interpolate (rotation, scale); the others are flips
    and whole-pixel shifts, which compose into `before` and `after` it. The general form of
    what trans10 does in closed form.
    """
    eye = _eye(x)
    interpolates = _interpolates(stages)  # [B, S]
    at = torch.where(interpolates.any(dim=1), interpolates.to(torch.uint8).argmax(dim=1), stages.shape[1])
    before, warp, after = eye, eye, eye
    for k in range(stages.shape[1]):
        m = stages[:, k]
        before = torch.where((k < at)[:, None, None], before @ m, before)
        warp = torch.where((k == at)[:, None, None], m, warp)
        after = torch.where((k > at)[:, None, None], after @ m, after)
    return _warp(x, warp, before, after)


def _random_erase_(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomErasing(ERASE_P, ERASE_SCALE, ERASE_RATIO, value=0) for every image at once, in
    place (the strategies erase the fresh output of `_warp`).

    torchvision draws (area, aspect) pairs until the box fits, at most ERASE_TRIES times,
    and leaves the image as is if none fits; we draw all tries and keep the first that fits.
    """
    b, _, h, w = x.shape
    area = h * w * _uniform(x, g, *ERASE_SCALE, b, ERASE_TRIES)
    aspect = torch.exp(_uniform(x, g, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), b, ERASE_TRIES))
    box_h, box_w = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (box_h < h) & (box_w < w)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    box_h, box_w = box_h.gather(1, first), box_w.gather(1, first)  # [B, 1]
    top, left, coin = torch.rand(3, b, 1, generator=g, device=x.device, dtype=x.dtype)
    top, left = torch.floor(top * (h - box_h + 1)), torch.floor(left * (w - box_w + 1))  # randint(0, h - box_h + 1)
    erase = fits.any(dim=1, keepdim=True) & (coin < ERASE_P)
    rows, cols = _centres(h, x) + (h / 2 - 0.5), _centres(w, x) + (w / 2 - 0.5)  # pixel indices
    in_rows = ((rows >= top) & (rows < top + box_h) & erase).to(x.dtype)  # [B, H]: a box is two ranges
    in_cols = ((cols >= left) & (cols < left + box_w)).to(x.dtype)  # [B, W]
    keep = (in_rows[:, :, None] * in_cols[:, None, :]).neg_().add_(1)  # [B, H, W]
    return x.mul_(keep[:, None])


@AUGMENTATIONS.register("none")
def none(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """No augmentation."""
    return x


@AUGMENTATIONS.register("trans1")
def trans1(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip."""
    flip = _uniform(x, g, 0, 1) < FLIP_P
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# A flip keeps the frame and copies pixels, so below it shares a warp with the rotation after it.
@AUGMENTATIONS.register("trans3")
def trans3(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomErasing."""
    return _random_erase_(_warp(x, _compose(x, g, _flip, _rotate)), g)


@AUGMENTATIONS.register("trans4")
def trans4(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomAffine(translate=0.1), RandomErasing."""
    # The shift copies pixels: it joins the rotation's resampling as a shifted grid.
    return _random_erase_(_warp(x, _compose(x, g, _flip, _rotate), after=_translate(x, g)), g)


@AUGMENTATIONS.register("trans7")
def trans7(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomHorizontalFlip, RandomRotation(10), RandomAffine(translate=0.1, scale=(0.8, 0.9)),
    RandomErasing."""
    # Two warps, because torchvision interpolates the rotation and the zoom separately:
    # one is sharper, with a thinner dark edge, and fails the KS test on the fraction of
    # zero pixels (p down to 4e-7 at 2000 images, 4 seeds in 10).
    rotated = _warp(x, _compose(x, g, _flip, _rotate))
    return _random_erase_(_warp(rotated, _compose(x, g, _scale, _translate)), g)  # scale, then shift


@AUGMENTATIONS.register("trans10")
def trans10(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RandomOrder([RandomHorizontalFlip, RandomAffine(translate=0.1),
    RandomChoice([RandomRotation(10), RandomAffine(scale=(0.8, 0.9))])]), order and choice per image."""
    blend = torch.where(_uniform(x, g, 0, 1)[:, None, None] < 0.5, _rotate(x, g), _scale(x, g))
    flip, shift = _flip(x, g), _translate(x, g)
    rank = _uniform(x, g, 0, 1, x.shape[0], 3).argsort(dim=1).argsort(dim=1)  # each op's place in a random order
    # What comes before the blending op joins its resampling as `before`, the rest as `after`
    # (`_apply_affine` in closed form: twice as fast as its general loop at batch 64).
    flip_first, shift_first = (rank[:, :2] < rank[:, 2:])[:, :, None, None].unbind(dim=1)
    flip_then_shift = (rank[:, 0] < rank[:, 1])[:, None, None]
    eye = _eye(x)
    flip_before, flip_after = torch.where(flip_first, flip, eye), torch.where(flip_first, eye, flip)
    shift_before, shift_after = torch.where(shift_first, shift, eye), torch.where(shift_first, eye, shift)
    before = torch.where(flip_then_shift, flip_before @ shift_before, shift_before @ flip_before)
    after = torch.where(flip_then_shift, flip_after @ shift_after, shift_after @ flip_after)
    return _warp(x, blend, before, after)


def check_tta(tta: str) -> str:
    """`tta` if it is one of TTA_MODES, else a one-line FerTuneError."""
    if tta not in TTA_MODES:
        raise FerTuneError(f"unknown tta {tta!r}; expected one of: {', '.join(TTA_MODES)}")
    return tta


def create_augmentation(name: str) -> Augmentation:
    """The batched strategy `name`: (float images [B, 1, H, W] in [0, 1], generator) -> images."""
    return AUGMENTATIONS.get(name)


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def random_crop(x: torch.Tensor, g: torch.Generator, size: int = CROP_SIZE) -> torch.Tensor:
    """RandomCrop(size) for every image at once: [B, C, H, W] -> [B, C, size, size], each image's
    top-left corner uniform over the (H - size + 1) x (W - size + 1) positions, as torchvision draws it."""
    b, c, h, w = x.shape
    top = torch.randint(0, h - size + 1, (b, 1), generator=g, device=x.device)
    left = torch.randint(0, w - size + 1, (b, 1), generator=g, device=x.device)
    span = torch.arange(size, device=x.device)
    rows, cols = (top + span)[:, None, :, None], (left + span)[:, None, None, :]  # [B, 1, size, 1], [B, 1, 1, size]
    batch, channel = torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)
    return x[batch, channel[None, :, None, None], rows, cols]


def tta_views(images: torch.Tensor, tta: str, size: int = CROP_SIZE) -> list[torch.Tensor]:
    """The test-time views of a batch [B, C, H, W] whose predictions are averaged: `none` the
    batch itself, `flip` and its mirror image, `tencrop` torchvision's TenCrop(size): the four
    corner crops and the centre crop of the batch and of its mirror image. Scriptable: the
    exported Predictor calls it."""
    if tta == "none":
        return [images]
    if tta == "flip":
        return [images, images.flip(-1)]
    if tta != "tencrop":
        raise ValueError("tta: expected none, flip or tencrop")
    h, w = images.shape[-2], images.shape[-1]
    top, left = (h - size) // 2, (w - size) // 2  # torchvision rounds (h - size) / 2; equal for even margins
    views: list[torch.Tensor] = []
    for view in [images, images.flip(-1)]:
        views.append(view[..., :size, :size])
        views.append(view[..., :size, w - size :])
        views.append(view[..., h - size :, :size])
        views.append(view[..., h - size :, w - size :])
        views.append(view[..., top : top + size, left : left + size])
    return views


def mixup(
    images: torch.Tensor, labels: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend every image with a random partner from the batch (Zhang et al. 2017,
    https://arxiv.org/abs/1710.09412); lam ~ Beta(alpha, alpha), one draw per batch.

    Returns (mixed, labels_a, labels_b, lam); train on
    lam * loss(out, labels_a) + (1 - lam) * loss(out, labels_b). lam is a 0-d tensor on the images'
    device: a Python float would cost a host sync every batch (tests/test_host_syncs.py).
    """
    if not alpha > 0:
        raise FerTuneError(f"mixup alpha must be > 0, got {alpha!r}")
    # Beta(a, a) is the first coordinate of Dirichlet(a, a); torch.distributions takes no generator.
    concentration = torch.full((2,), float(alpha), device=images.device)
    lam = torch._sample_dirichlet(concentration, generator)[0]
    perm = torch.randperm(images.shape[0], generator=generator, device=images.device)
    return lam * images + (1 - lam) * images[perm], labels, labels[perm], lam
