"""Corruptions used by VLM calibration work.

- ``patch_mask``: blacken a severity-dependent fraction of the 14x14-pixel patches (a ViT patch grid
  anchored at the top-left; edge patches may be partial), as VL-Calibration's visual-evidence masking.
  The patch order is one random permutation per image, so higher severities mask a superset.
- ``gray_mask``: the whole image replaced by mid-grey (0.5). The image carries no evidence; the
  severity is ignored.
- ``blank``: the whole image replaced by black. No evidence; the severity is ignored.
- ``diffusion_noise``: the DDPM forward step ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` on the
  image scaled to ``[-1, 1]``, linear beta schedule 1e-4..0.02 over 1000 steps, ``t`` from the table
  (as CA-TTS / visual contrastive decoding corrupt images), clipped back to ``[0, 1]``.

Inputs/outputs follow the contract in :mod:`._registry` (float32 ``(H, W, C)`` in ``[0, 1]``).
"""

from __future__ import annotations

import math

import numpy as np

from ._registry import register
from ._seeding import standard_normal

PATCH_SIZE = 14
PATCH_MASK = (0.1, 0.25, 0.4, 0.55, 0.7)  # fraction of patches blackened
DIFFUSION_T = (100, 200, 300, 400, 500)  # DDPM timestep
DIFFUSION_STEPS = 1000
DIFFUSION_BETAS = (1e-4, 0.02)


def alpha_bar(t: int) -> float:
    """``prod_{s<=t} (1 - beta_s)`` for the linear DDPM schedule (``t`` in ``1..1000``)."""
    betas = np.linspace(DIFFUSION_BETAS[0], DIFFUSION_BETAS[1], DIFFUSION_STEPS, dtype=np.float64)
    return float(np.prod(1.0 - betas[:t]))


@register("patch_mask", "occlusion", "vlm")
def patch_mask(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Blacken ``max(1, round(f * n))`` of the ``n`` 14x14 patches, ``f`` from :data:`PATCH_MASK`."""
    h, w, _ = x.shape
    gh, gw = math.ceil(h / PATCH_SIZE), math.ceil(w / PATCH_SIZE)
    n = gh * gw
    order = rng.permutation(n)
    k = max(1, int(round(PATCH_MASK[severity - 1] * n)))
    keep = np.ones(n, dtype=bool)
    keep[order[:k]] = False
    full = np.repeat(np.repeat(keep.reshape(gh, gw), PATCH_SIZE, axis=0), PATCH_SIZE, axis=1)[:h, :w]
    return x * full[:, :, None].astype(np.float32)


@register("gray_mask", "occlusion", "vlm", severity_dependent=False, uses_rng=False)
def gray_mask(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Uniform mid-grey (0.5) image."""
    return np.full_like(x, 0.5)


@register("blank", "occlusion", "vlm", severity_dependent=False, uses_rng=False)
def blank(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """Uniform black image."""
    return np.zeros_like(x)


@register("diffusion_noise", "noise", "vlm")
def diffusion_noise(x: np.ndarray, severity: int, rng: np.random.Generator, *, max_value: int) -> np.ndarray:
    """DDPM forward noising to step ``t`` (see module docstring)."""
    ab = alpha_bar(DIFFUSION_T[severity - 1])
    eps = standard_normal(rng, x.shape)
    # x0 in [-1, 1]: x_t = sqrt(ab) (2x - 1) + sqrt(1 - ab) eps; back to [0, 1]: (x_t + 1) / 2
    return (np.float32(math.sqrt(ab)) * (2.0 * x - 1.0) + np.float32(math.sqrt(1.0 - ab)) * eps + 1.0) * np.float32(0.5)
