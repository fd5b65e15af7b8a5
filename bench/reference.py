"""The per-image torchvision pipelines that fer_tune.core.augment's batched strategies reproduce.

Only tests (distribution checks) and benchmarks (the seed-style baseline) need them, so they
live here rather than in the core, which imports no torchvision transforms.
"""

from __future__ import annotations

from torchvision.transforms import v2

from fer_tune.core.augment import (
    AUGMENTATIONS,
    ERASE_P,
    ERASE_RATIO,
    ERASE_SCALE,
    FLIP_P,
    ROTATION_DEGREES,
    SCALE,
    TRANSLATE,
)


def torchvision_reference(name: str) -> v2.Transform:
    """The per-image torchvision v2 pipeline (on a float [1, H, W] tensor) that strategy
    `name` reproduces: the seed's transforms, with bilinear interpolation and fill 0."""
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
