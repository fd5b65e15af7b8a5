"""Data loaders: FER2013 CSV variants, image folders, the cache, dispatch and EDA.

Every bad-input test checks that the one-line message names the file, the line or
column, and what was expected. The FER2013 parser is checked against torchvision's.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fer_tune.data
import fer_tune.data.fer2013 as fer2013
from fer_tune.constants import EMOTIONS, NUM_PIXELS
from fer_tune.data import load_dataset, write_fer2013_csv
from fer_tune.data.cache import cache_dir, cached_dataset
from fer_tune.data.describe import inspect_dataset
from fer_tune.data.fer2013 import read_fer2013_csv
from fer_tune.data.folders import read_image_folders
from fer_tune.errors import FerTuneError

USAGES = ["Training"] * 28 + ["PublicTest"] * 7 + ["PrivateTest"] * 7  # block order, as in fer2013.csv
ZEROS = " ".join(["0"] * NUM_PIXELS)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_TUNE_CACHE", str(tmp_path / "cache"))


def random_faces(n, seed=0):
    """n random uint8 images and labels cycling through all 7 classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), np.arange(n) % len(EMOTIONS)


def pixel_text(image):
    return " ".join(map(str, image.ravel().tolist()))


def write_variant(path, variant, images, labels, usages):
    """Write the fer2013.csv, icml_face_data.csv or Kaggle train.csv format."""
    if variant == "fer2013":
        return write_fer2013_csv(path, images, labels, usages)
    if variant == "icml":  # leading spaces in the header, Usage before pixels
        rows = [f"{y},{u},{pixel_text(x)}" for x, y, u in zip(images, labels, usages)]
        path.write_text("emotion, Usage, pixels\n" + "\n".join(rows) + "\n")
    elif variant == "train":  # Kaggle quotes the pixels field
        rows = [f'{y},"{pixel_text(x)}"' for x, y in zip(images, labels)]
        path.write_text("emotion,pixels\n" + "\n".join(rows) + "\n")


def split_counts(data):
    return {name: len(split) for name, split in data.splits().items()}


# --- FER2013 CSV ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["fer2013", "icml"])
def test_csv_with_usage_round_trips(tmp_path, variant):
    images, labels = random_faces(len(USAGES))
    path = tmp_path / f"{variant}.csv"
    write_variant(path, variant, images, labels, USAGES)
    data = load_dataset(str(path))
    assert data.classes == EMOTIONS and data.source == str(path)
    assert split_counts(data) == {"train": 28, "validation": 7, "test": 7}
    for split, rows in [(data.train, slice(0, 28)), (data.validation, slice(28, 35)), (data.test, slice(35, 42))]:
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert torch.equal(split.images, torch.from_numpy(images[rows]))
        assert torch.equal(split.labels, torch.from_numpy(labels[rows]))


def test_no_private_test_rows_means_no_test_split(tmp_path):
    images, labels = random_faces(35)
    write_fer2013_csv(tmp_path / "f.csv", torch.from_numpy(images), torch.from_numpy(labels), USAGES[:35])
    data = read_fer2013_csv(tmp_path / "f.csv")
    assert data.test is None and split_counts(data) == {"train": 28, "validation": 7}


def test_kaggle_train_csv_carves_a_stratified_validation_split(tmp_path):
    images, labels = random_faces(70)
    path = tmp_path / "train.csv"
    write_variant(path, "train", images, labels, None)
    data = read_fer2013_csv(path, val_fraction=0.2, seed=1)
    assert data.test is None and "train.csv has no test split" in data.source
    assert data.train.class_counts(7) == [8] * 7 and data.validation.class_counts(7) == [2] * 7
    everything = torch.cat([data.train.images, data.validation.images]).reshape(70, -1)
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, images.reshape(70, -1)))
    assert read_fer2013_csv(path, val_fraction=0.2, seed=1).fingerprint() == data.fingerprint()
    assert read_fer2013_csv(path, val_fraction=0.2, seed=2).fingerprint() != data.fingerprint()


