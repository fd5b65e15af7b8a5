"""The search-space file: `SpaceFile`, read and validated by `load_space`.

A search-space YAML names the data, the budget, the searcher, the pruner (the
early-stopping rule) and the space; each sampled point of the space is a
`TrainConfig` (fer_tune.core.config). Everything is validated at load: unknown keys,
wrong types and unknown names are one-line errors naming the file, the key path, the
bad value and the valid values.

    space = load_space("search_spaces/quick.yaml")
    config = space.default_point()          # a TrainConfig
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from fer_tune.core import models
from fer_tune.core.config import Strict, TrainConfig, format_validation_error, make_train_config
from fer_tune.core.curves import CurveSettings
from fer_tune.data import ExtraSource, FerDataset, check_source, load_dataset
from fer_tune.data.synthetic import MAX_SEED, check_size
from fer_tune.errors import FerTuneError
from fer_tune.names import check_space_name
from fer_tune.numbers import whole_number
from fer_tune.search.objectives import VALIDATION_METRICS, ChampionRule, Objective, check_objectives
from fer_tune.search.syntax import Param, parse_space
from trainables import TRAINABLES

# Bounds no real sweep reaches; beyond them a typo (1e30) would run forever or overflow.
MAX_SAMPLES = 100_000  # trials of one sweep
MAX_EPOCHS = 10_000  # epochs of one trial
MAX_CPUS, MAX_GPUS = 1024, 64  # asked for by one trial


class ExtraSourceConfig(Strict):
    """One `data.extra` entry: a source all of whose images join train (fer_tune.data.sources)."""

    source: str  # a FER2013 CSV or an image folder
    classes: dict[str, str] = Field(default_factory=dict)  # its class -> the primary's; same names map themselves
    drop: tuple[str, ...] = ()  # its classes to leave out (any the primary lacks, unless mapped)
    drop_leaks: bool = False  # leave out its images that match a primary validation/test image (else warn)


class DataConfig(Strict):
    source: str = "synthetic"  # "synthetic", a FER2013 CSV, or an image folder: the primary (validation, test)
    n: int = Field(30000, ge=70)  # synthetic only: number of images
    seed: int = Field(0, ge=0, le=MAX_SEED)  # synthetic only: generator seed; also the validation carve seed
    val_fraction: float = Field(
        0.1, gt=0, lt=1, allow_inf_nan=False
    )  # carved from train where a source has no validation split
    extra: tuple[ExtraSourceConfig, ...] = ()  # more sources merged into train only (Pham 2020)

    @field_validator("n")
    @classmethod
    def _fits_in_memory(cls, value: int) -> int:
        try:
            return check_size(value, "n")
        except FerTuneError as err:
            raise ValueError(str(err).split(": ", 1)[1]) from None

    @model_validator(mode="before")
    @classmethod
    def _extra_keys(cls, raw: Any) -> Any:
        # pydantic would answer an unknown key inside a list item with the keys of `data`; name the item's own.
        extras = raw.get("extra") if isinstance(raw, dict) else None
        for index, item in enumerate(extras if isinstance(extras, list | tuple) else []):
            unknown = sorted(set(item) - set(ExtraSourceConfig.model_fields)) if isinstance(item, dict) else []
            if unknown:
                valid = ", ".join(ExtraSourceConfig.model_fields)
                raise ValueError(f"extra[{index}].{unknown[0]}: unknown key; expected one of: {valid}")
        return raw

    def check(self, source: str | None = None) -> None:
        """The cheap checks of every source this section names (see fer_tune.data.check_source)."""
        for each in (source or self.source, *(e.source for e in self.extra)):
            check_source(each)

    def load(self, source: str | None = None) -> FerDataset:
        """The dataset this section describes (`source`, e.g. from --data, replaces the primary `source`;
        the `extra` sources still join its train split)."""
        extra = [ExtraSource(e.source, dict(e.classes), e.drop, e.drop_leaks) for e in self.extra]
        return load_dataset(
            source or self.source, n=self.n, seed=self.seed, val_fraction=self.val_fraction, extra=extra
        )


class SearchConfig(Strict):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2"] = "tpe"  # algorithm optuna's sampler: TPE, or NSGA-II (for several objectives)
    seed: int | None = Field(0, ge=0, le=MAX_SEED)  # numpy's and Optuna's seeds are 32-bit unsigned
    # TPE's random trials before it models the results; None: fer_tune.search.searchers.startup_trials
    startup_trials: int | None = Field(None, ge=1, le=MAX_SAMPLES)

    @model_validator(mode="after")
    def _optuna_only(self) -> SearchConfig:
        # by value, not by the keys given: a space read back from sweep.json carries every default
        defaults = type(self).model_fields
        given = [key for key in ("sampler", "startup_trials") if getattr(self, key) != defaults[key].default]
        if self.algorithm != "optuna" and given:
            raise ValueError(f"{given[0]}: applies to algorithm: optuna only, not {self.algorithm}; remove it")
        return self


class PrunerConfig(Strict):
    """Ray Tune's trial scheduler: which trials to stop early (the LR schedule is `space.scheduler`)."""

    name: Literal["asha", "hyperband", "median", "none"] = "asha"
    grace_period: int = Field(1, ge=1, le=MAX_EPOCHS)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(3, gt=1, le=1000, allow_inf_nan=False)
    # asha, opt-in: a rung holding fewer results than this continues a trial only if it is above chance
    # (dead_trials' floor), even inside dead_trials.grace; 0 (default): Ray's ASHA (README "Dead trials")
    min_rung_results: int = Field(0, ge=0)

    def ignored(self) -> list[str]:
        """One note per setting given that this pruner never reads (harmless: switching pruners keeps them)."""
        takes = ", ".join(sorted(USED_BY_PRUNER[self.name] - {"name"})) or "no setting"
        given = {key for key, field in type(self).model_fields.items() if getattr(self, key) != field.default}
        return [
            f"pruner.{key} is not read by pruner {self.name} (it takes {takes}); ignored"
            for key in sorted(given - USED_BY_PRUNER[self.name])
        ]


