"""Several sources (Pham 2020): extra sources join train, relabelled onto the primary's classes."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fer_tune.constants import EMOTIONS
from fer_tune.data import ExtraSource, load_dataset, write_fer2013_csv
from fer_tune.errors import FerTuneError
from fer_tune.search.sweep_file import load_space

USAGES = ["Training"] * 28 + ["PublicTest"] * 14 + ["PrivateTest"] * 7
# A JAFFE-like folder: its own class names, one class FER2013 lacks, and only some emotions.
EXTRA_TRAIN = {"joy": 3, "sad": 2, "surprised": 2, "contempt": 1}
EXTRA_TEST = {"joy": 1, "sad": 1, "surprised": 1, "contempt": 1}
MAPPING = {"joy": "happy", "surprised": "surprise"}  # "sad" keeps its name


@pytest.fixture
def primary(tmp_path):
    """A FER2013 CSV of 49 random images: 28 train, 14 validation, 7 test."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(USAGES), 48, 48), dtype=np.uint8)
    write_fer2013_csv(tmp_path / "fer.csv", images, np.arange(len(USAGES)) % len(EMOTIONS), USAGES)
    return tmp_path / "fer.csv"


@pytest.fixture
def extra(tmp_path):
    """ROOT/{train,test}/<class>/*.png with EXTRA_TRAIN and EXTRA_TEST images."""
    rng = np.random.default_rng(1)
    for split, counts in (("train", EXTRA_TRAIN), ("test", EXTRA_TEST)):
        for name, count in counts.items():
            (tmp_path / "jaffe" / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / "jaffe" / split / name / f"{i}.png")
    return tmp_path / "jaffe"


def test_extra_images_all_join_train_relabelled(primary, extra):
    spec = ExtraSource(str(extra), classes=MAPPING, drop=("contempt",))
    merged = load_dataset(str(primary), extra=[spec])
    alone = load_dataset(str(primary))
    assert merged.classes == EMOTIONS
    added = {"happy": 3 + 1, "sad": 2 + 1, "surprise": 2 + 1}  # train and test of the extra, contempt dropped
    assert len(merged.train) == len(alone.train) + sum(added.values())
    expected = {name: n + added.get(name, 0) for name, n in alone.counts()["train"].items()}
    assert merged.counts()["train"] == expected
    assert torch.equal(merged.train.images[: len(alone.train)], alone.train.images)  # the primary's train first
    for name in ("validation", "test"):  # held-out splits are the primary's own
        assert torch.equal(getattr(merged, name).images, getattr(alone, name).images)
        assert torch.equal(getattr(merged, name).labels, getattr(alone, name).labels)
    extra_alone = load_dataset(str(extra))
    happy = extra_alone.classes.index("joy")
    joy_images = torch.cat([s.images[s.labels == happy] for s in extra_alone.splits().values()])
    merged_happy = merged.train.images[len(alone.train) :][merged.train.labels[len(alone.train) :] == 3]
    assert sorted(map(bytes, merged_happy.numpy())) == sorted(map(bytes, joy_images.numpy()))


def test_summary_lists_each_source_with_its_fingerprint(primary, extra):
    spec = ExtraSource(str(extra), classes=MAPPING, drop=("contempt",))
    summary = load_dataset(str(primary), extra=[spec]).summary()
    first, second = summary["sources"]
    assert (first["role"], first["source"]) == ("primary", str(primary))
    assert first["fingerprint"] == load_dataset(str(primary)).fingerprint()
    assert first["splits"] == load_dataset(str(primary)).counts()
    assert second["role"] == "extra" and second["source"].startswith(str(extra))
    assert second["fingerprint"] == load_dataset(str(extra)).fingerprint()
    assert second["classes"] == {"joy": "happy", "sad": "sad", "surprised": "surprise", "contempt": "(dropped)"}
    assert second["splits"]["train"]["happy"] == 4 and second["splits"]["train"]["angry"] == 0
    assert second["leaks"] == {"validation": 0, "test": 0, "dropped": False}
    assert str(extra) in summary["source"] and "+ 10 train images" in summary["source"]
    single = load_dataset(str(primary)).summary()["sources"]
    assert [s["role"] for s in single] == ["primary"]


def test_fingerprint_changes_when_an_extra_source_changes(primary, extra):
    spec = ExtraSource(str(extra), classes=MAPPING, drop=("contempt",))
    before = load_dataset(str(primary), extra=[spec]).fingerprint()
    assert load_dataset(str(primary), extra=[spec]).fingerprint() == before
    Image.fromarray(np.full((48, 48), 7, dtype=np.uint8)).save(extra / "train" / "sad" / "0.png")
    assert load_dataset(str(primary), extra=[spec]).fingerprint() != before
    relabelled = ExtraSource(str(extra), classes={**MAPPING, "sad": "neutral"}, drop=("contempt",))
    assert load_dataset(str(primary), extra=[relabelled]).fingerprint() != before


