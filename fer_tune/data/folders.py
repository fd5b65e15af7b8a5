"""Read an image-folder dataset into a FerDataset of 48x48 grayscale uint8 images.

    >>> data = read_image_folders("Facial_emotion_images")  # Dzubak: happy/neutral/sad/surprise
    >>> data.classes
    ('happy', 'sad', 'surprise', 'neutral')

Layout: ROOT/train/<class>/*.png|*.jpg|*.jpeg, with optional ROOT/validation (or ROOT/val)
and ROOT/test laid out alike. Any image size or mode is converted to 48x48 grayscale.
Classes are ordered as in EMOTIONS when every class is an emotion name (so label 3 means
"happy" in every source), otherwise alphabetically. A missing validation folder is carved
from train per class with a fixed seed; a missing test folder gives test=None.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from fer_tune.constants import EMOTIONS, IMAGE_SIZE
from fer_tune.data.dataset import FerDataset, Split, stratified_holdout
from fer_tune.errors import FerTuneError

FORMAT_VERSION = 1  # bump when decoding changes, so cached folders are rebuilt
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}
LAYOUT = (
    "ROOT/train/<class>/*.png|*.jpg|*.jpeg, with optional ROOT/validation (or ROOT/val) "
    "and ROOT/test laid out the same way"
)

Layout = dict[str, dict[str, list[Path]]]  # split -> class folder name -> sorted image paths


def read_image_folders(root: str | Path, *, val_fraction: float = 0.1, seed: int = 0) -> FerDataset:
    """Decode every image under ROOT's split folders into a FerDataset."""
    root = Path(root)
    layout = scan_layout(root)
    classes = class_order(layout["train"])
    splits = {name: _load_split(class_files, classes) for name, class_files in layout.items()}
    notes = []
    if "validation" not in splits:
        images, labels = splits["train"]
        train_idx, val_idx = stratified_holdout(labels, val_fraction, seed, where=str(root / "train"))
        splits["train"] = images[train_idx], labels[train_idx]
        splits["validation"] = images[val_idx], labels[val_idx]
        notes.append(f"no validation folder: carved from train with val_fraction={val_fraction}, seed={seed}")
    if "test" not in splits:
        notes.append("no test folder")
    source = f"{root} ({'; '.join(notes)})" if notes else str(root)
    split = {
        name: Split(torch.from_numpy(images), torch.from_numpy(labels)) for name, (images, labels) in splits.items()
    }
    return FerDataset(split["train"], split["validation"], split.get("test"), classes, source)


def scan_layout(root: Path) -> Layout:
    """Find the split and class folders and their images; raise on any layout problem."""
    folders = {}
    for split, names in SPLIT_FOLDERS.items():
        present = [root / name for name in names if (root / name).is_dir()]
        if len(present) > 1:
            raise FerTuneError(
                f"{root} has both {present[0].name}/ and {present[1].name}/: expected one {split} folder"
            )
        if present:
            folders[split] = present[0]
    if "train" not in folders:
        raise FerTuneError(f"{root} has no train/ folder: expected the layout {LAYOUT}")
    layout = {split: _scan_split(folder) for split, folder in folders.items()}
    train_classes = set(layout["train"])
    for split, class_files in layout.items():
        missing, extra = sorted(train_classes - set(class_files)), sorted(set(class_files) - train_classes)
        if missing or extra:
            raise FerTuneError(
                f"{folders[split]} has different classes from {folders['train']}: "
                f"missing {missing}, extra {extra}; "
                f"expected the same class folders in every split"
            )
    return layout


def class_order(class_files: dict[str, list[Path]]) -> tuple[str, ...]:
    """EMOTIONS order when every class is an emotion name, else sorted names."""
    names = list(class_files)
    if all(name in EMOTIONS for name in names):
        return tuple(sorted(names, key=EMOTIONS.index))
    return tuple(sorted(names))


def folder_cache_key(root: str | Path, val_fraction: float, seed: int) -> str:
    """A cache key for `read_image_folders(root, ...)`: a hash of every image's relative
    path, size and mtime, plus the carve parameters where they matter (no validation folder)."""
    root = Path(root)
    layout = scan_layout(root)
    digest = hashlib.sha256(str(root.resolve()).encode())  # the cached `source` names this path
    for class_files in layout.values():
        for paths in class_files.values():
            for path in paths:
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    carve = "" if "validation" in layout else f"-val{val_fraction}-s{seed}"
    return f"folders-v{FORMAT_VERSION}-{digest.hexdigest()[:32]}{carve}"


def _scan_split(folder: Path) -> dict[str, list[Path]]:
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FerTuneError(f"{folder} has no class folders: expected {folder}/<class>/*.png|*.jpg|*.jpeg")
    class_files = {}
    for class_dir in class_dirs:
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise FerTuneError(f"class folder {class_dir} has no images: expected *.png, *.jpg or *.jpeg files")
        class_files[class_dir.name] = images
    return class_files


def split_files(class_files: dict[str, list[Path]], classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """One split's (image path, label) pairs in reading order: by class, then by file name."""
    return [(path, label) for label, name in enumerate(classes) for path in class_files[name]]


def load_images(paths: list[Path]) -> np.ndarray:
    """Decode image files to uint8 [N, 48, 48], in the order given."""
    return np.stack([_load_image(path) for path in paths])


def _load_split(class_files: dict[str, list[Path]], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    files = split_files(class_files, classes)
    images = load_images([path for path, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    return images, labels


def _load_image(path: Path) -> np.ndarray:
    """Decode one image to 48x48 grayscale uint8."""
    from PIL import Image  # lazy: importing fer_tune.data stays light

    try:
        with Image.open(path) as image:
            image = image.convert("L")
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                # Pillow widens the bilinear kernel when shrinking, so this antialiases.
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise FerTuneError(f"cannot read image {path}: {reason}") from None
