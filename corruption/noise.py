"""Noise corruptions: ImageNet-C's gaussian, shot, impulse noise and its validation speckle noise.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the Apache-2.0-licensed
``imagecorruptions`` package (Michaelis et al., 2019; https://github.com/bethgelab/imagecorruptions).
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from ._registry import register, register_u8
from ._seeding import _normal_table, normal_blocks, poisson_from_levels, random_bits, scaled_normal_table, standard_normal

GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # noise std (image in [0, 1])
SHOT_NOISE = (60, 25, 12, 5, 3)  # photons at full scale: Poisson(x * c) / c
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values set to 0 or 1 (half each)
SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # multiplicative noise std: x + x * N(0, c)


@register("gaussian_noise", "noise", "imagenet-c")
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``x + N(0, c^2)`` independently per value."""
    noise = standard_normal(rng, x.shape)
    # x + c * z in one pass, into the noise buffer (the caller clips)
    return cv2.scaleAdd(noise, GAUSSIAN_NOISE[severity - 1], x, dst=noise)


@register("shot_noise", "noise", "imagenet-c")
def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``Poisson(x * c) / c`` per value; exact inverse-CDF sampling on the 8-bit level grid.

    (albumentations' ``ShotNoise`` works in linear light with a gamma of 2.2, which is not ImageNet-C's
    definition, so it is not used.)
    """
    c = SHOT_NOISE[severity - 1]
    if max_value == 255:
        levels = cv2.convertScaleAbs(x.reshape(x.shape[0], -1), alpha=255.0)  # x >= 0: rint(255 x)
        counts = poisson_from_levels(rng, levels, float(c), 255)
    else:  # 16-bit sources: numpy's sampler on the continuous intensities
        counts = rng.poisson(x.astype(np.float64) * c)
    return np.multiply(counts, np.float32(1.0 / c), dtype=np.float32).reshape(x.shape)


@register("impulse_noise", "noise", "imagenet-c")
def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Salt-and-pepper per value (as scikit-image's ``random_noise(mode='s&p', amount=c)``): each value
    independently becomes 1 with probability c/2 and 0 with probability c/2.

    (albumentations' ``apply_salt_and_pepper`` shares one mask across channels, unlike ImageNet-C.)
    """
    c = IMPULSE_NOISE[severity - 1]
    h, w, ch = x.shape
    u = random_bits(rng, x.size, np.uint16).reshape(h, w * ch)  # 16-bit uniforms
    t_salt = float(round(c / 2.0 * 65536))
    t_any = float(round(c * 65536))
    if u.shape[1] < 8:  # OpenCV would read a row this short as a scalar
        hit, salt = u < t_any, u < t_salt
        return np.where(hit, salt, x.reshape(h, w * ch)).astype(np.float32).reshape(h, w, ch)
    hit = cv2.compare(u, t_any, cv2.CMP_LT)  # salt or pepper: u < c
    salt = cv2.compare(u, t_salt, cv2.CMP_LT)  # salt: u < c / 2
    out = np.zeros((h, w * ch), dtype=np.float32)
    cv2.bitwise_not(hit, dst=hit)
    cv2.copyTo(x.reshape(h, w * ch), hit, out)  # untouched values
    cv2.add(out, 1.0, dst=out, mask=salt)  # salt values were zeroed: 0 + 1
    return out.reshape(h, w, ch)


@register("speckle_noise", "noise", "imagenet-c-validation")
def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``x + x * N(0, c^2)`` per value."""
    noise = standard_normal(rng, x.shape)
    cv2.multiply(noise, x, dst=noise, scale=SPECKLE_NOISE[severity - 1])  # x * c * z
    return cv2.add(noise, x, dst=noise)


# ---- 8-bit fast paths (see register_u8): the same draws, quantised by OpenCV's saturating round ----


def _flat(x8: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` -> ``(H, W * C)`` view (OpenCV treats it as one plane)."""
    return x8.reshape(x8.shape[0], -1)


def _blockwise(x8: np.ndarray, rng: np.random.Generator, step, table: np.ndarray | None = None) -> np.ndarray:
    """Apply ``step(x_block, z_block, out_block)`` over N(0, 1) blocks (see ``normal_blocks``)."""
    flat = x8.reshape(-1)
    out = np.empty_like(flat)
    for i, j, z in normal_blocks(rng, flat.size, table):
        if j - i < 16:  # OpenCV may read very short vectors as scalars
            tail = np.zeros(16, z.dtype)
            tail[: j - i] = z
            o = np.empty(16, np.uint8)
            xb = np.zeros(16, np.uint8)
            xb[: j - i] = flat[i:j]
            step(xb, tail, o)
            out[i:j] = o[: j - i]
        else:
            step(flat[i:j], z, out[i:j])
    return out.reshape(x8.shape)


@register_u8("gaussian_noise")
def gaussian_noise_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    table = scaled_normal_table(255.0 * GAUSSIAN_NOISE[severity - 1])  # rint(255 c z), int16

    def step(xb: np.ndarray, z: np.ndarray, o: np.ndarray) -> None:
        cv2.add(xb, z, dst=o, dtype=cv2.CV_8U)  # x + rint(255 c z), saturated

    return _blockwise(x8, rng, step, table)


@functools.lru_cache(maxsize=8)
def _shot_lut(c: int) -> np.ndarray:
    """count -> 8-bit output, with the float path's exact float32 arithmetic and round-half-up."""
    y = np.multiply(np.arange(256, dtype=np.uint8), np.float32(1.0 / c), dtype=np.float32)
    np.clip(y, 0.0, 1.0, out=y)
    y *= np.float32(255)
    y += np.float32(0.5)
    return y.astype(np.uint8)


@register_u8("shot_noise")
def shot_noise_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = SHOT_NOISE[severity - 1]
    counts = poisson_from_levels(rng, _flat(x8), float(c), 255)  # bit-identical to the float path
    return cv2.LUT(counts, _shot_lut(c)).reshape(x8.shape)


@register_u8("impulse_noise")
def impulse_noise_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = IMPULSE_NOISE[severity - 1]
    h, w, ch = x8.shape
    u = random_bits(rng, x8.size, np.uint16).reshape(h, w * ch)
    t_salt = float(round(c / 2.0 * 65536))
    t_any = float(round(c * 65536))
    flat = _flat(x8)
    if u.shape[1] < 8:
        return np.where(u < t_any, np.where(u < t_salt, 255, 0), flat).astype(np.uint8).reshape(x8.shape)
    keep = cv2.compare(u, t_any, cv2.CMP_GE)  # 255 where untouched
    salt = cv2.compare(u, t_salt, cv2.CMP_LT)  # 255 where salt
    out = cv2.bitwise_and(flat, keep)  # pepper and salt values zeroed
    cv2.bitwise_or(out, salt, dst=out)  # salt values: 255
    return out.reshape(x8.shape)


@functools.lru_cache(maxsize=8)
def _speckle_table(c: float) -> np.ndarray:
    """float32 ``1 + c z`` over the 65536 normal quantiles (``x + x c z = x (1 + c z)``)."""
    t = np.float32(1.0) + np.float32(c) * _normal_table()
    t.flags.writeable = False
    return t


@register_u8("speckle_noise")
def speckle_noise_u8(x8: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    table = _speckle_table(SPECKLE_NOISE[severity - 1])

    def step(xb: np.ndarray, z: np.ndarray, o: np.ndarray) -> None:
        cv2.multiply(xb, z, dst=o, dtype=cv2.CV_8U)  # x (1 + c z), rounded, saturated

    return _blockwise(x8, rng, step, table)
