"""OpenCV's bundled frontal-face Haar cascade, named and loaded here only.

Cleaning a dataset (fer_tune.data.clean) and serving a photograph (fer_tune.serving.images) both
find faces with it, each with its own tuned search settings.
"""

from __future__ import annotations

import functools

HAAR_CASCADE = "haarcascade_frontalface_default.xml"  # ships with opencv-python(-headless) 4.x


@functools.cache
def face_cascade():
    """The cascade, loaded once per process (cv2 is imported here, on first use: fer_tune.data stays light)."""
    import cv2

    return cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
