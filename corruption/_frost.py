"""Procedural frost textures (replacing the frost photographs ImageNet-C ships).

ImageNet-C's frost adds a randomly chosen, randomly cropped photograph of ice crystals on glass:
``c0 * x + c1 * frost``. We synthesise a bank of :data:`BANK_SIZE` textures instead: a hazy base
(diamond-square noise) plus fern-like dendrites (stems with side branches at +-60 degrees, the
hexagonal habit of ice) with a soft glow, tinted pale blue. Each texture is a pure function of its
index (fixed seeds), generated lazily once per process and cached. Their brightness statistics are
matched to the photographs' (mean ~0.6, std ~0.12 of full scale).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from ._ops import plasma_fractal

__all__ = ["BANK_SIZE", "TEXTURE_SIZE", "frost_texture"]

BANK_SIZE = 5
TEXTURE_SIZE = 640  # square; larger images get an upscaled copy (as ImageNet-C does)
_TINT = np.array([0.80, 0.90, 1.0], dtype=np.float32)  # RGB: pale ice blue


def _dendrite(canvas: np.ndarray, rng: np.random.Generator, x: float, y: float, angle: float,
              length: float, value: float, depth: int) -> None:
    """Draw one stem (slightly wandering) and, recursively, its side branches."""
    step = 3.0
    n = max(1, int(length / step))
    branch_every = int(rng.integers(2, 4))
    for i in range(n):
        angle += rng.normal(0.0, 0.04)
        nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
        fade = 1.0 - 0.6 * i / n
        cv2.line(canvas, (int(x * 4), int(y * 4)), (int(nx * 4), int(ny * 4)), float(value * fade),
                 thickness=1, lineType=cv2.LINE_AA, shift=2)
        if depth > 0 and i % branch_every == 0 and i > 0:
            rest = length * (1.0 - i / n)
            for side in (-1.0, 1.0):
                if rng.random() < 0.85:
                    _dendrite(canvas, rng, nx, ny, angle + side * math.pi / 3 + rng.normal(0.0, 0.08),
                              rest * rng.uniform(0.25, 0.55), value * 0.8, depth - 1)
        x, y = nx, ny


@functools.lru_cache(maxsize=BANK_SIZE)
def frost_texture(index: int) -> np.ndarray:
    """Texture ``index`` (0..BANK_SIZE-1): float32 ``(TEXTURE_SIZE, TEXTURE_SIZE, 3)`` RGB in ``[0, 1]``.

    Raises:
        ValueError: if ``index`` is out of range.
    """
    if not 0 <= index < BANK_SIZE:
        raise ValueError(f"index must be in 0..{BANK_SIZE - 1}, got {index}")
    size = TEXTURE_SIZE
    rng = np.random.default_rng(np.random.SeedSequence([0x46524F5354, index]))  # "FROST"
    haze = plasma_fractal(rng, 1024, 1.9)[:size, :size]
    canvas = np.zeros((size, size), dtype=np.float32)
    n_seeds = 90 + 25 * index
    for _ in range(n_seeds):
        _dendrite(canvas, rng, rng.uniform(-20, size + 20), rng.uniform(-20, size + 20),
                  rng.uniform(0, 2 * math.pi), rng.uniform(40, 170), rng.uniform(0.45, 1.0), depth=2)
    grain = cv2.GaussianBlur((rng.random((size, size), dtype=np.float32) < 0.02).astype(np.float32), (0, 0), 0.8)
    glow = cv2.GaussianBlur(canvas, (0, 0), 2.5)
    t = 0.42 + 0.28 * haze + 0.45 * canvas + 0.55 * glow + 0.25 * grain
    t = cv2.GaussianBlur(t, (0, 0), 0.6)
    t = np.clip(t, 0.0, 1.0)
    return np.ascontiguousarray(t[:, :, None] * _TINT[None, None, :])
