"""`TrainConfig`: every hyperparameter of one training run, validated.

One config object flows from the search-space YAML (fer_tune.search.sweep_file) through the
sampler and Ray Tune into the trial, and is logged whole with every trial, so any trial
can be re-run from its record alone. Errors are one line naming the key, the bad value
and the valid ones.

    config = make_train_config({"model": "vgg", "lr": 3e-4})
    config.resolved_padding
"""

from __future__ import annotations

import reprlib
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fer_tune.constants import IMAGE_SIZE
from fer_tune.core import augment, models, optim
from fer_tune.errors import FerTuneError

# Grid sweeps hand each enumerated point to the trial nested under this key (Ray's grid_search
# enumerates one value: the whole point); samplers hand the point over flat.
GRID_KEY = "point"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # what torch.device accepts that fer-tune trains on
MAX_SEED = 2**32 - 1  # a seed beyond it overflows numpy's generator (torch's takes 64 bits)
MAX_WIDTH = 16.0  # channel multiplier: model3 at 16 has 360M parameters (1.4M at 1); 1e7 asked for 5.7 GB at once

REGISTRIES = {
    "model": models.MODELS,
    "augmentation": augment.AUGMENTATIONS,
    "optimizer": optim.OPTIMIZERS,
    "scheduler": optim.SCHEDULERS,
}


class Strict(BaseModel):
    # protected_namespaces=(): our field `model` would otherwise clash with pydantic's `model_` prefix.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class TrainConfig(Strict):
    """Every hyperparameter of one training run. The defaults train a good model3."""

    # architecture
    model: str = "model3"
    kernel_size: Literal[2, 3] = 3  # Tandon 2020: 3x3 beat 2x2 by ~3 points
    padding: Literal[0, 1, "auto"] = 1  # auto = (kernel_size - 1) // 2: Tandon 2020's 2x2/pad 0 and 3x3/pad 1 pairs
    dropout: float = Field(0.25, ge=0, lt=1)
    width: float = Field(1.0, gt=0, le=MAX_WIDTH, allow_inf_nan=False)  # channel multiplier
    separable: bool = False  # seed CNNs: depthwise-separable convs (fewer MACs; an efficiency axis to search)
    # transfer learning: which models take these, and in which range, is each model's `Capabilities`
    pretrained: bool = False  # ImageNet weights from the local torch hub cache (never downloaded)
    freeze_depth: int = models.ALL_BLOCKS  # the backbone's last blocks that train: 0 = head only, -1 = all
    input_size: int | None = None  # side the backbone runs at, resized inside the model; None = the model's default
    dense_units: int = Field(0, ge=0)  # an extra dense layer (ReLU, dropout) before the classifier; 0 = none
    backbone_lr_scale: float = Field(1.0, gt=0, le=1)  # the backbone trains at lr x this (the head at lr)
    # data and augmentation
    augmentation: str = "trans4"  # Tandon 2020's best strategy at 60 epochs
    mixup_alpha: float = Field(0.0, ge=0)  # 0 disables mixup
    batch_size: int = Field(64, ge=1)
    # loss
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: bool = False  # inverse-frequency weights; FER2013's disgust is 1/16 of happy
    # optimization
    optimizer: str = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD (always Nesterov) only
    scheduler: str = "plateau"  # the LR schedule (a sweep's early stopping is its `pruner:`)
    plateau_factor: float = Field(0.1, gt=0, lt=1)  # Tandon 2020: x0.1 when val loss stalls
    plateau_patience: int = Field(10, ge=0)  # epochs
    step_size: int = Field(20, ge=1)  # StepLR: epochs between decays (Tandon 2020: 20)
    gamma: float = Field(0.1, gt=0, le=1)  # StepLR decay
    T_0: int = Field(2, ge=1)  # cos_warm: epochs to the first restart (Tandon 2020's best: 2)
    T_mult: int = Field(10, ge=1)  # cos_warm: cycle growth factor (Tandon 2020's best: 10)
    epochs: int = Field(10, ge=1)
    # reproducibility and hardware
    seed: int = Field(0, ge=0, le=MAX_SEED)  # numpy's and torch's generators both take 0 to 2**32 - 1
    device: str = Field("auto", pattern=DEVICE_PATTERN)  # auto = cuda if available, else cpu; cuda:N picks a GPU
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (CUDA; compile time pays off on long runs)
    # evaluation: every epoch's validation, the champion's test and the deployed Predictor
    tta: Literal[augment.TTA_MODES] = "flip"  # test-time views averaged; tencrop also trains on random crops
    eval_batch_size: int = Field(1024, ge=1)

    @property
    def resolved_padding(self) -> int:
        return (self.kernel_size - 1) // 2 if self.padding == "auto" else self.padding

    @property
    def image_size(self) -> int:
        """Side of the images the model gets: 48, or ten-crop's 40 (it then trains on random 40 px crops)."""
        return augment.CROP_SIZE if self.tta == "tencrop" else IMAGE_SIZE

    def model_knobs(self) -> dict[str, Any]:
        """This config's value of every model knob (fer_tune.core.models.Knobs) but num_classes, the data's."""
        resolved = {"padding": self.resolved_padding}
        return {name: resolved.get(name, getattr(self, name)) for name in models.KNOB_NAMES if name != "num_classes"}

    @property
    def resolved_input_size(self) -> int:
        return models.resolved_input_size(self.model, self.input_size)

    @field_validator("model", "augmentation", "optimizer", "scheduler")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        try:
            REGISTRIES[info.field_name].get(value)
        except FerTuneError as err:  # as ValueError, pydantic adds the key path to the message
            raise ValueError(str(err)) from None
        return value

    # Each value alone, against every model: a space's candidate is checked before its model is known.
    @field_validator("freeze_depth")
    @classmethod
    def _some_model_has_that_depth(cls, value: int) -> int:
        deepest = max(models.capabilities(name).max_freeze_depth for name in models.list_models())
        if value != models.ALL_BLOCKS and not 0 <= value <= deepest:
            raise ValueError(
                f"expected {models.ALL_BLOCKS} (all) or 0 (head only) to {deepest} trainable last blocks of a backbone"
            )
        return value

    @field_validator("input_size")
    @classmethod
    def _some_model_runs_at(cls, value: int | None) -> int | None:
        sizes = sorted({size for name in models.list_models() for size in models.capabilities(name).input_sizes})
        if value is not None and value not in sizes:
            raise ValueError(f"expected one of {', '.join(map(str, sizes))}, or null (the model's default)")
        return value

    @model_validator(mode="after")
    def _model_takes_its_knobs(self) -> TrainConfig:
        # The space parser validates each candidate value alone (`TrainConfig(**{name: value})`):
        # without a model no knob can be judged against one, so the check waits for the point.
        if "model" not in self.model_fields_set:
            return self
        knobs = {**self.model_dump(), "padding": self.resolved_padding}
        problem = models.knob_problem(self.model, knobs)
        if problem:
            key, why = problem
            error = PydanticCustomError("model_knob", "{why}", {"why": why})
            raise ValidationError.from_exception_data(
                type(self).__name__, [InitErrorDetails(type=error, loc=(key,), input=knobs[key])]
            )
        return self


