"""`promote: significant`: a better model takes @champion only where McNemar's test on the same test images says so.

No Ray and no training: each "sweep" here has one trial whose checkpoint is a `basic` CNN made to answer one
class for every image (its classifier's weights zeroed, its bias naming the class). With test labels chosen
for the purpose, which images each model gets right, and so McNemar's discordant pairs and its exact p-value,
are known before the promotion runs:

    labels: 30 x class 0, 10 x class 1, 12 x class 2 (52 test images)
    champion (always class 1): 10/52 right
    always class 2: 12/52 right, better by 2 images; discordant 12 vs 10: p = 0.83, not significant
    always class 0: 30/52 right; discordant 30 vs 10: p = 0.0022, significant
"""

import shutil
from dataclasses import dataclass

import pandas as pd
import pytest
import torch
from conftest import blob_split
from mlflow import MlflowClient
from scipy import stats

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.core.classifier import build_model
from fer_tune.core.config import make_train_config
from fer_tune.data.dataset import FerDataset, Split
from fer_tune.search.report.stats import ALPHA
from fer_tune.search.results import TrialRecord
from fer_tune.search.sweep import Sweep
from fer_tune.search.sweep_file import load_space
from fer_tune.tracking.champion import promote_best
from fer_tune.tracking.runs import SweepRuns

pytestmark = pytest.mark.integration

MODEL = "fer-rule"
COUNTS = {0: 30, 1: 10, 2: 12}  # test images per class
N = sum(COUNTS.values())
CHAMPION_CLASS = 1


@pytest.fixture(scope="module")
def data() -> FerDataset:
    labels = torch.tensor([k for k, n in COUNTS.items() for _ in range(n)])
    images = torch.randint(0, 255, (N, IMAGE_SIZE, IMAGE_SIZE), generator=torch.Generator().manual_seed(5),
                           dtype=torch.uint8)  # fmt: skip
    return FerDataset(train=blob_split(70, 1), validation=blob_split(70, 2), test=Split(images, labels),
                      classes=EMOTIONS, source="counted")  # fmt: skip


@dataclass
class OneModelSweep(Sweep):
    """A finished sweep whose best checkpoint is `state` (no Ray result grid behind it)."""

    state: dict | None = None

    def state_of(self, record: TrialRecord) -> dict:
        return self.state


def always(answer: int, data: FerDataset) -> dict:
    """A checkpoint whose model answers class `answer` for every image."""
    config = make_train_config({"model": "basic", "epochs": 1})
    model = build_model(config, data.num_classes, data.mean, data.std)
    [classifier] = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.nn.functional.one_hot(torch.tensor(answer), data.num_classes) * 10.0)
    return {"config": config.model_dump(), "model": model.state_dict(), "epoch": 1, "history": []}


def promoted(folder, data: FerDataset, uri: str, name: str, answer: int, rule: str):
    """Register the model that always answers `answer`, as sweep `name` under `promote: rule`."""
    space_file = folder / f"{name}.yaml"
    space_file.write_text(f"name: {name}\npromote: {rule}\nmlflow: {{register_as: {MODEL}}}\nspace:\n  model: basic\n")
    space = load_space(space_file)
    curve = pd.DataFrame({"epoch": [1], "val_accuracy": [0.5], "val_loss": [1.0]})
    best = TrialRecord(f"{name}_00000", {}, curve, space.metric, space.mode, 1)
    sweep = OneModelSweep(name, space, data, pd.DataFrame(), [best], best, folder / name, 1.0, None,
                          state=always(answer, data))  # fmt: skip
    return promote_best(sweep, SweepRuns(uri, "rule", name, {}, {}))


def mcnemar_p(ours: int, theirs: int) -> float:
    """The exact two-sided p of McNemar's test for constant answers `ours` and `theirs` on these labels."""
    return stats.binomtest(COUNTS[ours], COUNTS[ours] + COUNTS[theirs], 0.5).pvalue


@pytest.fixture(scope="module")
def first(tmp_path_factory, data):
    """A store whose champion, version 1, always answers CHAMPION_CLASS: (its folder, its Registration)."""
    folder = tmp_path_factory.mktemp("rule")
    champion = promoted(folder, data, f"sqlite:///{folder / 'mlflow.db'}", "first", CHAMPION_CLASS, "significant")
    assert (champion.alias, champion.rival) == ("champion", None)
    assert champion.accuracy == pytest.approx(COUNTS[CHAMPION_CLASS] / N)
    return folder, champion


def store_with_champion(first, tmp_path):
    """A copy of the first store (the artifacts stay where they are), for one test to add versions to."""
    folder, champion = first
    shutil.copy(folder / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, champion, MlflowClient(uri)


@pytest.mark.slow(seconds=20)
def test_a_better_but_not_significantly_better_model_stays_challenger(first, tmp_path, data):
    uri, champion, client = store_with_champion(first, tmp_path)
    p = mcnemar_p(2, CHAMPION_CLASS)
    assert p > 0.5  # the situation this test is about: 12 vs 10 discordant images

    new = promoted(tmp_path, data, uri, "slightly", 2, "significant")
    assert new.accuracy == pytest.approx(COUNTS[2] / N) and new.rival == (champion.version, champion.accuracy)
    assert new.accuracy > champion.accuracy  # `promote: better` would have taken the alias
    assert new.alias == "challenger", new.message
    aliases = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"champion": champion.version, "challenger": new.version}
    tags = client.get_model_version(MODEL, new.version).tags
    assert tags["promote_rule"] == "significant"
    assert tags["paired_test"].startswith(f"against version {champion.version} on the same {N} images: ")
    assert tags["paired_test"].endswith(f"McNemar exact p = {p:.4g}: not significantly better"), tags["paired_test"]


@pytest.mark.slow(seconds=40)
def test_a_significantly_better_model_takes_the_champion_alias(first, tmp_path, data):
    uri, champion, client = store_with_champion(first, tmp_path)
    p = mcnemar_p(0, CHAMPION_CLASS)
    assert p < ALPHA / 10  # the situation this test is about: 30 vs 10 discordant images

    new = promoted(tmp_path, data, uri, "clearly", 0, "significant")
    assert new.accuracy == pytest.approx(COUNTS[0] / N) and new.rival == (champion.version, champion.accuracy)
    assert new.alias == "champion", new.message
    aliases = {a: str(v) for a, v in client.get_registered_model(MODEL).aliases.items()}
    assert aliases == {"champion": new.version, "challenger": champion.version}
    tags = client.get_model_version(MODEL, new.version).tags
    assert tags["promote_rule"] == "significant"
    assert tags["paired_test"].endswith(f"McNemar exact p = {p:.4g}: significantly better"), tags["paired_test"]


def test_a_replayed_challenger_says_so_without_its_rival():
    """`results sync` finds its version promoted already (registered_already: no rival at hand): its line says
    challenger and champion unchanged, where it once raised TypeError on the missing rival."""
    from fer_tune.tracking.champion import Registration

    replayed = Registration("fer-x", "2", "challenger", 0.5, "test", "run", rival=None)
    assert (
        replayed.message
        == "registered models:/fer-x/2 as fer-x@challenger: test accuracy 0.5000; fer-x@champion unchanged"
    )
