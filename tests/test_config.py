"""Search-space files: parsing, defaults, conditions, and one-line errors naming file, key and value."""

from pathlib import Path

import pytest

from fer_tune.core.config import TrainConfig, make_train_config
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import load_space

SPACES = Path(__file__).parent.parent / "search_spaces"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_quick_yaml_default_point():
    space = load_space(SPACES / "quick.yaml")
    config = space.default_point()
    assert isinstance(config, TrainConfig)
    assert space.data.source == "synthetic"
    assert config.model == "vgg" and config.width == 0.125 and config.lr == pytest.approx(1e-3)
    assert config.epochs == space.budget.max_epochs
    assert config.scheduler == "onecycle" and config.augmentation == "trans1"
    assert space.default_point({"scheduler": "cos_warm"}).T_0 == 2  # the conditional's first choice


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_loads(path):
    load_space(path).default_point()


def test_overrides_apply_before_conditions(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "space:\n  scheduler: {choice: [cos_warm, step]}\n  T_0: {choice: [5, 6], when: {scheduler: cos_warm}}\n",
        )
    )
    assert space.default_point().T_0 == 5
    # With the scheduler overridden, the conditional T_0 is inactive and keeps TrainConfig's default.
    assert space.default_point({"scheduler": "step"}).T_0 == TrainConfig().T_0
    assert space.default_point({"lr": 0.5}).lr == 0.5


def test_range_defaults_and_quantization(tmp_path):
    space = load_space(
        write(
            tmp_path,
            "space:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}\n  dropout: {uniform: [0.0, 0.62], q: 0.1}\n"
            "  epochs: {randint: [2, 9]}\n",
        )
    )
    config = space.default_point()
    assert config.lr == pytest.approx(1e-3)  # geometric midpoint
    assert config.dropout == 0.3  # 0.31 rounded to the 0.1 grid, as a clean float
    assert config.epochs == 6  # round(5.5) under banker's rounding is 6


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("colour: red\n", r"space\.yaml: colour: unknown key; expected one of: name, data, trainable"),
        ("budget: {num_samples: ten}\n", r"space\.yaml: budget\.num_samples: .*integer.*'ten'"),
        ("budget: {num_smaples: 3}\n", r"budget\.num_smaples: unknown key; expected one of: num_samples, max_epochs"),
        ("search: {algorithm: bayes}\n", r"search\.algorithm: .*'optuna', 'random' or 'grid'.*'bayes'"),
        ("space:\n  device: gpu\n", r"space\.device: unknown device; expected auto, cpu, cuda or cuda:N \(got 'gpu'\)"),
        ("space:\n  lr: {loguniform: [1.0e-4, 1.0e-2], default: 0.1}\n", r"space\.lr\.default: 0\.1 is outside"),
        (
            "budget: {max_epochs: 10}\nspace:\n  epochs: {randint: [5, 20]}\n",
            r"space\.epochs: 20 is above budget\.max_epochs 10; expected epochs <= max_epochs",
        ),
        (
            "budget: {num_samples: 4}\nspace:\n  lr: 0.01\nbudget: {num_samples: 50}\n",
            r"line 4: .*duplicate key 'budget' \(lines 1 and 4\); expected each key once",
        ),
        (
            "trainable: fer_cnnn\n",
            r"space\.yaml: trainable: unknown trainable 'fer_cnnn'; expected one of: curve, fer_cnn",
        ),
        (
            "scheduler: {name: asha}\n",
            r"space\.yaml: scheduler: renamed; the sweep's early-stopping rule is now `pruner:`.*inside `space:`",
        ),
        ("pruner: {name: sha}\n", r"pruner\.name: .*'asha', 'hyperband', 'median' or 'none'.*'sha'"),
        (
            "space:\n  learning_rate: 0.1\n",
            r"space\.learning_rate: unknown parameter; expected one of: model, kernel_size",
        ),
        ("space:\n  model: {choice: []}\n", r"space\.model\.choice: empty list"),
        ("space:\n  lr: {uniform: [0.1, 0.01]}\n", r"space\.lr\.uniform: inverted range \[0\.1, 0\.01\]"),
        ("space:\n  lr: {loguniform: [0, 0.1]}\n", r"space\.lr\.loguniform: loguniform needs low > 0"),
        (
            "space:\n  model: {choice: [model3, resnet99]}\n",
            r"space\.model\.choice\[1\]: unknown model 'resnet99'; expected one of: .*model3",
        ),
        (
            "space:\n  augmentation: trans2\n",
            r"space\.augmentation: unknown augmentation 'trans2'; expected one of: .*trans1",
        ),
        (
            "space:\n  scheduler: {choice: [cosine_warm]}\n",
            r"scheduler\.choice\[0\]: unknown scheduler 'cosine_warm'; expected one of: .*cos_warm",
        ),
        (
            "space:\n  optimizer: rmsprop\n",
            r"space\.optimizer: unknown optimizer 'rmsprop'; expected one of: adam, adamw, sgd",
        ),
        ("space:\n  kernel_size: {choice: [3, 5]}\n", r"space\.kernel_size\.choice\[1\]: .*2 or 3.*\(got 5\)"),
        ("space:\n  dropout: {uniform: [0.0, 1.5]}\n", r"space\.dropout\.uniform\[1\]: .*less than 1"),
        ("space:\n  lr: {between: [1, 2]}\n", r"space\.lr: unknown key 'between'; expected one of: choice, grid"),
        ("space:\n  lr: {choice: [0.1], uniform: [0.1, 0.2]}\n", r"space\.lr: expected exactly one of"),
        (
            "space:\n  T_0: {choice: [1], when: {scheduler: cos_warm}}\n",
            r"space\.T_0\.when: 'scheduler' must be a parameter defined above 'T_0'",
        ),
        (
            "space:\n  scheduler: {choice: [step]}\n  T_0: {choice: [1], when: {scheduler: cos_warm}}\n",
            r"space\.T_0\.when\.scheduler: 'cos_warm' is never taken; scheduler takes \['step'\]",
        ),
        ("space: [lr]\n", r"space: expected a mapping of parameter names"),
        ("- just\n- a list\n", r"space\.yaml: expected a mapping of keys"),
        ("space: {lr: [1, 2\n", r"space\.yaml: line \d+: not valid YAML"),
    ],
)
def test_bad_space_file_is_one_clear_line(tmp_path, text, pattern):
    with pytest.raises(FerTuneError, match=pattern) as err:
        load_space(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FerTuneError, match=r"nope\.yaml: search-space file not found"):
        load_space(tmp_path / "nope.yaml")


def test_make_train_config_names_the_bad_key():
    with pytest.raises(FerTuneError, match=r"trial: batch_size: .*greater than or equal to 1.*\(got 0\)"):
        make_train_config({"batch_size": 0}, where="trial")
    with pytest.raises(FerTuneError, match=r"trial: epochz: unknown key; expected one of: model"):
        make_train_config({"epochz": 3}, where="trial")
