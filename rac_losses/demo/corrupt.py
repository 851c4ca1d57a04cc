"""Corrupted copies of the task's images, from :mod:`rac_losses.corruption`, cached."""

from __future__ import annotations

import numpy as np

from rac_losses.corruption import corrupt

__all__ = ["CORRUPTIONS", "TwinCache", "corrupt_images"]

#: Corruptions the demo uses: each removes evidence differently (noise, blur, occlusion, contrast).
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur", "patch_mask", "contrast")


def corrupt_images(images: np.ndarray, kinds: np.ndarray, severities: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """``[n, H, W, 3]`` uint8 -> the same shape, image ``i`` under ``CORRUPTIONS[kinds[i]]`` at ``severities[i]``."""
    out = np.empty_like(images)
    for i in range(len(images)):
        out[i] = corrupt(images[i], CORRUPTIONS[int(kinds[i])], int(severities[i]), seed=int(seeds[i]))
    return out


class TwinCache:
    """Corrupted copies of a fixed image pool, computed on first use and kept (shared by every arm).

    The corruption seed of image ``i`` is ``seed * 1_000_003 + i``, so a copy depends only on the image,
    the corruption, the severity and the seed.
    """

    def __init__(self, images: np.ndarray, seed: int, corruptions: tuple[str, ...] = CORRUPTIONS) -> None:
        self.images = images
        self.seed = seed
        self.corruptions = corruptions
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def get(self, index: np.ndarray, kinds: np.ndarray, severities: np.ndarray) -> np.ndarray:
        out = np.empty((len(index),) + self.images.shape[1:], dtype=np.uint8)
        for j, (i, k, s) in enumerate(zip(index.tolist(), kinds.tolist(), severities.tolist())):
            key = (i, k, s)
            img = self._cache.get(key)
            if img is None:
                img = corrupt(self.images[i], self.corruptions[k], s, seed=self.seed * 1_000_003 + i)
                self._cache[key] = img
            out[j] = img
        return out
