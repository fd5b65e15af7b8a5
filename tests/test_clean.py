"""`data clean`: face screening on real photographs, near-duplicates, leaks, the output and its report.

The photographs ship with scikit-image: the astronaut's portrait, pictures with no face in them
(coffee, brick, grass) and a subset of LFW (100 tight face crops and 100 non-faces, 25 px).
"""

import json

import numpy as np
import pytest
from PIL import Image

import fer_tune.data.clean as clean
from fer_tune.cli.main import main
from fer_tune.constants import EMOTIONS
from fer_tune.data import load_dataset, write_fer2013_csv
from fer_tune.data.clean import clean_dataset, find_faces
from fer_tune.data.phash import HASH_DISTANCE, near_pairs, perceptual_hashes
from fer_tune.errors import FerTuneError

skimage_data = pytest.importorskip("skimage.data")

ASTRONAUT_FACE = (slice(55, 171), slice(167, 283))  # rows, columns: OpenCV's face box, 10 px more on each side
LFW_FACES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12]  # crops found with FACE_NEIGHBORS 2 to 4 and nearby min sizes


def to_48(picture: np.ndarray) -> np.ndarray:
    """Any photograph -> its centred square, grayscale, 48x48 uint8 (as FER2013 stores faces)."""
    if picture.dtype != np.uint8:
        picture = (picture * 255).astype(np.uint8)
    gray = np.asarray(Image.fromarray(picture).convert("L"))
    side = min(gray.shape)
    top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
    square = Image.fromarray(gray[top : top + side, left : left + side])
    return np.asarray(square.resize((48, 48), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """48 px grayscale: the astronaut's face, three pictures with no face, LFW's faces and non-faces."""
    lfw = skimage_data.lfw_subset()
    return {
        "astronaut": to_48(skimage_data.astronaut()[ASTRONAUT_FACE]),
        "no_faces": np.stack([to_48(skimage_data.coffee()), to_48(skimage_data.brick()), to_48(skimage_data.grass())]),
        "lfw_faces": np.stack([to_48(image) for image in lfw[:100]]),
        "lfw_non_faces": np.stack([to_48(image) for image in lfw[100:]]),
    }


def brightened(image: np.ndarray, by: int = 12) -> np.ndarray:
    return np.clip(image.astype(int) + by, 0, 255).astype(np.uint8)


def write_folder(root, images_by_file: dict[str, np.ndarray]) -> None:
    for name, image in images_by_file.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)


# --- the three steps -----------------------------------------------------------------------------


def test_screening_keeps_a_48px_face_crop_and_drops_pictures_without_a_face(photos):
    found = find_faces(np.stack([photos["astronaut"], *photos["no_faces"]]))
    assert found.tolist() == [True, False, False, False]


def test_screening_on_lfw_keeps_faces_and_drops_non_faces(photos):
    # Measured when tuned: 98 of the 100 faces found, none of the 100 non-faces (some are face parts).
    assert find_faces(photos["lfw_faces"]).sum() >= 95
    assert find_faces(photos["lfw_non_faces"]).sum() <= 3


def test_hashes_are_imagehash_phash(photos):
    imagehash = pytest.importorskip("imagehash")
    images = photos["lfw_faces"][:5]
    expected = [int(str(imagehash.phash(Image.fromarray(image))), 16) for image in images]
    assert perceptual_hashes(images).tolist() == expected
    assert perceptual_hashes(images[:0]).shape == (0,)


@pytest.mark.parametrize("numpy_has_bitwise_count", [True, False])
def test_near_pairs_match_a_brute_force_count(monkeypatch, numpy_has_bitwise_count):
    if not numpy_has_bitwise_count:  # numpy < 2.0: the byte-table popcount
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 50, dtype=np.uint64)
    hashes[10] = hashes[3] ^ np.uint64(0b1011)  # 3 bits apart
    hashes[40] = hashes[3]  # identical
    others = np.concatenate([hashes[[3, 7]] ^ np.uint64(1 << 60), rng.integers(0, 2**63, 5, dtype=np.uint64)])
    distance = lambda a, b: bin(int(a) ^ int(b)).count("1")  # noqa: E731
    within = {(i, j) for i in range(50) for j in range(i + 1, 50) if distance(hashes[i], hashes[j]) <= 4}
    across = {(i, j) for i in range(50) for j in range(7) if distance(hashes[i], others[j]) <= 4}
    assert {(3, 10), (3, 40), (10, 40)} <= within
    for expected, got in [
        (within, near_pairs(hashes, max_distance=4, block=8)),
        (across, near_pairs(hashes, others, max_distance=4, block=8)),
    ]:
        i, j, d = got
        assert set(zip(i.tolist(), j.tolist())) == expected
        assert d.tolist() == [distance(hashes[a], (others if expected is across else hashes)[b]) for a, b in zip(i, j)]


