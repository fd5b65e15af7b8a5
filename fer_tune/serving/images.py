"""From an image (a file or uploaded bytes) to 48x48 grayscale faces: read any size and mode, find faces, crop.

    from fer_tune.serving.images import crop_face, decode_image, find_faces, load_image

    face, note = load_image("photo.jpg", detect_faces=True)       # uint8 [48, 48]; note if no face
    gray = decode_image(open("photo.jpg", "rb").read())           # uint8 [H, W], size-checked
    faces = [crop_face(gray, box) for box in find_faces(gray)]    # every face, largest first
    faces = find_faces(frame, near=faces_in_last_frame)           # a video frame: search around them first

Without a face box the largest centred square is used, so the face keeps its proportions.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_tune.constants import IMAGE_SIZE
from fer_tune.data.haar import face_cascade
from fer_tune.errors import FerTuneError

MAX_PIXELS = 40_000_000  # decoded size limit: a 12-50 MP phone photo is 36-200 MB as RGB; 40 MP admits the first
MAX_FILE_BYTES = 200 * 2**20  # an image file read by `predict`: a 50 MP TIFF is ~150 MB
DETECT_SIDE = 1024  # faces are searched on a copy this long at most: the cascade's time grows with the pixels
MIN_FACE = IMAGE_SIZE  # the smallest face `find_faces` looks for: a smaller one has fewer pixels than the model reads
CASCADE_WINDOW = 24  # the Haar cascade's window: the smallest face it finds (its minSize)
# Tracking a video frame's faces from their boxes in the frame before: a face 30 frames a second apart
# moves a fraction of its width and barely changes size, and a miss only costs a whole-frame search.
TRACK_PAD = 0.5  # a face is searched for up to half its width (height) beyond each side of its last box
TRACK_GROWTH = 1.5  # ... from its last size divided by this to its last size times this

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


class ImageTooLargeError(FerTuneError):
    """An image whose decoded size is over the pixel limit (a decompression bomb, or just too big)."""


def load_image(path: str | Path, detect_faces: bool = False) -> tuple[np.ndarray, str | None]:
    """A 48x48 uint8 grayscale face from an image file of any size and mode, and a note if no face was found."""
    path = Path(path)
    if path.is_dir():
        raise FerTuneError(f"{path}: is a folder; expected an image file (JPEG, PNG, ...)")
    if not path.exists():
        raise FerTuneError(f"{path}: no such image file")
    if not path.is_file():
        raise FerTuneError(f"{path}: not a regular file; expected an image file (JPEG, PNG, ...)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise FerTuneError(
            f"{path}: {path.stat().st_size:,} bytes; expected an image file of at most {MAX_FILE_BYTES:,}"
        )
    try:
        gray = decode_image(path.read_bytes())  # the same checks as an upload: the pixel limit before decoding
    except ImageTooLargeError as err:
        raise FerTuneError(f"{path}: {err}") from None
    except FerTuneError as err:
        reason = str(err).removeprefix("not a readable image (").removesuffix(")")
        raise FerTuneError(f"{path}: not a readable image ({reason})") from None
    except OSError as err:
        raise FerTuneError(f"{path}: cannot read it ({err.strerror or err})") from None
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


def find_faces(gray: np.ndarray, near: Sequence[Box] = (), max_side: int = DETECT_SIDE) -> list[Box]:
    """Every frontal face at least MIN_FACE pixels wide (x, y, width, height in `gray`'s pixels), largest first.

    `near`: the faces' boxes in the previous frame of a video (the page's webcam sends them). Each
    is looked for around its box only (`track_face`: ~1-5 ms on a 640x480 frame instead of ~40-80);
    when one of them is not found there, or there is no `near`, the whole picture is searched,
    which also finds faces that have come into view since.
    """
    if near:
        tracked = [track_face(gray, box) for box in near]
        if None not in tracked:
            return sorted(set(tracked), key=lambda f: f[2] * f[3], reverse=True)
    # At least halved, so the cascade's 24-pixel window spans MIN_FACE pixels of the picture: the smallest
    # face the model can read is still found, and the search costs a quarter of a full-size one (a 640x480
    # frame: 51 ms of CPU instead of 177, measured). Any more and a 48-95 pixel face is missed (the bench's
    # webcam frame has a 98-pixel face: a quarter-size search misses it). At most `max_side` long: a 12 MP
    # photo takes seconds at full size.
    scale = max(MIN_FACE / CASCADE_WINDOW, max(gray.shape) / max_side)
    return _detect_scaled(gray, scale)


def track_face(gray: np.ndarray, box: Box) -> Box | None:
    """The face nearest `box` (its last place) within TRACK_PAD of it and TRACK_GROWTH of its size, or None.

    Searched on a copy of that region shrunk so the cascade's window spans the smallest size sought
    (never under MIN_FACE): about 72 pixels square whatever the face's size, so it is cheap.
    """
    x, y, w, h = box
    left, top = max(0, round(x - TRACK_PAD * w)), max(0, round(y - TRACK_PAD * h))
    right, bottom = min(gray.shape[1], round(x + w + TRACK_PAD * w)), min(gray.shape[0], round(y + h + TRACK_PAD * h))
    if right <= left or bottom <= top:
        return None  # the box is off the picture: a stale hint
    side = max(w, h)
    smallest = max(MIN_FACE, side / TRACK_GROWTH)
    largest = max(smallest, side * TRACK_GROWTH)
    faces = _detect_scaled(gray[top:bottom, left:right], smallest / CASCADE_WINDOW, largest / smallest)
    if not faces:
        return None
    centre = (x + w / 2 - left, y + h / 2 - top)
    fx, fy, fw, fh = min(faces, key=lambda f: (f[0] + f[2] / 2 - centre[0]) ** 2 + (f[1] + f[3] / 2 - centre[1]) ** 2)
    return _clip((fx + left, fy + top, fw, fh), gray.shape)


def _detect_scaled(gray: np.ndarray, scale: float, max_ratio: float | None = None) -> list[Box]:
    """Faces found on `gray` shrunk by `scale` (so the smallest found is CASCADE_WINDOW * scale pixels wide), at
    most `max_ratio` times that, in `gray`'s pixels, largest first."""
    import cv2

    size = (round(gray.shape[1] / scale), round(gray.shape[0] / scale))
    if min(size) < CASCADE_WINDOW:
        return []  # no room for the smallest face sought
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    largest = None if max_ratio is None else round(CASCADE_WINDOW * max_ratio)
    return [_clip(tuple(round(v * scale) for v in box), gray.shape) for box in _detect(small, largest)]


def _detect(gray: np.ndarray, largest: int | None = None) -> list[Box]:
    window = (CASCADE_WINDOW, CASCADE_WINDOW)
    cap = (largest, largest) if largest else (0, 0)  # OpenCV's "no limit" is an empty size
    faces = face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=window, maxSize=cap)
    return sorted((tuple(int(v) for v in face) for face in faces), key=lambda f: f[2] * f[3], reverse=True)


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    """A box scaled back from the shrunk copy, kept inside the image (rounding can overshoot by a pixel)."""
    x, y, w, h = box
    x, y = min(x, shape[1] - 1), min(y, shape[0] - 1)
    return x, y, min(w, shape[1] - x), min(h, shape[0] - y)
