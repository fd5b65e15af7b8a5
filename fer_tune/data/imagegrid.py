"""A captioned grid of grayscale images as a PNG, drawn with Pillow.

Hand-written rather than matplotlib: the data layer stays importable without plotting
libraries (a bare GPU box has none), and a grid of small faces with one caption each is
all that `data inspect` and `data clean` draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

SCALE = 3  # 48 px faces drawn at 144 px: readable without blurring (nearest-neighbour)
CAPTION_HEIGHT = 16
MARGIN = 6


def image_grid(tiles: Sequence[np.ndarray], captions: Sequence[str], *, title: str = "", columns: int = 7):
    """A PIL image: each uint8 [H, W] tile scaled by SCALE with its caption below, `columns` per row."""
    from PIL import Image, ImageDraw, ImageFont  # lazy: importing fer_tune.data stays light

    columns = max(1, min(columns, len(tiles)))
    rows = max(1, -(-len(tiles) // columns))
    height, width = tiles[0].shape if len(tiles) else (48, 48)
    cell_w, cell_h = width * SCALE + MARGIN, height * SCALE + CAPTION_HEIGHT + MARGIN
    top = CAPTION_HEIGHT + MARGIN if title else MARGIN
    canvas = Image.new("L", (columns * cell_w + MARGIN, top + rows * cell_h), color=255)
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    if title:
        draw.text((MARGIN, MARGIN // 2), title[:120], fill=0, font=font)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x, y = MARGIN + (i % columns) * cell_w, top + (i // columns) * cell_h
        face = Image.fromarray(np.ascontiguousarray(tile, dtype=np.uint8)).resize(
            (width * SCALE, height * SCALE), Image.Resampling.NEAREST
        )
        canvas.paste(face, (x, y))
        draw.text((x, y + height * SCALE + 2), caption[:28], fill=0, font=font)
    return canvas


def save_image_grid(path: Path, *args, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(*args, **kwargs).save(path)
    return path