# The PrunerConfig fields each pruner reads (fer_tune.search.pruners.build_pruner)
USED_BY_PRUNER = {
    "asha": {"name", "grace_period", "reduction_factor", "min_rung_results"},
    "hyperband": {"name", "reduction_factor"},
    "median": {"name", "grace_period"},
    "none": {"name"},
}


class DeadTrialsConfig(Strict):
    """Stop a trial whose validation accuracy is still at or below the majority-class rate."""

    enabled: bool = True
    grace: int = Field(2, ge=1)  # epochs every trial gets before the rule may stop it
    margin: float = Field(0.0, ge=0, lt=1)  # above the rate a trial must be to count as learning


class WarmStartConfig(Strict):
    """How `--warm-start` seeds a sweep with earlier trials (fer_tune.search.warm_start)."""

    top_k: int = Field(3, ge=0)  # the earlier best K configurations are proposed first


MAX_RERUN_SEEDS = 100  # fresh seeds per re-trained trial; more says nothing a hundred do not


class SelectConfig(Strict):
    """After the search, re-train its best trials with fresh seeds; the champion is the best mean
    (fer_tune.search.reruns). Absent: the champion is the search's best single trial."""

    top_k: int = Field(3, ge=1, le=MAX_SAMPLES)  # the best completed trials re-trained
    seeds: int = Field(3, ge=1, le=MAX_RERUN_SEEDS)  # fresh seeds each is re-trained with