def test_kaggle_test_csv_alone_is_refused(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text(f'pixels\n"{ZEROS}"\n')
    with pytest.raises(FerTuneError, match=r"test\.csv has no 'emotion' column.*no labels.*not usable for train"):
        load_dataset(str(path))


@pytest.mark.parametrize("variant, file_name", [("fer2013", "fer2013.csv"), ("icml", "icml_face_data.csv")])
def test_parser_matches_torchvision(tmp_path, monkeypatch, variant, file_name):
    tv_fer2013 = pytest.importorskip("torchvision.datasets.fer2013")
    # Our small file, not Kaggle's: skip torchvision's md5 check.
    monkeypatch.setattr(tv_fer2013, "check_integrity", lambda *args, **kwargs: True)
    images, labels = random_faces(len(USAGES), seed=3)
    (tmp_path / "fer2013").mkdir()
    write_variant(tmp_path / "fer2013" / file_name, variant, images, labels, USAGES)
    ours = read_fer2013_csv(tmp_path / "fer2013" / file_name)
    for split, expected in [("train", [ours.train]), ("test", [ours.validation, ours.test])]:
        reference = tv_fer2013.FER2013(str(tmp_path), split=split)  # its "test" is PublicTest + PrivateTest
        tv_images = torch.stack([torch.from_numpy(np.array(image)) for image, _ in reference])
        tv_labels = torch.tensor([label for _, label in reference])
        assert torch.equal(tv_images, torch.cat([s.images for s in expected]))
        assert torch.equal(tv_labels, torch.cat([s.labels for s in expected]))


def _row(label="0", pixels=ZEROS, usage="Training"):
    return f"{label},{pixels},{usage}"


GOOD = [_row(), _row(usage="PublicTest")]
BAD_CSVS = {  # name: (rows after the header, pattern the one-line message must match)
    "short row": (
        [GOOD[0], _row(pixels=" ".join(["0"] * 2303))],
        r"bad\.csv line 3: column 'pixels' has 2303 values, expected 2304",
    ),
    "long row": (
        [GOOD[0], _row(pixels=ZEROS + " 0")],
        r"bad\.csv line 3: column 'pixels' has 2305 values, expected 2304",
    ),
    "non-numeric": (
        [GOOD[0], _row(pixels="abc" + ZEROS[1:])],
        r"bad\.csv line 3: column 'pixels' value 'abc' \(number 1\) is not an integer",
    ),
    "float pixel": (
        [GOOD[0], _row(pixels="1.5" + ZEROS[1:])],
        r"bad\.csv line 3: column 'pixels' value '1\.5' .*not an integer",
    ),
    "pixel 256": (
        [GOOD[0], _row(pixels=ZEROS[:-1] + "256")],
        r"bad\.csv line 3: column 'pixels' value 256 \(number 2304\) is outside 0\.\.255",
    ),
    "pixel -1": (
        [GOOD[0], _row(pixels="-1" + ZEROS[1:])],
        r"bad\.csv line 3: column 'pixels' value -1 \(number 1\) is outside 0\.\.255",
    ),
    "label 7": (
        [GOOD[0], _row(label="7")],
        r"bad\.csv line 3: column 'emotion' value '7' is not a label: expected an integer 0\.\.6",
    ),
    "label 2.0": (
        [GOOD[0], _row(label="2.0")],
        r"bad\.csv line 3: column 'emotion' value '2\.0' .*expected an integer 0\.\.6",
    ),
    "unknown usage": (
        [GOOD[0], _row(usage="Validation")],
        r"bad\.csv line 3: column 'Usage' value 'Validation' is unknown: "
        r"expected one of Training, PublicTest, PrivateTest",
    ),
    "field count": ([GOOD[0], "0," + ZEROS], r"bad\.csv line 3: found 2 comma-separated fields, expected 3"),
    "no validation": (
        [GOOD[0], GOOD[0]],
        r"bad\.csv has no rows with Usage 'PublicTest', so the validation split is empty",
    ),
    "no train": ([GOOD[1], GOOD[1]], r"bad\.csv has no rows with Usage 'Training', so the train split is empty"),
}


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csv_row_is_named(tmp_path, case):
    rows, pattern = BAD_CSVS[case]
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with pytest.raises(FerTuneError, match=pattern) as error:
        read_fer2013_csv(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("", r"bad\.csv is empty: expected a header line 'emotion,pixels,Usage'"),
        ("emotion,pixels,Usage\n", r"bad\.csv has a header but no data rows"),
        (
            "emotion,Usage\n0,Training\n",
            r"bad\.csv is missing required column\(s\) 'pixels' \(columns found: 'emotion', 'Usage'\)",
        ),
        (
            f"label,image\n0,{ZEROS}\n",
            r"bad\.csv is missing required column\(s\) 'emotion', 'pixels' \(columns found: 'label', 'image'\)",
        ),
    ],
)
def test_bad_csv_file_is_named(tmp_path, text, pattern):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(FerTuneError, match=pattern):
        read_fer2013_csv(tmp_path / "bad.csv")