# --- whole datasets ------------------------------------------------------------------------------


@pytest.fixture
def face_folder(tmp_path, photos):
    """train: 5 faces + an exact and a brightened copy + coffee; validation: a copy of a train face + 2 faces."""
    faces = photos["lfw_faces"][LFW_FACES]
    files = {f"train/happy/{i}.png": faces[i] for i in range(3)}
    files |= {f"train/sad/{i}.png": faces[i] for i in range(3, 5)}
    files |= {
        "train/sad/5_exact.png": faces[0],
        "train/happy/5_bright.jpg": brightened(faces[1]),
        "train/happy/6_coffee.png": photos["no_faces"][0],
        "val/happy/0_leak.png": faces[0],
        "val/happy/1.png": faces[5],
        "val/sad/0.png": faces[6],
    }
    write_folder(tmp_path / "faces", files)
    return tmp_path / "faces"


def test_folder_is_cleaned_into_a_loadable_folder_with_a_report(face_folder, tmp_path):
    out = tmp_path / "clean"
    result = clean_dataset(face_folder, out)
    by_origin = {d["origin"]: d for d in result.dropped}
    assert {origin: d["reason"] for origin, d in by_origin.items()} == {
        "train/happy/6_coffee.png": "no_face",
        "train/happy/5_bright.jpg": "duplicate",  # near: a brightened JPEG copy
        "train/sad/5_exact.png": "duplicate",  # across classes too: one split is one pool
    }
    assert by_origin["train/happy/5_bright.jpg"]["detail"].endswith(" train/happy/1.png")
    assert by_origin["train/sad/5_exact.png"]["detail"] == "same hash as train/happy/0.png"
    assert [(d["origin"], d["split"]) for d in result.leaks] == [("val/happy/0_leak.png", "validation")]
    assert result.after == {"train": {"happy": 3, "sad": 2}, "validation": {"happy": 2, "sad": 1}}

    data = load_dataset(str(out), use_cache=False)
    assert data.counts() == result.after  # leaks are kept without --drop-leaks
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))[0] == "train/happy/0.png"
    assert (out / "val" / "happy" / "0_leak.png").read_bytes() == (face_folder / "val/happy/0_leak.png").read_bytes()

    report = json.loads((tmp_path / "clean_report" / "report.json").read_text())
    assert report["before"]["train"] == {"happy": 5, "sad": 3} and len(report["dropped"]) == 3
    markdown = (tmp_path / "clean_report" / "report.md").read_text()
    assert "| total | 8 → 5 | 3 → 3 |" in markdown and "`train/happy/6_coffee.png` (train, happy)" in markdown
    with Image.open(tmp_path / "clean_report" / "dropped.png") as grid:
        assert grid.format == "PNG" and grid.size[0] >= 3 * 48 * 3  # three tiles drawn at 3x


def test_drop_leaks_and_switches(face_folder, tmp_path):
    result = clean_dataset(face_folder, tmp_path / "out", drop_leaks=True, face_check=False, dedup=False)
    assert [d["reason"] for d in result.dropped] == ["leak"]  # coffee and the copies stay
    assert load_dataset(str(tmp_path / "out"), use_cache=False).counts()["validation"] == {"happy": 1, "sad": 1}
    assert result.after["train"] == {"happy": 5, "sad": 3}


def test_csv_is_cleaned_into_the_same_variant(tmp_path, photos):
    faces = photos["lfw_faces"][LFW_FACES]
    images = np.stack([photos["astronaut"], *faces[:7], faces[2], *photos["no_faces"], faces[8], faces[9], faces[0]])
    usages = ["Training"] * 12 + ["PublicTest", "PrivateTest", "PrivateTest"]
    labels = np.arange(len(images)) % len(EMOTIONS)
    write_fer2013_csv(tmp_path / "f.csv", images, labels, usages)
    rows = (tmp_path / "f.csv").read_text().splitlines()
    icml = ["emotion, Usage, pixels"] + [f"{r.split(',')[0]},{r.split(',')[2]},{r.split(',')[1]}" for r in rows[1:]]
    (tmp_path / "icml.csv").write_text("\n".join(icml) + "\n")

    result = clean_dataset(tmp_path / "icml.csv", tmp_path / "out" / "clean.csv")
    dropped = {d["origin"]: d["reason"] for d in result.dropped}
    assert dropped == {"line 10": "duplicate", "line 11": "no_face", "line 12": "no_face", "line 13": "no_face"}
    assert [d["origin"] for d in result.leaks] == ["line 16"]  # the test copy of line 3
    kept = [line for number, line in enumerate(icml, start=1) if f"line {number}" not in dropped]
    assert (tmp_path / "out" / "clean.csv").read_text().splitlines() == kept  # header and rows verbatim
    data = load_dataset(str(tmp_path / "out" / "clean.csv"), use_cache=False)
    assert {name: len(split) for name, split in data.splits().items()} == {"train": 8, "validation": 1, "test": 2}


