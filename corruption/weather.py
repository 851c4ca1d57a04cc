"""Weather corruptions: ImageNet-C's snow, frost, fog, brightness and its validation spatter.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the
Apache-2.0-licensed ``imagecorruptions`` package (https://github.com/bethgelab/imagecorruptions).
Frost uses procedural textures (:mod:`._frost`) instead of ImageNet-C's photographs.
albumentations' ``RandomSnow``/``RandomFog``/``Spatter`` are different effects from ImageNet-C's (other
layer construction and constants), so these are written on OpenCV/numpy.
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import cv2
import numpy as np

from . import _alb
from ._frost import BANK_SIZE, TEXTURE_SIZE, frost_texture
from ._ops import LUMA, gaussian, luma, motion_blur, next_power_of_two, plasma_fractal
from ._registry import register, register_u8
from ._seeding import standard_normal

# (loc, scale, zoom, threshold, blur radius, blur sigma, image blend)
SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog weight, wibble decay)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
# (loc, scale, blur sigma, threshold, intensity, mud?)
SPATTER = (
    (0.65, 0.3, 4, 0.69, 0.6, 0),
    (0.65, 0.3, 3, 0.68, 0.6, 0),
    (0.65, 0.3, 2, 0.68, 0.5, 0),
    (0.65, 0.3, 1, 0.65, 1.5, 1),
    (0.67, 0.4, 1, 0.65, 1.5, 1),
)
_WATER = np.array([175, 238, 238], dtype=np.float32) / 255.0  # pale turquoise (RGB)
_MUD = np.array([63, 42, 20], dtype=np.float32) / 255.0  # mud brown (RGB)


@register("snow", "weather", "imagenet-c")
def snow(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Zoomed, thresholded Gaussian flakes, motion-blurred at U(-135, -45) degrees, added twice (the
    layer and its 180-degree rotation) onto the image brightened towards ``1.5 * grey + 0.5``."""
    loc, scale, zoom, thresh, radius, sigma, blend = SNOW[severity - 1]
    h, w, c = x.shape
    layer = standard_normal(rng, (h, w))
    layer *= scale
    layer += loc
    layer = _alb.blur().central_zoom(layer, zoom)
    layer = cv2.threshold(layer, thresh, 0.0, cv2.THRESH_TOZERO)[1]  # < thresh -> 0 (== thresh: 0 too)
    np.clip(layer, 0.0, 1.0, out=layer)
    layer = motion_blur(layer, radius, sigma, rng.uniform(-135.0, -45.0))
    layer *= np.float32(255.0)
    np.rint(layer, out=layer)
    layer *= np.float32(1.0 / 255.0)
    flakes = cv2.add(layer, cv2.flip(layer, -1))  # the layer plus its 180-degree rotation
    if c == 3:  # grey * 1.5 + 0.5 replicated to 3 channels, one pass (ITU-R 601 luma)
        k = np.concatenate([np.tile(1.5 * LUMA.astype(np.float64)[None, :], (3, 1)), np.full((3, 1), 0.5)], axis=1)
        y = cv2.transform(x, k)
    else:
        y = cv2.addWeighted(x, 1.5, x, 0.0, 0.5).reshape(h, w, 1)
    cv2.max(y, x, dst=y)
    cv2.addWeighted(x, blend, y, 1.0 - blend, 0.0, dst=y)
    y = y.reshape(h, w, c)
    y += flakes.reshape(h, w, 1)
    return y