def test_bad_row_in_a_later_chunk_gets_its_own_line_number(tmp_path, monkeypatch):
    monkeypatch.setattr(fer2013, "CHUNK_ROWS", 4)
    rows = [_row()] * 9 + [_row(pixels=ZEROS[:-1] + "999")] + [_row(usage="PublicTest")]
    (tmp_path / "bad.csv").write_text("emotion,pixels,Usage\n\n" + "\n".join(rows) + "\n")  # a blank line 2
    with pytest.raises(FerTuneError, match=r"bad\.csv line 12: column 'pixels' value 999"):
        read_fer2013_csv(tmp_path / "bad.csv")


def test_rows_keep_their_line_numbers_and_copy_verbatim(tmp_path):
    rows = [_row(), "", _row(label="3", usage="PublicTest"), _row(label="5", usage="PrivateTest")]
    (tmp_path / "f.csv").write_bytes(("emotion,pixels,Usage\r\n" + "\r\n".join(rows) + "\r\n").encode())
    parsed = fer2013.parse_fer2013_csv(tmp_path / "f.csv")
    assert parsed.lines.tolist() == [2, 4, 5]  # as error messages count: header = line 1, blank lines too
    assert parsed.splits.tolist() == ["train", "validation", "test"] and parsed.labels.tolist() == [0, 3, 5]
    fer2013.copy_fer2013_rows(tmp_path / "f.csv", tmp_path / "g.csv", {2, 5})
    expected = "emotion,pixels,Usage\r\n" + rows[0] + "\r\n" + rows[3] + "\r\n"
    assert (tmp_path / "g.csv").read_bytes() == expected.encode()  # line endings kept


def test_writer_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_fer2013_csv(tmp_path / "x.csv", np.zeros((2, 48, 48), np.float32), [0, 1], ["Training"] * 2)
    with pytest.raises(ValueError, match="unknown usages"):
        write_fer2013_csv(tmp_path / "x.csv", np.zeros((1, 48, 48), np.uint8), [0], ["Train"])


# --- image folders ---------------------------------------------------------------------------


def make_images(folder, count, *, size=48, mode="L", ext="png", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(count):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(array, mode).save(folder / f"{i:03d}.{ext}")
        arrays.append(array)
    return arrays


def test_folders_decode_any_size_and_mode_and_accept_val(tmp_path):
    happy = make_images(tmp_path / "train" / "happy", 3)
    make_images(tmp_path / "train" / "sad", 2, size=64, mode="RGB", ext="jpg")
    make_images(tmp_path / "val" / "happy", 1, ext="jpeg", size=100)
    make_images(tmp_path / "val" / "sad", 1, mode="RGB")
    data = load_dataset(str(tmp_path))
    assert data.classes == ("happy", "sad") and data.test is None
    assert split_counts(data) == {"train": 5, "validation": 2}
    assert data.train.images.shape == (5, 48, 48) and data.train.labels.tolist() == [0, 0, 0, 1, 1]
    assert torch.equal(data.train.images[:3], torch.from_numpy(np.stack(happy)))  # 48x48 PNG: lossless


def test_folder_classes_follow_emotions_order_else_sorted(tmp_path):
    for name in ["surprise", "happy", "neutral", "sad"]:  # Dzubak's four classes
        make_images(tmp_path / "faces" / "train" / name, 2)
        make_images(tmp_path / "faces" / "test" / name, 1)
    assert read_image_folders(tmp_path / "faces").classes == ("happy", "sad", "surprise", "neutral")
    for name in ["happy", "cat"]:
        make_images(tmp_path / "pets" / "train" / name, 2)
    assert read_image_folders(tmp_path / "pets").classes == ("cat", "happy")


def test_folders_without_validation_carve_it_per_class(tmp_path):
    for name in ["angry", "fear"]:
        make_images(tmp_path / "train" / name, 10)
    data = read_image_folders(tmp_path, val_fraction=0.2, seed=0)
    assert data.train.class_counts(2) == [8, 8] and data.validation.class_counts(2) == [2, 2]
    assert "carved from train" in data.source
    assert read_image_folders(tmp_path, val_fraction=0.2, seed=0).fingerprint() == data.fingerprint()


@pytest.mark.parametrize(
    "setup, pattern",
    [
        ("corrupt", r"cannot read image .*train/happy/000\.png"),
        ("empty class", r"class folder .*train/sad has no images"),
        ("no train", r"has no train/ folder: expected the layout ROOT/train/<class>/"),
        ("class mismatch", r"test has different classes from .*train: missing \['sad'\], extra \['angry'\]"),
        ("both val names", r"has both validation/ and val/"),
    ],
)
def test_bad_folders_are_named(tmp_path, setup, pattern):
    if setup != "no train":
        make_images(tmp_path / "train" / "happy", 1)
        make_images(tmp_path / "train" / "sad", 1)
    if setup == "corrupt":
        (tmp_path / "train" / "happy" / "000.png").write_bytes(b"not a png")
    elif setup == "empty class":
        for image in (tmp_path / "train" / "sad").iterdir():
            image.unlink()
    elif setup == "no train":
        make_images(tmp_path / "training" / "happy", 1)
    elif setup == "class mismatch":
        make_images(tmp_path / "test" / "happy", 1)
        make_images(tmp_path / "test" / "angry", 1)
    elif setup == "both val names":
        make_images(tmp_path / "validation" / "happy", 1)
        make_images(tmp_path / "val" / "happy", 1)
    with pytest.raises(FerTuneError, match=pattern) as error:
        load_dataset(str(tmp_path))
    assert "\n" not in str(error.value)


# --- cache and dispatch ---------------------------------------------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("parsed again instead of loading the cache")


def test_second_csv_load_comes_from_the_cache(tmp_path, monkeypatch):
    images, labels = random_faces(len(USAGES))
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    first = load_dataset(str(tmp_path / "f.csv"))
    assert len(list(cache_dir().glob("*.pt"))) == 1
    monkeypatch.setattr(fer_tune.data, "read_fer2013_csv", _refuse)
    second = load_dataset(str(tmp_path / "f.csv"))
    assert second.fingerprint() == first.fingerprint() and second.source == first.source
    assert second.mean == first.mean and split_counts(second) == split_counts(first)


def test_changed_csv_is_parsed_again(tmp_path):
    images, labels = random_faces(len(USAGES))
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    first = load_dataset(str(tmp_path / "f.csv"))
    write_fer2013_csv(tmp_path / "f.csv", 255 - images, labels, USAGES)
    assert load_dataset(str(tmp_path / "f.csv")).fingerprint() != first.fingerprint()


def test_second_folder_load_comes_from_the_cache(tmp_path, monkeypatch):
    make_images(tmp_path / "faces" / "train" / "happy", 4)
    make_images(tmp_path / "faces" / "train" / "sad", 4)
    first = load_dataset(str(tmp_path / "faces"))
    monkeypatch.setattr(fer_tune.data, "read_image_folders", _refuse)
    assert load_dataset(str(tmp_path / "faces")).fingerprint() == first.fingerprint()


def test_corrupt_cache_file_is_rebuilt(tmp_path):
    images, labels = random_faces(len(USAGES))
    build = lambda: read_fer2013_csv(tmp_path / "f.csv")  # noqa: E731
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    first = cached_dataset("some-key", build)
    (cache_file,) = cache_dir().glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])  # truncated, as by a killed writer
    assert cached_dataset("some-key", build).fingerprint() == first.fingerprint()
    assert cached_dataset("some-key", _refuse).fingerprint() == first.fingerprint()  # rewritten whole


