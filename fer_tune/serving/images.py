"""From an image file to a 48x48 grayscale face: read any size and mode, find the face, crop, resize."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from fer_tune.constants import IMAGE_SIZE
from fer_tune.errors import FerTuneError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # ships with opencv-python(-headless) 4.x


def load_image(path: str | Path, detect_faces: bool = False) -> tuple[np.ndarray, str | None]:
    """A 48x48 uint8 grayscale face from an image file of any size and mode, and a note if no face was found.

    Without a face box the largest centred square is used, so the face keeps its proportions.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FerTuneError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            gray = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise FerTuneError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None
    note = None
    box = find_face(gray) if detect_faces else None
    if detect_faces and box is None:
        note = "no face detected, using the whole image"
    if box is None:
        side = min(gray.shape)
        top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
        box = (left, top, side, side)
    x, y, w, h = box
    face = Image.fromarray(np.ascontiguousarray(gray[y : y + h, x : x + w]))
    return np.asarray(face.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)), note


def find_face(gray: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, width, height) found by OpenCV's bundled Haar cascade, or None."""
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    if len(faces) == 0:
        return None
    return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))


@functools.cache
def _cascade():
    import cv2

    return cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
