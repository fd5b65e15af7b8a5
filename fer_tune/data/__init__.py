"""Load FER data from any supported source into one FerDataset.

    >>> from fer_tune.data import load_dataset
    >>> data = load_dataset("data/fer2013.csv")   # ~3 s the first time, ~0.5 s cached
    >>> data.summary()["splits"].keys()
    dict_keys(['train', 'validation', 'test'])

Sources: "synthetic" (generated faces, no download), a FER2013 CSV (fer2013.csv,
icml_face_data.csv or Kaggle's train.csv), or an image folder (ROOT/train/<class>/*.png).
`extra` sources join train (fer_tune.data.sources); `fer_tune.data.clean` cleans a source.
Importing this package loads torch and numpy only; PIL and matplotlib load on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fer_tune.data.cache import cached_dataset
from fer_tune.data.dataset import FerDataset, Split
from fer_tune.data.fer2013 import fer2013_cache_key, read_fer2013_csv, write_fer2013_csv
from fer_tune.data.folders import folder_cache_key, read_image_folders
from fer_tune.data.formats import CSV, source_kind
from fer_tune.data.sources import ExtraSource, check_distinct, merge_sources
from fer_tune.errors import FerTuneError

__all__ = ["ExtraSource", "FerDataset", "Split", "load_dataset", "write_fer2013_csv"]

EXPECTED_SOURCES = "expected 'synthetic', a FER2013 CSV file or an image folder"


def load_dataset(
    source: str = "synthetic",
    *,
    n: int = 30000,
    seed: int = 0,
    val_fraction: float = 0.1,
    use_cache: bool = True,
    extra: Sequence[ExtraSource] = (),
) -> FerDataset:
    """Load `source` ("synthetic", a .csv file or an image folder), from the cache when possible.

    `n` and `seed` size and seed the synthetic set; `seed` and `val_fraction` also carve a
    validation split from train where the source has none. Every image of each `extra` source
    joins train, relabelled onto `source`'s classes (see fer_tune.data.sources).
    """
    if extra:
        check_distinct(source, extra)
        kwargs = {"n": n, "seed": seed, "val_fraction": val_fraction, "use_cache": use_cache}
        loaded = [(spec, load_dataset(spec.source, **kwargs)) for spec in extra]
        return merge_sources(load_dataset(source, **kwargs), loaded)
    if source == "synthetic":
        from fer_tune.data.synthetic import SYNTHETIC_VERSION, synthetic_dataset  # lazy: written separately

        build = lambda: synthetic_dataset(n=n, seed=seed)  # noqa: E731
        return cached_dataset(f"synthetic-v{SYNTHETIC_VERSION}-n{n}-s{seed}", build) if use_cache else build()

    path = Path(source).expanduser()
    if source_kind(path, f"data source '{source}'", EXPECTED_SOURCES) == CSV:
        read, cache_key = read_fer2013_csv, fer2013_cache_key
    else:
        read, cache_key = read_image_folders, folder_cache_key
    build = lambda: read(path, val_fraction=val_fraction, seed=seed)  # noqa: E731
    try:
        return cached_dataset(cache_key(path, val_fraction, seed), build) if use_cache else build()
    except OSError as exc:  # unreadable file or folder; cache write failures are handled inside
        raise FerTuneError(f"cannot read data source '{source}': {exc}") from None