def test_use_cache_false_writes_nothing(tmp_path):
    images, labels = random_faces(len(USAGES))
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    load_dataset(str(tmp_path / "f.csv"), use_cache=False)
    assert not cache_dir().exists()


def test_dispatch_errors(tmp_path):
    expected = r"expected 'synthetic', a FER2013 CSV file or an image folder"
    with pytest.raises(FerTuneError, match=r"data source 'nope\.csv' not found: " + expected):
        load_dataset("nope.csv")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FerTuneError, match=r"notes\.txt' is not a \.csv file or a folder"):
        load_dataset(str(tmp_path / "notes.txt"))


def test_importing_data_leaves_pil_and_matplotlib_unloaded():
    code = "import sys, fer_tune.data; print(sorted({'PIL', 'matplotlib'} & set(sys.modules)))"
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)
    assert result.stdout.strip() == "[]"


# --- EDA ------------------------------------------------------------------------------------


def test_inspect_writes_average_faces_png(tmp_path):
    images, labels = random_faces(len(USAGES))
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    data = load_dataset(str(tmp_path / "f.csv"))
    out = tmp_path / "eda" / "faces.png"
    summary = inspect_dataset(data, out)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 100
    assert summary == data.summary()
    assert sum(summary["splits"]["train"].values()) == 28
    assert summary["splits"]["test"] == dict(zip(EMOTIONS, np.bincount(labels[35:], minlength=7).tolist()))


def test_summary_names_its_source_with_counts_and_fingerprint(tmp_path):
    images, labels = random_faces(len(USAGES))
    write_fer2013_csv(tmp_path / "f.csv", images, labels, USAGES)
    data = load_dataset(str(tmp_path / "f.csv"))
    (source,) = data.summary()["sources"]
    assert source == {
        "source": str(tmp_path / "f.csv"),
        "role": "primary",
        "fingerprint": data.fingerprint(),
        "splits": data.counts(),
    }
    assert sum(source["splits"]["validation"].values()) == 7
