"""One validated config object per trial (`TrainConfig`) and the search-space
file that produces them (`SpaceFile`).

A search-space YAML names the data, the budget, the searcher and the space;
each sampled point of the space is a `TrainConfig`. Everything is validated at
load: unknown keys, wrong types and unknown names are one-line errors naming
the file, the key path, the bad value and the valid values.

    space = load_space("search_spaces/quick.yaml")
    config = space.default_point()          # a TrainConfig
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from fer_tune.errors import FerTuneError


class Strict(BaseModel):
    # protected_namespaces=(): our field `model` would otherwise clash with pydantic's `model_` prefix.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


REGISTRIES = {
    "model": ("fer_tune.models", "MODELS"),
    "augmentation": ("fer_tune.augment", "AUGMENTATIONS"),
    "optimizer": ("fer_tune.optim", "OPTIMIZERS"),
    "scheduler": ("fer_tune.optim", "SCHEDULERS"),
}


def _check_name(kind: str, value: str) -> str:
    """Validate a registry name; the registries live in torch-importing modules, so import lazily."""
    module, attribute = REGISTRIES[kind]
    registry = getattr(importlib.import_module(module), attribute)
    try:
        registry.get(value)
    except FerTuneError as err:  # as ValueError, pydantic adds the key path to the message
        raise ValueError(str(err)) from None
    return value


class TrainConfig(Strict):
    """Every hyperparameter of one training run. The defaults train a good model3."""

    # architecture
    model: str = "model3"
    kernel_size: Literal[2, 3] = 3  # seed 001: 3x3 beat 2x2 by ~3 points
    padding: Literal[0, 1, "auto"] = 1  # auto = (kernel_size - 1) // 2: seed 001's 2x2/pad 0 and 3x3/pad 1 pairs
    dropout: float = Field(0.25, ge=0, lt=1)
    width: float = Field(1.0, gt=0)  # channel multiplier
    pretrained: bool = False  # ImageNet weights, ResNets only
    freeze_depth: int = Field(0, ge=0)  # ResNets only: freeze the stem and the first stages
    # data and augmentation
    augmentation: str = "trans4"  # seed 001's best strategy at 60 epochs
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
    scheduler: str = "plateau"
    plateau_factor: float = Field(0.1, gt=0, lt=1)  # seed 001: x0.1 when val loss stalls
    plateau_patience: int = Field(10, ge=0)  # epochs
    step_size: int = Field(20, ge=1)  # StepLR: epochs between decays (seed 001: 20)
    gamma: float = Field(0.1, gt=0, le=1)  # StepLR decay
    T_0: int = Field(2, ge=1)  # cos_warm: epochs to the first restart (seed 001's best: 2)
    T_mult: int = Field(10, ge=1)  # cos_warm: cycle growth factor (seed 001's best: 10)
    epochs: int = Field(10, ge=1)
    # reproducibility and hardware
    seed: int = 0
    device: str = "auto"  # auto = cuda if available, else cpu
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False  # torch.compile the model (CUDA; compile time pays off on long runs)
    eval_batch_size: int = Field(1024, ge=1)

    @property
    def resolved_padding(self) -> int:
        return (self.kernel_size - 1) // 2 if self.padding == "auto" else self.padding

    @field_validator("model", "augmentation", "optimizer", "scheduler")
    @classmethod
    def _registered(cls, value: str, info: ValidationInfo) -> str:
        return _check_name(info.field_name, value)


class DataConfig(Strict):
    source: str = "synthetic"  # "synthetic", a FER2013 CSV, or an image folder
    n: int = Field(30000, ge=70)  # synthetic only: number of images
    seed: int = 0  # synthetic only: generator seed; also the validation carve seed
    val_fraction: float = Field(0.1, gt=0, lt=1)  # carved from train where a source has no validation split


class SearchConfig(Strict):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    seed: int | None = 0


class SchedulerConfig(Strict):
    name: Literal["asha", "hyperband", "median", "none"] = "asha"
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(3, gt=1)


class BudgetConfig(Strict):
    num_samples: int = Field(10, ge=1)  # trials (per grid point, for grid axes)
    max_epochs: int = Field(10, ge=1)
    max_concurrent: int | None = Field(None, ge=1)  # None: as many as resources allow


class ResourcesConfig(Strict):
    cpu: float = Field(1, gt=0)  # per trial
    gpu: float = Field(0, ge=0)  # per trial; fractions pack several trials on one GPU


class MlflowConfig(Strict):
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI wins; default sqlite:///results/mlflow.db
    experiment: str | None = None  # default: the space's name
    register_as: str = "fer-emotion"


DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")


class Param(Strict):
    """One parameter of the space: a fixed value, or a distribution with an optional condition.

    YAML forms: `lr: 0.001` (fixed), `lr: {loguniform: [1e-4, 1e-2]}`,
    `T_0: {choice: [1, 2], when: {scheduler: cos_warm}}`, `epochs: {randint: [5, 20], q: 5}`.
    """

    name: str
    kind: Literal["fixed", "choice", "grid", "uniform", "loguniform", "randint"]
    values: tuple[Any, ...]  # fixed: (value,); choice/grid: the options; ranges: (low, high)
    q: float | None = None  # quantization step for ranges
    when: dict[str, tuple[Any, ...]] = {}  # condition: every named parameter takes one of these values
    default: Any = None  # the value `fer-tune train` uses

    def is_active(self, point: dict[str, Any]) -> bool:
        return all(point.get(key) in allowed for key, allowed in self.when.items())

    def default_value(self) -> Any:
        if self.default is not None:
            return self.default
        if self.kind in ("fixed", "choice", "grid"):
            return self.values[0]
        low, high = self.values
        mid = math.sqrt(low * high) if self.kind == "loguniform" else (low + high) / 2
        if self.q:
            mid = quantize(mid, self.q)
        return int(round(mid)) if self.kind == "randint" else mid


def quantize(value: float, step: float) -> float:
    """`value` rounded to a multiple of `step`, without float residue (0.30000000000000004 -> 0.3)."""
    return round(round(value / step) * step, 12)


class SpaceFile(Strict):
    """A whole search-space YAML file."""

    name: str
    data: DataConfig = DataConfig()
    trainable: str = "fer_cnn"
    metric: Literal["val_accuracy", "val_macro_f1", "val_loss"] = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    budget: BudgetConfig = BudgetConfig()
    resources: ResourcesConfig = ResourcesConfig()
    mlflow: MlflowConfig = MlflowConfig()
    space: tuple[Param, ...] = ()
    path: str = "<memory>"  # where it was loaded from, for error messages

    def default_point(self, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The space's default configuration (each parameter's default), with overrides applied."""
        overrides = overrides or {}
        point: dict[str, Any] = {"epochs": self.budget.max_epochs}
        for param in self.space:  # file order: a condition only names parameters above it
            if param.name in overrides:
                point[param.name] = overrides[param.name]
            elif param.is_active(point):
                point[param.name] = param.default_value()
        point.update(overrides)
        return make_train_config(point, where=self.path)


