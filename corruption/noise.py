"""Noise corruptions: ImageNet-C's gaussian, shot, impulse noise and its validation speckle noise.

Severity tables are ImageNet-C's (Hendrycks & Dietterich, ICLR 2019), as tabulated in the Apache-2.0-licensed
``imagecorruptions`` package (Michaelis et al., 2019; https://github.com/bethgelab/imagecorruptions).
Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import numpy as np

from . import _alb
from ._registry import register
from ._seeding import poisson_from_levels, standard_normal

GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # noise std (image in [0, 1])
SHOT_NOISE = (60, 25, 12, 5, 3)  # photons at full scale: Poisson(x * c) / c
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # fraction of values set to 0 or 1 (half each)
SPECKLE_NOISE = (0.15, 0.2, 0.35, 0.45, 0.6)  # multiplicative noise std: x + x * N(0, c)


@register("gaussian_noise", "noise", "imagenet-c")
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``x + N(0, c^2)`` independently per value (albumentations' additive-noise kernel)."""
    noise = standard_normal(rng, x.shape)
    noise *= GAUSSIAN_NOISE[severity - 1]
    return _alb.pixel().add_noise(x, noise)


@register("shot_noise", "noise", "imagenet-c")
def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``Poisson(x * c) / c`` per value; exact inverse-CDF sampling on the 8-bit level grid.

    (albumentations' ``ShotNoise`` works in linear light with a gamma of 2.2, which is not ImageNet-C's
    definition, so it is not used.)
    """
    c = SHOT_NOISE[severity - 1]
    if max_value == 255:
        levels = np.rint(x * 255.0).astype(np.uint8)
        counts = poisson_from_levels(rng, levels, float(c), 255)
    else:  # 16-bit sources: numpy's sampler on the continuous intensities
        counts = rng.poisson(x.astype(np.float64) * c)
    return (counts.astype(np.float32) * np.float32(1.0 / c)).reshape(x.shape)


@register("impulse_noise", "noise", "imagenet-c")
def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Salt-and-pepper per value (as scikit-image's ``random_noise(mode='s&p', amount=c)``): each value
    independently becomes 1 with probability c/2 and 0 with probability c/2.

    (albumentations' ``apply_salt_and_pepper`` shares one mask across channels, unlike ImageNet-C.)
    """
    c = IMPULSE_NOISE[severity - 1]
    u = np.frombuffer(rng.bytes(4 * x.size), dtype=np.uint32).reshape(x.shape)
    t_salt = np.uint32(int(c / 2.0 * 2**32))
    t_any = np.uint32(int(c * 2**32))
    out = x.copy()
    out[u < t_salt] = 1.0
    out[(u >= t_salt) & (u < t_any)] = 0.0
    return out


@register("speckle_noise", "noise", "imagenet-c-validation")
def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """``x + x * N(0, c^2)`` per value."""
    noise = standard_normal(rng, x.shape)
    noise *= SPECKLE_NOISE[severity - 1]
    noise *= x
    return _alb.pixel().add_noise(x, noise)