class BudgetConfig(Strict):
    @field_validator("num_samples", "max_epochs", mode="before")
    @classmethod
    def _bounded(cls, value: Any, info) -> Any:
        # pydantic's own words for 1e30 are "unable to parse input string"; say what is allowed
        most = MAX_SAMPLES if info.field_name == "num_samples" else MAX_EPOCHS
        if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > most:
            raise ValueError(f"{value:g}: too large; expected an integer from 1 to {most}")
        return value

    num_samples: int = Field(10, ge=1, le=MAX_SAMPLES)  # trials (per grid point, for grid axes)
    max_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    max_concurrent: int | None = Field(None, ge=1, le=MAX_SAMPLES)  # None: as many as resources allow
    max_failures: int = Field(0, ge=0, le=1000)  # retries of a failed trial from its last checkpoint; 0: none


class ResourcesConfig(Strict):
    cpu: float = Field(1, gt=0, le=MAX_CPUS, allow_inf_nan=False)  # per trial
    gpu: float = Field(0, ge=0, le=MAX_GPUS, allow_inf_nan=False)  # per trial; fractions pack several trials on one GPU


def _named(value: Any, check) -> str:
    """A name checked by fer_tune.names, its FerTuneError as pydantic's ValueError (the key is added there)."""
    try:
        return check(value, "name")
    except FerTuneError as err:
        raise ValueError(str(err).removeprefix("name: ")) from None


class SpaceFile(Strict):
    """A whole search-space YAML file."""

    name: str
    data: DataConfig = DataConfig()
    trainable: str = "fer_cnn"
    curve: CurveSettings = CurveSettings()  # `trainable: curve` only: its sleep per epoch and hold (core/curves.py)
    metric: Literal["val_accuracy", "val_macro_f1", "val_loss"] = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    objectives: tuple[Objective, ...] = ()  # several objectives (search/objectives.py); replaces metric/mode
    champion: ChampionRule | None = None  # how the champion is picked from the front; None: best by metric
    search: SearchConfig = SearchConfig()
    pruner: PrunerConfig = PrunerConfig()
    dead_trials: DeadTrialsConfig = DeadTrialsConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    select: SelectConfig | None = None  # re-train the top trials with fresh seeds; None: no re-runs
    budget: BudgetConfig = BudgetConfig()
    resources: ResourcesConfig = ResourcesConfig()
    mlflow: dict[str, Any] = Field(default_factory=dict)  # the tracker's own section: fer_tune.tracking validates it
    # Registry promotion: "better" (a strictly higher test accuracy takes @champion) or "significant"
    # (also McNemar's exact test on the same test images, p < 0.05: fer_tune.tracking.paired).
    promote: Literal["better", "significant"] = "better"
    space: tuple[Param, ...] = ()
    path: str = "<memory>"  # where it was loaded from, for error messages

    @field_validator("name", mode="before")
    @classmethod
    def _safe_name(cls, value: Any) -> str:
        return _named(value, check_space_name)

    @model_validator(mode="before")
    @classmethod
    def _primary_objective(cls, raw: Any) -> Any:
        # The first validation metric among `objectives` is the sweep's `metric`: its best epoch is the
        # checkpoint kept, scored and registered, as with a single objective. load_space checks the rest.
        objectives = raw.get("objectives") if isinstance(raw, dict) else None
        if not isinstance(objectives, list | tuple) or not all(isinstance(o, dict) for o in objectives):
            return raw
        listed = [o for o in objectives if o.get("metric") in VALIDATION_METRICS and o.get("mode") in ("max", "min")]
        return {**raw, "metric": listed[0]["metric"], "mode": listed[0]["mode"]} if listed else raw

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def objective_list(self) -> tuple[Objective, ...]:
        """Every objective; a single-objective file's is its metric and mode."""
        return self.objectives or (Objective(metric=self.metric, mode=self.mode),)

    @field_validator("trainable")
    @classmethod
    def _registered(cls, value: str) -> str:
        try:
            TRAINABLES.get(value)
        except FerTuneError as err:
            raise ValueError(str(err)) from None
        return value

    def trainable_options(self) -> dict[str, Any]:
        """What the space's trainable takes beside its config and the data (tune.with_parameters)."""
        return {"curve": self.curve} if self.trainable == "curve" else {}

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