@pytest.mark.parametrize(
    "classes, drop, pattern",
    [
        (MAPPING, (), r"extra source .*jaffe: class 'contempt' is not one of the primary's classes \(angry, .*\): "),
        ({**MAPPING, "contempt": "scorn"}, (), r"classes maps 'contempt' to 'scorn', not a class of the primary"),
        ({**MAPPING, "joyful": "happy"}, ("contempt",), r"classes maps 'joyful', which is not a class of this source"),
        (MAPPING, ("contempt", "anger"), r"drop lists 'anger', which is not a class of this source: expected one of"),
        ({**MAPPING, "contempt": "disgust"}, ("contempt",), r"class 'contempt' is both mapped .* and dropped"),
    ],
)
def test_bad_class_mappings_are_one_line_naming_class_and_source(primary, extra, classes, drop, pattern):
    with pytest.raises(FerTuneError, match=pattern) as error:
        load_dataset(str(primary), extra=[ExtraSource(str(extra), classes=classes, drop=drop)])
    assert "\n" not in str(error.value)


def test_a_primary_with_fewer_classes_needs_the_extras_other_classes_dropped(primary, extra):
    # The folder as the primary (contempt, joy, sad, surprised), FER2013 as the extra: its other classes must go.
    with pytest.raises(FerTuneError, match=r"fer\.csv: class 'angry' is not one of the primary's classes"):
        load_dataset(str(extra), extra=[ExtraSource(str(primary))])
    spec = ExtraSource(
        str(primary), classes={"happy": "joy", "surprise": "surprised"}, drop=("angry", "disgust", "fear", "neutral")
    )
    merged, alone = load_dataset(str(extra), extra=[spec]), load_dataset(str(extra))
    per_class = len(USAGES) // len(EMOTIONS)  # each FER2013 class has 7 images over its three splits
    added = {"joy": per_class, "sad": per_class, "surprised": per_class}
    assert merged.counts()["train"] == {name: n + added.get(name, 0) for name, n in alone.counts()["train"].items()}


def test_leaks_into_the_primarys_held_out_splits_are_reported_and_dropped_on_request(primary, extra):
    validation_image = load_dataset(str(primary)).validation.images[0].numpy()
    Image.fromarray(validation_image).save(extra / "train" / "joy" / "leak.png")
    spec = ExtraSource(str(extra), classes=MAPPING, drop=("contempt",))
    with pytest.warns(UserWarning, match=r"jaffe: 1 images match the primary's validation/test images \(1 validation"):
        kept = load_dataset(str(primary), extra=[spec])
    assert kept.summary()["sources"][1]["leaks"] == {"validation": 1, "test": 0, "dropped": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dropped = load_dataset(str(primary), extra=[dataclasses.replace(spec, drop_leaks=True)])
    assert len(dropped.train) == len(kept.train) - 1


def test_each_source_once(primary, extra):
    with pytest.raises(FerTuneError, match=r"extra source 1 '.*fer\.csv' is the primary source again"):
        load_dataset(str(primary), extra=[ExtraSource(str(primary))])
    twice = [ExtraSource(str(extra), drop=("contempt",)), ExtraSource(str(extra) + "/")]
    with pytest.raises(FerTuneError, match=r"extra source 2 .* is extra source 1 again"):
        load_dataset(str(primary), extra=twice)


SPACE = """\
name: merged
data:
  source: {primary}
  extra:
    - {{source: {extra}, classes: {{joy: happy, surprised: surprise}}, drop: [contempt]}}
space:
  lr: 0.01
"""


def test_space_file_with_extra_sources(primary, extra, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(primary=primary, extra=extra))
    space = load_space(path)
    assert space.data.extra[0].classes == {"joy": "happy", "surprised": "surprise"}
    data = space.data.load()
    assert (len(data.train), len(data.validation), len(data.test)) == (28 + 10, 14, 7)
    assert [s["role"] for s in data.summary()["sources"]] == ["primary", "extra"]
    with pytest.raises(FerTuneError, match="is the primary source again"):  # --data replaces the primary only
        space.data.load(str(extra))


def test_space_file_names_an_unknown_key_of_an_extra_source(primary, extra, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(primary=primary, extra=extra).replace("drop:", "dropped:"))
    with pytest.raises(FerTuneError) as error:
        load_space(path)
    assert str(error.value) == (
        f"{path}: data: extra[0].dropped: unknown key; expected one of: source, classes, drop, drop_leaks"
    )
