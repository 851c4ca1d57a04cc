"""Deterministic, natural-looking synthetic test images (smooth gradients, shapes, texture, edges)."""

from __future__ import annotations

import cv2
import numpy as np


def natural_image(seed: int, height: int = 96, width: int = 112) -> np.ndarray:
    """uint8 ``(height, width, 3)`` RGB: a sky-like gradient, textured ground, a few filled shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top = rng.uniform(0.3, 0.9, 3).astype(np.float32)
    bottom = rng.uniform(0.1, 0.6, 3).astype(np.float32)
    t = (yy / max(height - 1, 1))[:, :, None]
    img = top * (1 - t) + bottom * t
    tex = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), 1.5)
    horizon = int(height * rng.uniform(0.45, 0.7))
    img[horizon:] = img[horizon:] * 0.6 + 0.4 * (tex[horizon:, :, None] * rng.uniform(0.3, 1.0, 3).astype(np.float32))
    canvas = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    for _ in range(4):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.circle(canvas, (cx, cy), int(rng.integers(5, max(6, min(height, width) // 4))), colour, -1, cv2.LINE_AA)
        else:
            w2, h2 = int(rng.integers(4, max(5, width // 3))), int(rng.integers(4, max(5, height // 3)))
            cv2.rectangle(canvas, (cx, cy), (cx + w2, cy + h2), colour, -1)
    return canvas


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1=0.01, K2=0.03) of the luma of two
    uint8 images (``(H, W)`` or ``(H, W, 3)``)."""

    def grey(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x @ np.array([0.299, 0.587, 0.114]) if x.ndim == 3 else x

    x, y = grey(a), grey(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())
