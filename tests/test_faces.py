"""The face search of `fer-tune serve` (serving/images.py) on a webcam-sized frame: the shrunk whole-frame
search against the cascade at full resolution, and the tracked search from the last frame's boxes.

The frame is the one bench/serve.py times: skimage.data.astronaut() scaled to 480x480 and centred on
a grey 640x480 frame (her face is about 95 pixels wide). No timings here: speed is the bench's.
"""

import numpy as np
import pytest
from PIL import Image
from skimage import data as photos

from fer_tune.data.haar import face_cascade
from fer_tune.serving.images import MIN_FACE, find_faces, track_face

FRAME = (640, 480)  # width, height


def frame_with(*portraits: tuple[int, int, int]) -> np.ndarray:
    """A grey 640x480 grayscale frame with the astronaut pasted at each (left, top, side)."""
    frame = Image.new("L", FRAME, 128)
    for left, top, side in portraits:
        portrait = Image.fromarray(photos.astronaut()).convert("L").resize((side, side), Image.Resampling.LANCZOS)
        frame.paste(portrait, (left, top))
    return np.asarray(frame)


WEBCAM = frame_with((80, 0, 480))  # the bench's frame


@pytest.fixture(scope="module")
def full_resolution() -> tuple[int, int, int, int]:
    """Her face as the cascade finds it on the frame itself, not shrunk (the reference; ~0.4 s)."""
    found = face_cascade().detectMultiScale(WEBCAM, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
    [box] = found  # one face
    return tuple(int(v) for v in box)


def assert_same_face(box, reference, pixels: int = 4, size: float = 0.1):
    """Centres within `pixels`, sides within `size` of the reference's (the cascade's sizes step by 10%)."""
    (x, y, w, h), (rx, ry, rw, rh) = box, reference
    assert abs((x + w / 2) - (rx + rw / 2)) <= pixels and abs((y + h / 2) - (ry + rh / 2)) <= pixels, (box, reference)
    assert abs(w - rw) <= size * rw and abs(h - rh) <= size * rh, (box, reference)


def test_the_shrunk_search_finds_the_face_the_full_resolution_search_finds(full_resolution):
    [box] = find_faces(WEBCAM)
    assert_same_face(box, full_resolution)


def test_the_tracked_search_finds_the_face_from_its_last_box(full_resolution):
    [last] = find_faces(WEBCAM)
    assert_same_face(track_face(WEBCAM, last), full_resolution)
    assert find_faces(WEBCAM, near=[last]) == [track_face(WEBCAM, last)]


def test_the_tracked_search_follows_a_face_that_moved():
    """She moved 20 pixels left and came 8% closer: her old box still finds her."""
    [last] = find_faces(WEBCAM)
    moved = frame_with((60, 0, 520))
    [now] = find_faces(moved)
    tracked = track_face(moved, last)
    assert tracked is not None
    assert_same_face(tracked, now)


@pytest.mark.parametrize(
    "hint",
    [
        (400, 300, 98, 98),  # somewhere else in the frame
        (230, 40, 30, 30),  # on her face, but far smaller than it
        (150, 0, 330, 330),  # around her face, but far larger than it
        (700, 500, 50, 50),  # off the picture: a frame of another size
    ],
)
def test_a_wrong_or_stale_hint_falls_back_to_the_whole_frame(full_resolution, hint):
    assert track_face(WEBCAM, hint) is None
    [box] = find_faces(WEBCAM, near=[hint])
    assert box == find_faces(WEBCAM)[0]
    assert_same_face(box, full_resolution)


def test_one_lost_face_of_several_hints_searches_the_whole_frame():
    [last] = find_faces(WEBCAM)
    assert find_faces(WEBCAM, near=[last, (400, 300, 98, 98)]) == find_faces(WEBCAM)


def test_a_photo_gets_every_face_largest_first_and_tracking_only_the_hinted_ones():
    """Two faces: the whole-frame search finds both, larger first; a hint for one tracks that one alone
    (the page leaves the hint out every FULL_SEARCH_EVERY frames to find the others)."""
    two = frame_with((0, 0, 360), (360, 120, 300))
    large, small = find_faces(two)
    assert large[2] > small[2] >= MIN_FACE
    assert large[0] < 360 <= small[0]  # the larger is the left one
    tracked = find_faces(two, near=[small])
    assert len(tracked) == 1
    assert_same_face(tracked[0], small, pixels=6)