# Keys renamed since the first release: an old file gets a one-line pointer to the new name.
RENAMED_KEYS = {
    "scheduler": "the sweep's early-stopping rule is now `pruner:` (same fields: name, grace_period, "
    "reduction_factor); the LR schedule stays `scheduler` inside `space:`",
}


def with_budget(space: SpaceFile, num_samples: int | None = None, max_epochs: int | None = None) -> SpaceFile:
    """The space with command-line budget overrides applied (None keeps the file's value)."""
    updates = {k: v for k, v in (("num_samples", num_samples), ("max_epochs", max_epochs)) if v is not None}
    for key, value in updates.items():
        whole_number(
            value, f"--{key.replace('_', '-')}", low=1, high=MAX_SAMPLES if key == "num_samples" else MAX_EPOCHS
        )
    if not updates:
        return space
    space = space.model_copy(update={"budget": space.budget.model_copy(update=updates)})
    check_epochs(space, where="--max-epochs" if max_epochs is not None else space.path)
    return space


SMOKE_TRIALS, SMOKE_EPOCHS = 2, 1
SMOKE_TTA = {"tencrop": "flip"}  # ten crops: ten forward passes per image; a smoke run checks the path, not the score


def smoke(space: SpaceFile) -> SpaceFile:
    """The space shrunk to a smoke test: 2 trials of 1 epoch on one CPU each, no pruning; a space that
    asks for re-runs (`select:`) re-trains its best trial once, so the smoke run goes through them too.

    A sampled space keeps the values of every parameter that chooses what is built (model, pretrained,
    freeze_depth, dense_units, ...), so a smoke run builds the models the real run would
    (`fer-tune run SPACE --smoke --data TINY`); the budget and the epochs shrink, and so does the
    cost of each step (`_smoke_cheap`): every model runs at the smallest input it accepts (input_size
    fixed at the smallest size that every model the space draws takes: 48 px, where Pham 2020's RMN
    and the ImageNet backbones would run at 224 by default) and `tta: tencrop` becomes `flip` (one
    48 px image and its mirror instead of ten 40 px crops). A grid stays a grid, cut to 2 points: its
    first unconditional axis with several values keeps its first two, every other axis its first value
    (`_smoke_grid`). A run without --smoke is untouched.
    """
    epochs = lambda p: p.model_copy(update={"kind": "fixed", "values": (SMOKE_EPOCHS,), "default": None})
    params = _smoke_cheap(tuple(epochs(p) if p.name == "epochs" else p for p in space.space))
    if space.search.algorithm == "grid":
        params, num_samples = _smoke_grid(params), 1  # every grid point runs num_samples times
    else:
        params, num_samples = params, SMOKE_TRIALS
    return space.model_copy(
        update={
            "space": params,
            "pruner": PrunerConfig(name="none"),
            "budget": BudgetConfig(num_samples=num_samples, max_epochs=SMOKE_EPOCHS, max_concurrent=SMOKE_TRIALS),
            "resources": ResourcesConfig(cpu=1, gpu=0),
            "select": SelectConfig(top_k=1, seeds=1) if space.select is not None else None,
        }
    )


def _smoke_cheap(params: tuple[Param, ...]) -> tuple[Param, ...]:
    """`input_size` fixed, unconditionally, at the smallest size every model the space draws accepts
    (added where a drawn model's default is larger; left as it is where those models share no size),
    and `tta`'s tencrop replaced by flip (SMOKE_TTA)."""
    cheap_tta = lambda v: SMOKE_TTA.get(v, v)
    tta = lambda p: p.model_copy(
        update={
            "values": tuple(dict.fromkeys(map(cheap_tta, p.values))),
            "default": None if p.default is None else cheap_tta(p.default),
        }
    )
    params = tuple(tta(p) if p.name == "tta" else p for p in params)

    model = next((p for p in params if p.name == "model"), None)
    drawn = model.values if model is not None else (TrainConfig.model_fields["model"].default,)
    shared = set.intersection(*(set(models.capabilities(name).input_sizes) for name in drawn))
    given = next((p for p in params if p.name == "input_size"), None)
    needed = any(models.capabilities(name).default_input_size != min(shared, default=0) for name in drawn)
    if not shared or (given is None and not needed):
        return params
    fixed = Param(name="input_size", kind="fixed", values=(min(shared),))
    if given is None:
        return (*params, fixed)
    return tuple(fixed if p.name == "input_size" else p for p in params)


