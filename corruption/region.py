"""Region restriction (CDRL-style key-region corruption).

A region is either a box ``(x0, y0, x1, y1)`` in pixel coordinates (half-open: columns ``x0..x1-1``,
rows ``y0..y1-1``; real numbers are widened to whole pixels, the box is clipped to the image) or a
boolean mask of shape ``(H, W)`` (a numpy array, or a PIL image of mode ``1``/``L`` where non-zero is
inside). The corruption is computed on the whole image (so blurs see the context and the random draws
are those of the unrestricted call) and then pasted into the region only: every pixel outside is
returned unchanged, bit for bit.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from PIL import Image

__all__ = ["Region", "parse_region", "composite"]

Region = tuple[slice, slice] | np.ndarray  # box as (rows, cols) slices, or a bool (H, W) mask


def parse_region(region: object, height: int, width: int) -> Region | None:
    """Validate ``region`` for an image of ``height`` x ``width``.

    Returns:
        ``None`` (whole image), a ``(rows, cols)`` slice pair, or a bool ``(H, W)`` mask.

    Raises:
        TypeError: if ``region`` is neither a 4-number box nor a boolean mask.
        ValueError: for a malformed box (``x1 <= x0``, ``y1 <= y0``, non-finite), a box outside the
            image, or a mask of the wrong shape.
    """
    if region is None:
        return None
    if isinstance(region, Image.Image):
        if region.mode not in ("1", "L"):
            raise TypeError(f"region image must have mode '1' or 'L', got {region.mode!r}")
        region = np.asarray(region) != 0
    if isinstance(region, np.ndarray):
        if region.dtype != np.bool_:
            raise TypeError(f"region mask must be a bool array, got dtype {region.dtype} (use mask != 0 or a box)")
        if region.shape != (height, width):
            raise ValueError(f"region mask must have shape (H, W) = ({height}, {width}), got {region.shape}")
        return region
    if isinstance(region, (tuple, list)) and len(region) == 4:
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in region):
            raise TypeError(f"region box must be 4 numbers (x0, y0, x1, y1), got {region!r}")
        x0, y0, x1, y1 = (float(v) for v in region)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"region box must be finite, got {region!r}")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region box (x0, y0, x1, y1) must have x1 > x0 and y1 > y0, got {tuple(region)}")
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(width, math.ceil(x1)), min(height, math.ceil(y1))
        if c1 <= c0 or r1 <= r0:
            raise ValueError(f"region box {tuple(region)} does not overlap the {width}x{height} (WxH) image")
        return (slice(r0, r1), slice(c0, c1))
    raise TypeError(
        f"region must be None, a box (x0, y0, x1, y1) or a bool mask of shape ({height}, {width}), "
        f"got {type(region).__name__}"
    )


def composite(corrupted: np.ndarray, original: np.ndarray, region: Region) -> np.ndarray:
    """``corrupted`` inside ``region``, ``original`` elsewhere (native arrays of equal shape)."""
    if isinstance(region, tuple):
        out = original.copy()
        out[region] = corrupted[region]
        return out
    mask = region if original.ndim == 2 else region[:, :, None]
    return np.where(mask, corrupted, original)
