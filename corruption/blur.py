"""Blur corruptions: ImageNet-C's defocus, glass, motion and zoom blur and its validation gaussian blur.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the Apache-2.0-licensed
``imagecorruptions`` package (https://github.com/bethgelab/imagecorruptions).
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from . import _alb
from ._ops import as_hwc, gaussian, motion_blur as _motion_blur
from ._registry import register

DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, anti-alias sigma)
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma, max_delta, iterations)
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius, sigma); angle ~ U(-45, 45)
ZOOM_BLUR = (
    np.arange(1, 1.11, 0.01),
    np.arange(1, 1.16, 0.01),
    np.arange(1, 1.21, 0.02),
    np.arange(1, 1.26, 0.02),
    np.arange(1, 1.31, 0.03),
)  # zoom factors averaged with the image
GAUSSIAN_BLUR = (1, 2, 3, 4, 6)  # sigma


@register("defocus_blur", "blur", "imagenet-c", uses_rng=False)
def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Convolution with an anti-aliased disk (albumentations' ``defocus`` builds ImageNet-C's kernel)."""
    radius, alias = DEFOCUS_BLUR[severity - 1]
    return as_hwc(_alb.blur().defocus(x, radius, alias), x.shape[2])


@register("gaussian_blur", "blur", "imagenet-c-validation", uses_rng=False)
def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Gaussian blur, sigma from the table, truncated at 4 sigma, edges replicated (scikit-image's)."""
    return gaussian(x, GAUSSIAN_BLUR[severity - 1])


@register("motion_blur", "blur", "imagenet-c")
def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """One-sided half-Gaussian line blur at an angle drawn from U(-45, 45) degrees."""
    radius, sigma = MOTION_BLUR[severity - 1]
    angle = rng.uniform(-45.0, 45.0)
    return _motion_blur(x, radius, sigma, angle)


@register("zoom_blur", "blur", "imagenet-c", uses_rng=False)
def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Mean of the image and its centre zooms by each factor (albumentations' ``zoom_blur``, which is
    ImageNet-C's ``clipped_zoom`` average). Iterative by definition: cost grows with the factor count."""
    return as_hwc(_alb.blur().zoom_blur(x, ZOOM_BLUR[severity - 1]), x.shape[2])


@functools.lru_cache(maxsize=16)
def _glass_schedule(height: int, width: int, delta: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Swap anchors of one ImageNet-C glass-blur pass, regrouped into conflict-free waves.

    ImageNet-C visits rows ``h = H-d .. d+1`` (descending) and, within a row, ``w = W-d .. d+1``
    (descending), swapping pixel ``(h, w)`` with ``(h + dy, w + dx)``, ``dx, dy ~ U{-d, .., d-1}``.
    The swaps are sequential (a pixel can be carried several times), but two swaps commute unless they
    touch a common pixel, which needs rows and columns both within ``2d - 1``. Wave number
    ``t(h, w) = (W-d - w) + 2d (H-d - h)`` increases along the visiting order for every such pair and is
    equal only for swaps at least ``2d`` columns apart, so applying the waves in order, each as one
    vectorised swap, gives exactly the sequential result.

    Returns:
        ``(anchor, order, starts, stops)``: flat anchor indices in visiting order, the permutation
        sorting them by wave, and each wave's slice bounds into the sorted arrays.
    """
    hs = np.arange(height - delta, delta, -1)
    ws = np.arange(width - delta, delta, -1)
    if hs.size == 0 or ws.size == 0:
        e = np.zeros(0, dtype=np.intp)
        return e, e, e, e
    hh, ww = np.meshgrid(hs, ws, indexing="ij")
    anchor = (hh * width + ww).ravel()
    wave = ((ws[0] - ww) + 2 * delta * (hs[0] - hh)).ravel()
    order = np.argsort(wave, kind="stable")
    sw = wave[order]
    cuts = np.flatnonzero(np.diff(sw)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [sw.size]])
    return anchor, order, starts, stops


def glass_shuffle(height: int, width: int, delta: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """The pixel permutation of ImageNet-C's sequential local shuffling (exact, vectorised by waves).

    Returns:
        ``intp`` array of length ``H * W``: output pixel ``i`` is input pixel ``perm[i]``.
    """
    perm = np.arange(height * width, dtype=np.intp)
    anchor, order, starts, stops = _glass_schedule(height, width, delta)
    if anchor.size == 0:
        return perm
    a_sorted = anchor[order]
    bounds = list(zip(starts.tolist(), stops.tolist()))
    for _ in range(iterations):
        d = rng.integers(-delta, delta, size=(anchor.size, 2))  # (dx, dy) per anchor, visiting order
        partner = anchor + d[:, 1] * width + d[:, 0]
        b_sorted = partner[order]
        for s, e in bounds:
            a = a_sorted[s:e]
            b = b_sorted[s:e]
            tmp = perm[a]
            perm[a] = perm[b]
            perm[b] = tmp
    return perm


@register("glass_blur", "blur", "imagenet-c")
def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Gaussian blur, ImageNet-C's sequential local pixel shuffling (exact), Gaussian blur again.

    albumentations' ``glass_blur`` is not used: its ``fast`` mode applies each pass's swaps all at once
    (not ImageNet-C's sequential result) and its ``exact`` mode is a per-pixel Python loop.
    """
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    h, w, c = x.shape
    y = gaussian(x, sigma)
    perm = glass_shuffle(h, w, delta, iterations, rng)
    y = y.reshape(h * w, c)[perm].reshape(h, w, c)
    return gaussian(y, sigma)
