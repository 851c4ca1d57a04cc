"""Digital corruptions: ImageNet-C's contrast, elastic transform, pixelate, JPEG and its validation saturate.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the
Apache-2.0-licensed ``imagecorruptions`` package (https://github.com/bethgelab/imagecorruptions); the
elastic transform is that package's size-relative version.
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from ._ops import as_hwc, gaussian
from ._registry import register, register_u8

CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor towards the per-channel mean
ELASTIC = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)  # alpha
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # down-scaling factor
JPEG_QUALITY = (25, 18, 15, 10, 7)
SATURATE = ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2))  # HSV saturation * a + b


@register("contrast", "digital", "imagenet-c", uses_rng=False)
def contrast(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``(x - mean) * c + mean`` with per-channel means over the image."""
    c = CONTRAST[severity - 1]
    h, w, ch = x.shape
    if x.size == 0:
        return x.copy()
    mean = cv2.mean(x)[:ch]  # float64 accumulation, per channel (numpy's axis=(0, 1) mean is ~40x slower)
    # one fused pass: x * c + mean * (1 - c)
    m = np.zeros((ch, ch + 1), dtype=np.float64)
    for i in range(ch):
        m[i, i] = c
        m[i, ch] = mean[i] * (1.0 - c)
    return as_hwc(cv2.transform(x, m), ch)


@register("elastic_transform", "digital", "imagenet-c")
def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Resample at ``(y + dy, x + dx)``, bilinear, mirrored edges; ``dx, dy`` are U(-m, m) fields
    (``m = 0.005 H``) smoothed by a Gaussian of sigma ``0.01 (H, W)`` truncated at 3 sigma, times alpha.
    The warp is OpenCV's ``remap`` (as albumentations' ``remap``)."""
    alpha = ELASTIC[severity - 1]
    h, w, c = x.shape
    m = 0.005 * h
    sigma = (0.01 * h, 0.01 * w)
    fields = rng.random((2, h, w), dtype=np.float32)  # U(0, 1); mapped to U(-m, m) after the (linear) blur
    gx, gy = _grid(h, w)
    scale = 2.0 * m * alpha
    maps = []
    for f, g in ((fields[0], gx), (fields[1], gy)):
        d = gaussian(f, sigma, truncate=3.0, border=cv2.BORDER_REFLECT)  # Gaussian weights sum to 1
        # g + alpha * (2m * blur(u) - m)
        maps.append(cv2.addWeighted(d, scale, g, 1.0, -m * alpha))
    y = cv2.remap(x, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return as_hwc(y, c)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


@register("pixelate", "digital", "imagenet-c", uses_rng=False)
def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Box-downscale to ``int(size * c)`` (at least 1 pixel), nearest-neighbour upscale back (PIL-exact
    pixel-centre convention, as ImageNet-C used PIL)."""
    c = PIXELATE[severity - 1]
    h, w, ch = x.shape
    small = cv2.resize(x, (max(1, int(w * c)), max(1, int(h * c))), interpolation=cv2.INTER_AREA)
    return as_hwc(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT), ch)


@register("jpeg_compression", "digital", "imagenet-c", uses_rng=False)
def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """8-bit JPEG round trip at the table's quality (OpenCV's ``imencode``/``imdecode``, as albumentations'
    ``image_compression``, fed BGR so that the luma/chroma split is the one PIL uses for RGB; 4:2:0
    chroma subsampling)."""
    q = JPEG_QUALITY[severity - 1]
    c = x.shape[2]
    x8 = cv2.convertScaleAbs(np.clip(x, 0.0, 1.0), alpha=255.0)  # non-negative: |.| is a no-op; rounds to nearest
    if c == 3:
        x8 = cv2.cvtColor(x8, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", x8, (int(cv2.IMWRITE_JPEG_QUALITY), q))
    if not ok:
        raise RuntimeError("internal: JPEG encoding failed")
    y8 = cv2.imdecode(buf, cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE)
    if c == 3:
        y8 = cv2.cvtColor(y8, cv2.COLOR_BGR2RGB)
    return as_hwc(np.multiply(y8, np.float32(1.0 / 255.0), dtype=np.float32), c)


@register("saturate", "digital", "imagenet-c-validation", needs_rgb=True, uses_rng=False)
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


# ---- 8-bit fast paths (see register_u8) ----


@register_u8("contrast")
def contrast_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = CONTRAST[severity - 1]
    ch = x8.shape[2]
    mean = cv2.mean(x8)[:ch]
    m = np.zeros((ch, ch + 1), dtype=np.float64)
    for i in range(ch):
        m[i, i] = c
        m[i, ch] = mean[i] * (1.0 - c)
    return as_hwc(cv2.transform(x8, m), ch)  # rounded to nearest, saturated


@register_u8("elastic_transform")
def elastic_transform_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit :func:`elastic_transform`: the same fields and maps; OpenCV's fixed-point 8-bit bilinear
    ``remap`` (the same 1/32-pixel weight table as the float one, rounded to nearest)."""
    alpha = ELASTIC[severity - 1]
    h, w, c = x8.shape
    m = 0.005 * h
    sigma = (0.01 * h, 0.01 * w)
    fields = rng.random((2, h, w), dtype=np.float32)
    gx, gy = _grid(h, w)
    scale = 2.0 * m * alpha
    maps = []
    for f, g in ((fields[0], gx), (fields[1], gy)):
        d = gaussian(f, sigma, truncate=3.0, border=cv2.BORDER_REFLECT)
        maps.append(cv2.addWeighted(d, scale, g, 1.0, -m * alpha))
    y = cv2.remap(x8, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return as_hwc(y, c)


@register_u8("jpeg_compression")
def jpeg_compression_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    q = JPEG_QUALITY[severity - 1]
    c = x8.shape[2]
    src = cv2.cvtColor(x8, cv2.COLOR_RGB2BGR) if c == 3 else x8
    ok, buf = cv2.imencode(".jpg", src, (int(cv2.IMWRITE_JPEG_QUALITY), q))
    if not ok:
        raise RuntimeError("internal: JPEG encoding failed")
    y8 = cv2.imdecode(buf, cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE)
    if c == 3:
        cv2.cvtColor(y8, cv2.COLOR_BGR2RGB, dst=y8)
    return as_hwc(y8, c)
