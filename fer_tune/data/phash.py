"""Perceptual hashes of 48 px faces and the pairs of them that lie close: near-duplicates.

Used on every load that merges extra sources (`fer_tune.data.sources`) and by `data clean`.
"""

from __future__ import annotations

import numpy as np

# Near-duplicates: imagehash's pHash (64 bits). A brightened, JPEG-recompressed or noisy copy of a
# 48 px face lies within 4 bits of it (95th percentile, on synthetic faces); two different LFW faces
# were never closer than 10 bits, and 2.6e-6 of all pairs of the (much more alike) synthetic faces are.
HASH_DISTANCE = 4  # default largest Hamming distance between near-duplicates, in bits
MAX_HASH_DISTANCE = 16  # beyond this, distinct faces match routinely


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """imagehash's 64-bit pHash of each uint8 [N, 48, 48] image, as uint64 [N].

    ~0.2 ms an image: 7-10 s for FER2013's 35,887 on one core, a tenth of the face screening. A
    hand-written dHash batched in torch takes 0.2 s for all of them, but it is the weaker hash here:
    among the 28,709 synthetic train faces it puts 29,590 pairs within 4 bits, pHash 1,080, and each
    such pair would cost a real face.
    """
    import imagehash  # lazy: it imports PIL and scipy
    from PIL import Image

    if not len(images):
        return np.zeros(0, dtype=np.uint64)
    bits = np.stack([imagehash.phash(Image.fromarray(image)).hash.ravel() for image in images])
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def near_pairs(
    hashes: np.ndarray, others: np.ndarray | None = None, *, max_distance: int, block: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every pair of hashes at most `max_distance` bits apart.

    Within `hashes` (i < j) when `others` is None, else i indexes `hashes` and j `others`.
    All pairs, `block` rows at a time: 28,709 FER2013 train images take ~2 s.
    """
    same = others is None
    found = []
    for start in range(0, len(hashes), block):
        rows = hashes[start : start + block, None]
        offset = start if same else 0  # within one set, compare only with later hashes
        distance = _popcount(rows ^ (hashes[None, start:] if same else others[None, :]))
        i, j = np.nonzero(distance <= max_distance)
        if same:
            keep = j > i
            i, j = i[keep], j[keep]
        found.append((i + start, j + offset, distance[i, j].astype(np.int64)))
    if not found:
        return (np.zeros(0, np.int64),) * 3
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_BITS[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
