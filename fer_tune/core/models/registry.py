"""The model registry: builders, what each model can take (`Capabilities`), `create_model`.

    @register_model(imagenet=("resnet50", "ResNet50_Weights"), max_freeze_depth=5, input_sizes=TRANSFER_SIZES)
    def resnet50(**kw) -> nn.Module: ...

`knob_problem(name, knobs)` is the one rule saying which knobs a model takes and in which
range; `create_model` and TrainConfig's validator (fer_tune.core.config) both call it, so a
bad combination fails at config load with the same words as at build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.core.models.layers import separate_convs
from fer_tune.errors import FerTuneError
from fer_tune.registry import Registry

NUM_CLASSES = len(EMOTIONS)  # FER2013's seven emotions
KERNEL_SIZES = (2, 3)  # Tandon 2020, table 4: 2x2 vs 3x3 filters
PADDINGS = (0, 1)  # ... with zero padding 0 vs 1
DEFAULT_KERNEL_SIZE, DEFAULT_PADDING = 3, 1  # 3x3 with padding 1 was Tandon's best (68.6% val, table 4)
ALL_BLOCKS = -1  # freeze_depth: every block of the backbone trains (the default)
TRANSFER_SIZES = (48, 96, 224)  # input_size of the ImageNet backbones: native, 2x, ImageNet's own

MODELS = Registry("model")


@dataclass(frozen=True)
class Capabilities:
    """Which knobs a model takes beyond num_classes and dropout, recorded when it is registered."""

    imagenet: tuple[str, str] | None = None  # (torchvision builder, weights enum) of its ImageNet weights
    max_freeze_depth: int = 0  # blocks of its backbone; 0: no backbone, every layer is new and trains
    input_sizes: tuple[int, ...] = (IMAGE_SIZE,)  # sizes its backbone may run at (the batch is resized to it)
    default_input_size: int = IMAGE_SIZE
    dense_units: bool = False  # takes an extra dense layer before the classifier
    width: bool = True  # `width` scales its channels
    kernels: bool = True  # kernel_size and padding shape its convs

    @property
    def pretrained(self) -> bool:
        return self.imagenet is not None

    @property
    def resizes(self) -> bool:
        return len(self.input_sizes) > 1

    @property
    def separable(self) -> bool:
        """Its convs may become depthwise-separable: its own convs (kernels), none an ImageNet checkpoint
        must load into (a transfer backbone's convs have torchvision's shapes, pretrained or not)."""
        return self.kernels and not self.pretrained


_CAPABILITIES: dict[str, Capabilities] = {}


def register_model(fn: Callable | None = None, /, **capabilities: Any):
    """Register a builder under its function name, with its `Capabilities`:
    `@register_model` (a CNN trained from scratch) or `@register_model(imagenet=..., ...)`."""

    def decorator(builder: Callable) -> Callable:
        record = Capabilities(**capabilities)
        MODELS.register()(builder)  # raises on a duplicate name before anything is recorded
        _CAPABILITIES[builder.__name__] = record
        return builder

    return decorator(fn) if fn is not None else decorator


def list_models() -> list[str]:
    """Names accepted by `create_model`, in registration order."""
    return MODELS.names()


def capabilities(name: str) -> Capabilities:
    """The knobs model `name` takes; unknown names raise FerTuneError listing the valid ones."""
    MODELS.get(name)
    return _CAPABILITIES[name]


def resolved_input_size(name: str, input_size: int | None) -> int:
    """The size model `name`'s backbone runs at: `input_size`, or the model's default when None."""
    return capabilities(name).default_input_size if input_size is None else input_size


def models_taking(capability: str) -> str:
    """The models whose `Capabilities.<capability>` is true, comma-separated (for error messages)."""
    return ", ".join(name for name in list_models() if getattr(_CAPABILITIES[name], capability))


def knob_problem(name: str, knobs: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first of `knobs` (TrainConfig field -> value) that model `name` cannot take, as
    (key, why not, what is allowed and the value got), or None. Absent keys are not checked."""
    caps = capabilities(name)
    why = _why_not(name, caps, knobs)
    if why is None:
        return None
    key, text = why
    return key, f"{text} (got {knobs[key]!r})"