def with_budget(space: SpaceFile, num_samples: int | None = None, max_epochs: int | None = None) -> SpaceFile:
    """The space with command-line budget overrides applied (None keeps the file's value)."""
    updates = {k: v for k, v in (("num_samples", num_samples), ("max_epochs", max_epochs)) if v is not None}
    for key, value in updates.items():
        if value < 1:
            raise FerTuneError(f"--{key.replace('_', '-')} {value}: expected a positive integer")
    return space.model_copy(update={"budget": space.budget.model_copy(update=updates)}) if updates else space


def make_train_config(point: dict[str, Any], where: str = "config") -> TrainConfig:
    """Validate a point of the space into a TrainConfig, or raise a one-line FerTuneError."""
    try:
        return TrainConfig(**point)
    except ValidationError as err:
        raise FerTuneError(f"{where}: {format_validation_error(err, TrainConfig)}") from None


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """The first pydantic error as 'key.path: what was wrong (got X; expected Y)'."""
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    path = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model, first["loc"][:-1])
        return f"{path}: unknown key; expected one of: {', '.join(valid)}"
    message = first["msg"]
    # Our own FerTuneError raised inside a validator arrives as "Value error, <message>".
    message = message.removeprefix("Value error, ")
    got = first.get("input")
    if got is not None and not isinstance(got, dict) and repr(got) not in message:
        message += f" (got {got!r})"
    return f"{path}: {message}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return [name for name in model.model_fields if name != "path"]


def load_space(path: str | Path) -> SpaceFile:
    """Read and validate a search-space YAML file."""
    import yaml

    from fer_tune.space_syntax import parse_space

    path = Path(path)
    if not path.is_file():
        raise FerTuneError(f"{path}: search-space file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FerTuneError(f"{path}:{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(raw, dict):
        raise FerTuneError(f"{path}: expected a mapping of keys (data, budget, space, ...), got {type(raw).__name__}")
    raw = dict(raw)
    raw.setdefault("name", path.stem)
    space = parse_space(raw.pop("space", None) or {}, where=str(path))
    try:
        spec = SpaceFile(**raw, space=space, path=str(path))
    except ValidationError as err:
        raise FerTuneError(f"{path}: {format_validation_error(err, SpaceFile)}") from None
    spec.default_point()  # the default point must itself be a valid configuration
    return spec