def test_cli_prints_one_line_and_writes_the_report(face_folder, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "clean", str(face_folder), "--out", str(out), "--drop-leaks", "--hash-distance", "0"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "kept 8 of 11 images" in printed[0], printed
    assert "dropped: 1 no face, 1 duplicate, 1 leak" in printed[0]  # distance 0: the JPEG copy stays
    assert {p.name for p in (tmp_path / "cli_report").iterdir()} == {"report.md", "report.json", "dropped.png"}
    assert main(["data", "clean", str(face_folder), "--out", str(out)]) == 1  # exists: refused
    assert "exists already" in capsys.readouterr().err
    assert main(["data", "clean", str(face_folder), "--out", str(out), "--force", "--no-face-check"]) == 0
    assert (out / "train" / "happy" / "6_coffee.png").exists()


def test_cli_help_states_the_default_hash_distance(capsys):
    with pytest.raises(SystemExit):
        main(["data", "clean", "--help"])
    assert f"(default {HASH_DISTANCE})" in " ".join(capsys.readouterr().out.split())


# --- refusals, all before any image is decoded ---------------------------------------------------


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing source", r"nope: not found: expected a FER2013 CSV or an image folder"),
        ("csv to folder", r"--out .*out: the source is a CSV, so the output is one: expected a path ending in \.csv"),
        ("out exists", r"--out .*taken\.csv exists already: expected a new path, or --force to replace it"),
        ("replace a non-dataset", r"--out .*notes exists and is not an empty folder or a dataset folder"),
        ("out inside source", r"--out .*faces/clean is the source or inside it"),
        ("unwritable", r"--out .*a_file/x\.csv: cannot write in .*a_file"),
        ("distance", r"--hash-distance 17: expected 0 to 16 bits"),
    ],
)
def test_refusals_are_one_line_and_come_before_the_work(tmp_path, monkeypatch, case, pattern):
    def refuse(*args):
        raise AssertionError("decoded images before checking the paths")

    monkeypatch.setattr(clean, "read_catalog", refuse)
    (tmp_path / "f.csv").write_text("emotion,pixels,Usage\n")
    (tmp_path / "faces" / "train").mkdir(parents=True)
    (tmp_path / "taken.csv").write_text("x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "diary.txt").write_text("mine")
    (tmp_path / "a_file").write_text("x")
    source, out, options = {
        "missing source": ("nope", "out.csv", {}),
        "csv to folder": ("f.csv", "out", {}),
        "out exists": ("f.csv", "taken.csv", {}),
        "replace a non-dataset": ("faces", "notes", {"force": True}),
        "out inside source": ("faces", "faces/clean", {}),
        "unwritable": ("f.csv", "a_file/x.csv", {}),
        "distance": ("f.csv", "out.csv", {"hash_distance": 17}),
    }[case]
    with pytest.raises(FerTuneError, match=pattern) as error:
        clean_dataset(tmp_path / source, tmp_path / out, **options)
    assert "\n" not in str(error.value)
    assert (tmp_path / "notes" / "diary.txt").exists()


def test_an_output_that_would_not_load_is_not_written(tmp_path, photos):
    write_folder(tmp_path / "src", {"train/happy/0.png": photos["astronaut"], "train/sad/0.png": photos["no_faces"][1]})
    with pytest.raises(FerTuneError, match=r"would drop every image of train/sad.*--no-face-check"):
        clean_dataset(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_report").exists()
    images = np.stack([photos["astronaut"], photos["no_faces"][2]])
    write_fer2013_csv(tmp_path / "f.csv", images, [3, 3], ["Training", "PublicTest"])
    with pytest.raises(FerTuneError, match=r"f\.csv would drop every image of validation"):
        clean_dataset(tmp_path / "f.csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