def _frost_crop(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random ``h x w`` crop of one of the procedural frost textures (luma for one channel)."""
    h, w, c = shape
    tex = frost_texture(int(rng.integers(BANK_SIZE)))
    if h > TEXTURE_SIZE or w > TEXTURE_SIZE:  # upscale (ImageNet-C: by the larger ratio, times 1.1)
        f = max(h, w) / TEXTURE_SIZE * 1.1
        n = int(np.ceil(TEXTURE_SIZE * f))
        tex = cv2.resize(tex, (n, n), interpolation=cv2.INTER_CUBIC)
    y0 = int(rng.integers(tex.shape[0] - h + 1))
    x0 = int(rng.integers(tex.shape[1] - w + 1))
    crop = tex[y0:y0 + h, x0:x0 + w]
    return luma(crop) if c == 1 else crop


@register("frost", "weather", "imagenet-c")
def frost(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``c0 * x + c1 * frost`` with a random crop of one of the procedural frost textures."""
    a, b = FROST[severity - 1]
    return a * x + b * _frost_crop(x.shape, rng)


@register_u8("frost")
def frost_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit :func:`frost`: the same draws and blend, rounded to nearest by OpenCV."""
    a, b = FROST[severity - 1]
    y = cv2.addWeighted(x8, float(a), _frost_crop(x8.shape, rng), 255.0 * b, 0.0, dtype=cv2.CV_8U)
    return y.reshape(x8.shape)


@register("fog", "weather", "imagenet-c")
def fog(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``(x + c0 * plasma) * max(x) / (max(x) + c0)`` with a diamond-square plasma fractal."""
    a, decay = FOG[severity - 1]
    h, w, _ = x.shape
    plasma = plasma_fractal(rng, next_power_of_two(max(h, w)), decay)[:h, :w, None]
    top = float(x.max()) if x.size else 0.0
    return (x + a * plasma) * np.float32(top / (top + a))


@register("brightness", "weather", "imagenet-c", uses_rng=False)
def brightness(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Add ``c`` to the HSV value, clipped at 1 (OpenCV's float HSV, the same formulas as scikit-image's
    ``rgb2hsv``/``hsv2rgb`` that ImageNet-C uses); grey images: ``x + c``."""
    c = np.float32(BRIGHTNESS[severity - 1])
    if x.shape[2] == 1:
        return x + c
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    v = hsv[:, :, 2]
    v += c
    np.minimum(v, np.float32(1.0), out=v)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _water_layer(rng: np.random.Generator, h: int, w: int, severity: int) -> np.ndarray:
    """The water layer of :func:`spatter` (severities 1-3): float32 ``(H, W)`` highlight strength >= 0."""
    loc, scale, sigma, thresh, intensity, _ = SPATTER[severity - 1]
    liquid = standard_normal(rng, (h, w))
    liquid *= scale
    liquid += loc
    liquid = gaussian(liquid, sigma)
    # liquid < thresh -> 0 (values equal to thresh kept: TOZERO keeps src > the float32 just below it)
    below = float(np.nextafter(np.float32(thresh), np.float32(-np.inf)))
    cv2.threshold(liquid, below, 0.0, cv2.THRESH_TOZERO, dst=liquid)
    liquid *= np.float32(255.0)  # >= 0 here
    np.minimum(liquid, np.float32(255.0), out=liquid)
    liquid8 = liquid.astype(np.uint8)  # truncation, as ImageNet-C's astype
    dist = 255 - cv2.Canny(liquid8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3))
    m = cv2.multiply(liquid8, dist, dtype=cv2.CV_32F)  # products of 8-bit values: exact in float32
    top = float(cv2.minMaxLoc(m)[1])
    if top > 0:
        m *= intensity / top
    return m


def _water_rgb(m: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """``min(m * WATER, 1) * scale`` as float32 ``(H, W, 3)``."""
    y = m[:, :, None] * _WATER
    np.minimum(y, np.float32(1.0), out=y)
    if scale != 1.0:
        y *= np.float32(scale)
    return y


@register("spatter", "weather", "imagenet-c-validation", needs_rgb=True)
def spatter(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Water drops (severities 1-3: pale-turquoise highlights from a thresholded, blurred noise
    layer's edge-distance map) or mud (4-5: brown blobs covering the image)."""
    loc, scale, sigma, thresh, intensity, mud = SPATTER[severity - 1]
    h, w, _ = x.shape
    if not mud:
        y = _water_rgb(_water_layer(rng, h, w, severity))
        y += x
        return y
    liquid = standard_normal(rng, (h, w))
    liquid *= scale
    liquid += loc
    liquid = gaussian(liquid, sigma)
    liquid[liquid < thresh] = 0.0
    m = (liquid > thresh).astype(np.float32)
    m = gaussian(m, intensity)
    m[m < 0.8] = 0.0
    m = m[:, :, None]
    return x * (1.0 - m) + _MUD * m


@register_u8("spatter")
def spatter_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """8-bit :func:`spatter`: water added in 8 bits (rounded to nearest); mud through the float path."""
    h, w, _ = x8.shape
    if SPATTER[severity - 1][5]:
        y = spatter(np.multiply(x8, np.float32(1.0 / 255.0), dtype=np.float32), severity, rng, max_value=255)
        np.clip(y, 0.0, 1.0, out=y)
        y *= np.float32(255.0)
        y += np.float32(0.5)
        return y.astype(np.uint8)
    water = _water_rgb(_water_layer(rng, h, w, severity), 255.0)
    return cv2.add(x8.reshape(h, -1), water.reshape(h, -1), dtype=cv2.CV_8U).reshape(x8.shape)