def trial_point(trial_config: dict[str, Any]) -> dict[str, Any]:
    """The flat point of the space inside a trial's config (the one place the grid envelope is opened)."""
    return trial_config.get(GRID_KEY, trial_config)


def make_train_config(point: dict[str, Any], where: str = "config") -> TrainConfig:
    """Validate a point (flat, or a trial's grid envelope) into a TrainConfig; else a one-line FerTuneError."""
    try:
        return TrainConfig(**trial_point(point))
    except ValidationError as err:
        raise FerTuneError(f"{where}: {format_validation_error(err, TrainConfig)}") from None


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first pydantic error as 'key.path: what was wrong (got X; expected Y)'."""
    first = err.errors()[0]
    loc = ".".join(_shown_key(part) for part in first["loc"])
    path = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, first["loc"][:-1])
        return f"{path}: unknown key; expected one of: {', '.join(valid)}"
    message = first["msg"]
    if first["type"] == "string_pattern_mismatch" and first["loc"][-1:] == ("device",):
        message = "unknown device; expected auto, cpu, cuda or cuda:N"
    # Our own FerTuneError raised inside a validator arrives as "Value error, <message>".
    message = message.removeprefix("Value error, ")
    if len(message) > MAX_SHOWN:  # a validator may quote the value: an alias bomb's is megabytes
        message = f"{message[:MAX_SHOWN]}... (cut)"
    got = first.get("input")
    shown = _BOUNDED.repr(got)  # reprlib: bounded however large or nested the value is
    if got is not None and not isinstance(got, dict) and shown not in message:
        shown = shown if len(shown) <= 80 else f"{shown[:60]}..."
        message += "" if shown.split("...")[0] in message else f" (got {shown})"
    return f"{path}: {message}"


MAX_SHOWN = 200  # characters of a message quoting a value
_BOUNDED = reprlib.Repr()  # Python 3.10's Repr takes no arguments: its limits are set below
_BOUNDED.maxlevel, _BOUNDED.maxlist, _BOUNDED.maxtuple, _BOUNDED.maxdict = 3, 6, 6, 6
_BOUNDED.maxstring = _BOUNDED.maxother = _BOUNDED.maxlong = 80


def _shown_key(part: object) -> str:
    """A key as a message shows it: a look-alike or invisible character (Cyrillic а, a zero-width space)
    escaped, so the message does not seem to name the right key."""
    text = str(part)
    return text if text.isascii() and text.isprintable() else ascii(text)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        # an optional section (`select: SelectConfig | None`) has its model inside the union
        candidates = get_args(annotation) or (annotation,)
        inner = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if inner is None:
            break
        model = inner
    return [name for name in model.model_fields if name != "path"]
