"""From an image (a file or uploaded bytes) to 48x48 grayscale faces: read any size and mode, find faces, crop.

    from fer_tune.serving.images import crop_face, decode_image, find_faces, load_image

    face, note = load_image("photo.jpg", detect_faces=True)       # uint8 [48, 48]; note if no face
    gray = decode_image(open("photo.jpg", "rb").read())           # uint8 [H, W], size-checked
    faces = [crop_face(gray, box) for box in find_faces(gray)]    # every face, largest first

Without a face box the largest centred square is used, so the face keeps its proportions.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path

import numpy as np

from fer_tune.constants import IMAGE_SIZE
from fer_tune.data.haar import face_cascade
from fer_tune.errors import FerTuneError

MAX_PIXELS = 40_000_000  # decoded size limit: a 12-50 MP phone photo is 36-200 MB as RGB; 40 MP admits the first
DETECT_SIDE = 1024  # faces are searched on a copy this long at most: the cascade's time grows with the pixels
MIN_FACE = IMAGE_SIZE  # the smallest face `find_faces` looks for: a smaller one has fewer pixels than the model reads
CASCADE_WINDOW = 24  # the Haar cascade's window: the smallest face it finds (its minSize)

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


class ImageTooLargeError(FerTuneError):
    """An image whose decoded size is over the pixel limit (a decompression bomb, or just too big)."""


def load_image(path: str | Path, detect_faces: bool = False) -> tuple[np.ndarray, str | None]:
    """A 48x48 uint8 grayscale face from an image file of any size and mode, and a note if no face was found."""
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
    return crop_face(gray, box), note


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 grayscale [H, W] from the bytes of an image file, upright (EXIF orientation applied).

    Raises FerTuneError for bytes that are not an image, ImageTooLargeError for more than
    `max_pixels` pixels; the size is checked from the header, before anything is decoded.
    """
    from PIL import ImageOps, UnidentifiedImageError

    if not data:
        raise FerTuneError("the file is empty")
    try:
        image = _open_checked(data)
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise ImageTooLargeError(f"{image.width}x{image.height} pixels is over the limit of {max_pixels:,}")
        return np.asarray(ImageOps.exif_transpose(image).convert("L"))
    except UnidentifiedImageError:
        raise FerTuneError("not an image: no format Pillow reads (JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except (OSError, ValueError, SyntaxError) as err:  # SyntaxError: PIL's broken headers
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FerTuneError(f"not a readable image ({reason})") from None


_OPEN_LOCK = threading.Lock()  # warning filters are process-wide: one Image.open under them at a time


def _open_checked(data: bytes):
    """PIL's lazy Image.open (it reads the header only), with its decompression-bomb warning made an error."""
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
            raise ImageTooLargeError(f"a decompression bomb ({str(err).splitlines()[0]})") from None


def crop_face(gray: np.ndarray, box: Box | None) -> np.ndarray:
    """The 48x48 uint8 face in `box` (Lanczos), or the largest centred square where there is no box."""
    from PIL import Image

    x, y, w, h = box if box is not None else centre_square(gray)
    face = Image.fromarray(np.ascontiguousarray(gray[y : y + h, x : x + w]))
    return np.asarray(face.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def centre_square(gray: np.ndarray) -> Box:
    """The largest square centred in the image: what is classified where no face is found."""
    side = min(gray.shape)
    top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
    return left, top, side, side


def find_face(gray: np.ndarray) -> Box | None:
    """The largest frontal face (x, y, width, height) found by OpenCV's bundled Haar cascade, or None."""
    faces = _detect(gray)
    return faces[0] if faces else None


def find_faces(gray: np.ndarray, max_side: int = DETECT_SIDE) -> list[Box]:
    """Every frontal face at least MIN_FACE pixels wide (x, y, width, height in `gray`'s pixels), largest first.

    Searched on a shrunk copy: at least halved, so the cascade's 24-pixel window spans MIN_FACE
    pixels of the picture (a 640x480 frame: 51 ms of CPU instead of 177, measured), and at most
    `max_side` long (a 12 MP photo takes seconds at full size).
    """
    import cv2

    scale = max(MIN_FACE / CASCADE_WINDOW, max(gray.shape) / max_side)
    size = (round(gray.shape[1] / scale), round(gray.shape[0] / scale))
    if min(size) < CASCADE_WINDOW:
        return []  # no room for a face of MIN_FACE pixels
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return [_clip(tuple(round(v * scale) for v in box), gray.shape) for box in _detect(small)]


def _detect(gray: np.ndarray) -> list[Box]:
    window = (CASCADE_WINDOW, CASCADE_WINDOW)
    faces = face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=window)
    return sorted((tuple(int(v) for v in face) for face in faces), key=lambda f: f[2] * f[3], reverse=True)


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    """A box scaled back from the shrunk copy, kept inside the image (rounding can overshoot by a pixel)."""
    x, y, w, h = box
    x, y = min(x, shape[1] - 1), min(y, shape[0] - 1)
    return x, y, min(w, shape[1] - x), min(h, shape[0] - y)