def _smoke_grid(params: tuple[Param, ...]) -> tuple[Param, ...]:
    """A grid's axes cut so that it enumerates SMOKE_TRIALS points (fewer if no axis has that many values)."""
    options = [p for p in params if p.kind in ("choice", "grid") and len(p.values) > 1]
    wide = next((p.name for p in options if not p.when), None)
    cut = lambda p: p.model_copy(update={"values": p.values[: SMOKE_TRIALS if p.name == wide else 1]})
    return tuple(cut(p) if p in options else p for p in params)


def check_epochs(space: SpaceFile, where: str) -> None:
    """A trial may not be given more epochs than budget.max_epochs (the pruner's horizon)."""
    param = next((p for p in space.space if p.name == "epochs"), None)
    if param is None:
        return
    most = max(param.values) if param.kind != "uniform" else param.values[1]
    if most > space.budget.max_epochs:
        raise FerTuneError(
            f"{where}: space.epochs: {most} is above budget.max_epochs {space.budget.max_epochs}; "
            "expected epochs <= max_epochs (raise budget.max_epochs or lower the epochs searched)"
        )


def load_space(path: str | Path) -> SpaceFile:
    """Read and validate a search-space YAML file."""
    import yaml

    from fer_tune.search.yaml_strict import StrictLoader, read_yaml_text

    path = Path(path)
    text = read_yaml_text(path, "search-space file")
    try:
        raw = yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())  # PyYAML's own may span lines
        raise FerTuneError(f"{path}:{where} not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise FerTuneError(f"{path}: expected a mapping of keys (data, budget, space, ...), got {type(raw).__name__}")
    raw = dict(raw)
    odd = next((key for key in raw if not isinstance(key, str)), None)
    if odd is not None or None in raw:  # YAML's `? x` or `1: x` makes a key that is no name
        keys = ", ".join(k for k in SpaceFile.model_fields if k not in ("path", "space")) + ", space"
        raise FerTuneError(f"{path}: key {odd!r}: expected a key name; allowed: {keys}")
    for old, hint in RENAMED_KEYS.items():
        if old in raw:
            raise FerTuneError(f"{path}: {old}: renamed; {hint}")
    if "name" not in raw:
        check_space_name(path.stem, f"{path}: name (none given, so the file's name)")
        raw["name"] = path.stem
    for key in ("metric", "mode"):
        if raw.get("objectives") and key in raw:
            raise FerTuneError(f"{path}: {key}: {raw[key]}: objectives: replaces metric and mode; remove {key}:")
    space = parse_space(raw.pop("space", None) or {}, where=str(path))
    try:
        spec = SpaceFile(**raw, space=space, path=str(path))
    except ValidationError as err:
        raise FerTuneError(f"{path}: {format_validation_error(err, SpaceFile)}") from None
    problem = check_objectives(spec.objectives, spec.champion, spec.metric)
    if problem:
        raise FerTuneError(f"{path}: {problem}")
    if spec.select is not None and (spec.multi_objective or spec.champion is not None):
        other = "objectives" if spec.multi_objective else "champion"
        raise FerTuneError(
            f"{path}: select: re-runs choose the champion by its mean {spec.metric}, so they need a single "
            f"objective without a champion: rule; remove select: or {other}:"
        )
    if "curve" in raw and spec.trainable != "curve":
        raise FerTuneError(
            f"{path}: curve: applies to trainable: curve only; this file's trainable is {spec.trainable}"
        )
    check_epochs(spec, where=str(path))
    spec.default_point()  # the default point must itself be a valid configuration
    return spec