def _why_not(name: str, caps: Capabilities, knobs: Mapping[str, Any]) -> tuple[str, str] | None:
    get = knobs.get
    if get("pretrained") and not caps.pretrained:
        return (
            "pretrained",
            f"model {name!r} has no pretrained weights; pretrained applies to {models_taking('pretrained')}",
        )
    depth = get("freeze_depth", ALL_BLOCKS)
    if depth != ALL_BLOCKS and not 0 <= depth <= caps.max_freeze_depth:
        if caps.max_freeze_depth == 0:
            return "freeze_depth", (
                f"model {name!r} has no pretrained weights, so no backbone blocks to freeze: expected 0 or "
                f"{ALL_BLOCKS} (every layer trains); freeze_depth applies to {models_taking('pretrained')}"
            )
        return "freeze_depth", (
            f"the number of {name}'s {caps.max_freeze_depth} backbone blocks that train, from the last: "
            f"expected 0 (head only) to {caps.max_freeze_depth}, or {ALL_BLOCKS} (all)"
        )
    size = get("input_size")
    if size is not None and size not in caps.input_sizes:
        allowed = " or ".join(map(str, caps.input_sizes))
        return "input_size", f"model {name!r} runs at {allowed} px; other sizes apply to {models_taking('resizes')}"
    if get("dense_units") and not caps.dense_units:
        return "dense_units", (
            f"model {name!r} has no extra dense layer: expected 0; "
            f"dense_units applies to {models_taking('dense_units')}"
        )
    if get("separable") and not caps.separable:
        return (
            "separable",
            f"{name} keeps torchvision's convs: expected false; separable applies to {models_taking('separable')}",
        )
    if get("width", 1.0) != 1.0 and not caps.width:
        return "width", f"{name}'s layer widths are torchvision's: expected 1.0"
    for key, default in (("kernel_size", DEFAULT_KERNEL_SIZE), ("padding", DEFAULT_PADDING)):
        if get(key, default) != default and not caps.kernels:
            return (
                key,
                f"{name} keeps torchvision's kernels: expected {default}; {key} applies to {models_taking('kernels')}",
            )
    if get("backbone_lr_scale", 1.0) != 1.0 and not caps.pretrained:
        return "backbone_lr_scale", (
            f"model {name!r} has no pretrained backbone: expected 1.0; "
            f"backbone_lr_scale applies to {models_taking('pretrained')}"
        )
    return None


def create_model(name: str, **knobs: Any) -> nn.Module:
    """Build the registered model `name` with `knobs` (any of `Knobs`' fields; the rest take its defaults),
    forwarded to its builder as keyword arguments, as timm does. Unknown names, unknown knobs and knobs the
    model cannot take raise FerTuneError.

    `image_size` is the side of the images the model will receive (48, or 40 when it trains on
    ten-crop's crops); `input_size` the side its backbone runs at (None or absent: the model's default).
    """
    unknown = sorted(set(knobs) - set(KNOB_NAMES))
    if unknown:
        raise FerTuneError(f"model argument {unknown[0]}: unknown; expected one of: {', '.join(KNOB_NAMES)}")
    knobs = {**KNOB_DEFAULTS, **knobs, "input_size": resolved_input_size(name, knobs.get("input_size"))}
    problem = knob_problem(name, knobs)  # first: its words name what this model allows
    if problem:
        key, why = problem
        raise FerTuneError(f"model argument {key}: {why}")
    knobs = asdict(Knobs(**knobs))
    model = MODELS.get(name)(**knobs)
    return separate_convs(model) if knobs["separable"] else model


@dataclass(frozen=True)
class Knobs:
    """The one typed list of model knobs: the validated keyword arguments every builder receives.

    A new knob is a field here (and its check below), a TrainConfig field of the same name, and the
    builders that read it: `create_model` and `build_model` forward every field by name.
    """

    num_classes: int = NUM_CLASSES
    kernel_size: int = DEFAULT_KERNEL_SIZE
    padding: int = DEFAULT_PADDING
    dropout: float = 0.0  # off unless the search turns it on; sources used 0.2-0.5
    width: float = 1.0
    pretrained: bool = False
    freeze_depth: int = ALL_BLOCKS
    input_size: int = IMAGE_SIZE
    dense_units: int = 0
    image_size: int = IMAGE_SIZE
    separable: bool = False  # seed CNNs: depthwise-separable convs, made by create_model (layers.separate_convs)

    def __post_init__(self):
        def integer(value, low):
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        checks = [
            ("num_classes", integer(self.num_classes, 1), "an integer >= 1"),
            (
                "kernel_size",
                self.kernel_size in KERNEL_SIZES and integer(self.kernel_size, 1),
                f"one of {KERNEL_SIZES}",
            ),
            ("padding", self.padding in PADDINGS and integer(self.padding, 0), f"one of {PADDINGS}"),
            ("dropout", isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "a number in [0, 1)"),
            ("width", isinstance(self.width, (int, float)) and self.width > 0, "a number > 0"),
            ("freeze_depth", integer(self.freeze_depth, ALL_BLOCKS), f"an integer >= 0, or {ALL_BLOCKS} (all)"),
            ("input_size", integer(self.input_size, 1), "an integer >= 1"),
            ("dense_units", integer(self.dense_units, 0), "an integer >= 0"),
            ("image_size", integer(self.image_size, 1), "an integer >= 1"),
        ]
        for arg, ok, allowed in checks:
            if not ok:
                raise FerTuneError(f"model argument {arg}={getattr(self, arg)!r} is invalid; expected {allowed}")

    def ch(self, n: int) -> int:
        """A channel count or hidden width scaled by `width`."""
        return max(1, round(n * self.width))


KNOB_DEFAULTS = asdict(Knobs())
KNOB_NAMES = tuple(KNOB_DEFAULTS)
