"""Digital corruptions: ImageNet-C's contrast, elastic transform, pixelate, JPEG and its validation saturate.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the
Apache-2.0-licensed ``imagecorruptions`` package (https://github.com/bethgelab/imagecorruptions); the
elastic transform is that package's size-relative version.
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import _alb
from ._ops import as_hwc, gaussian
from ._registry import register

CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor towards the per-channel mean
ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)  # alpha
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # down-scaling factor
JPEG_QUALITY = (25, 18, 15, 10, 7)
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation * a + b


@register("contrast", "digital", "imagenet-c")
def contrast(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``(x - mean) * c + mean`` with per-channel means over the image."""
    c = np.float32(CONTRAST[severity - 1])
    mean = x.mean(axis=(0, 1), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x - mean) * c + mean


@register("elastic_transform", "digital", "imagenet-c")
def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Resample at ``(y + dy, x + dx)``, bilinear, mirrored edges; ``dx, dy`` are U(-m, m) fields
    (``m = 0.005 H``) smoothed by a Gaussian of sigma ``0.01 (H, W)`` truncated at 3 sigma, times alpha.
    The warp is albumentations' ``remap``."""
    alpha = ELASTIC[severity - 1]
    h, w, c = x.shape
    m = 0.005 * h
    sigma = (0.01 * h, 0.01 * w)
    fields = rng.uniform(-m, m, size=(2, h, w)).astype(np.float32)
    dx = gaussian(fields[0], sigma, truncate=3.0, border=cv2.BORDER_REFLECT) * np.float32(alpha)
    dy = gaussian(fields[1], sigma, truncate=3.0, border=cv2.BORDER_REFLECT) * np.float32(alpha)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    y = _alb.geometric().remap(x, gx + dx, gy + dy, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
    return as_hwc(y, c)


@register("pixelate", "digital", "imagenet-c")
def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Box-downscale to ``int(size * c)`` (at least 1 pixel), nearest-neighbour upscale back (PIL-exact
    pixel-centre convention, as ImageNet-C used PIL)."""
    c = PIXELATE[severity - 1]
    h, w, ch = x.shape
    small = cv2.resize(x, (max(1, int(w * c)), max(1, int(h * c))), interpolation=cv2.INTER_AREA)
    return as_hwc(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT), ch)


@register("jpeg_compression", "digital", "imagenet-c")
def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """8-bit JPEG round trip at the table's quality (albumentations' ``image_compression``, fed BGR so
    that the luma/chroma split is the one PIL uses for RGB; 4:2:0 chroma subsampling)."""
    q = JPEG_QUALITY[severity - 1]
    c = x.shape[2]
    x8 = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if c == 3:
        y8 = _alb.pixel().image_compression(np.ascontiguousarray(x8[:, :, ::-1]), q, ".jpg")[:, :, ::-1]
    else:
        y8 = _alb.pixel().image_compression(x8, q, ".jpg")
    return as_hwc(y8.astype(np.float32) * np.float32(1.0 / 255.0), c)


@register("saturate", "digital", "imagenet-c-validation", needs_rgb=True)
def saturate(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """HSV saturation ``S' = clip(S * a + b, 0, 1)``, hue and value kept (OpenCV's float HSV, the same
    formulas as scikit-image's that ImageNet-C uses; achromatic pixels have hue 0, so ``b > 0`` tints
    them red exactly as in ImageNet-C)."""
    a, b = SATURATE[severity - 1]
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    s = hsv[:, :, 1]
    s *= np.float32(a)
    s += np.float32(b)
    np.clip(s, 0.0, 1.0, out=s)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
