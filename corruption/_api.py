"""``corrupt``: the single entry point that ties modes, seeding, the registry and regions together."""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np

from ._registry import SEVERITIES, get
from ._seeding import check_seed, image_digest, make_rng
from .modes import to_working
from ._ops import luma
from .region import composite, parse_region

__all__ = ["corrupt", "check_severity"]

log = logging.getLogger(__name__)

ImageT = TypeVar("ImageT")


def check_severity(severity: object, *, argname: str = "severity") -> int:
    """Validate a severity: an integer in 1..5.

    Raises:
        TypeError: if not an integer (``bool`` is rejected).
        ValueError: if outside 1..5.
    """
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)):
        raise TypeError(f"{argname} must be an int in 1..5, got {type(severity).__name__}")
    if int(severity) not in SEVERITIES:
        raise ValueError(f"{argname} must be an int in 1..5, got {int(severity)}")
    return int(severity)


def corrupt(image: ImageT, name: str, severity: int, *, seed: int = 0, region: object = None) -> ImageT:
    """Return a corrupted copy of ``image``.

    Args:
        image: a PIL image (modes ``1, L, LA, P, RGB, RGBA, I;16, I;16L, I;16B, I, CMYK, YCbCr``) or a
            numpy array of dtype ``uint8``/``uint16`` and shape ``(H, W)``, ``(H, W, 1)`` (grey),
            ``(H, W, 2)`` (grey + alpha), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA). Not modified.
        name: a key of :data:`CORRUPTIONS`.
        severity: 1..5 (ImageNet-C's scale).
        seed: non-negative int. The output is a pure function of (image pixels and layout, ``name``,
            ``severity``, ``seed``): identical in any process and call order; no global RNG is used.
        region: ``None``, a box ``(x0, y0, x1, y1)`` or a bool ``(H, W)`` mask: corrupt only there,
            every other pixel is returned unchanged (see :mod:`.region`).

    Returns:
        An object of the input's type with the same size, mode/shape and dtype; alpha is untouched.

    Raises:
        TypeError: ``image`` is not a supported image; ``name``/``severity``/``seed``/``region`` of the wrong type.
        ValueError: unknown ``name`` (the message lists valid names), ``severity`` outside 1..5,
            negative ``seed``, invalid ``region``.
    """
    spec = get(name)
    severity = check_severity(severity)
    seed = check_seed(seed)
    work = to_working(image)
    where = parse_region(region, work.height, work.width)
    # deterministic corruptions read no generator: no need to hash the image for one
    rng = make_rng(seed, name, image_digest(work.tag, work.native, work.digest_extra)) if spec.uses_rng else None
    x8 = work.u8
    if spec.u8 is not None and x8 is not None and not (spec.needs_rgb and x8.shape[2] == 1):
        # 8-bit fast path: no float conversion and quantisation round trip
        y8 = spec.u8(x8, severity, rng)
        if y8.ndim == 2 and x8.shape[2] == 1:
            y8 = y8[:, :, None]
        if y8.shape != x8.shape or y8.dtype != np.uint8:
            raise AssertionError(f"internal: {name} (8-bit) returned {y8.dtype} {y8.shape} for input {x8.shape}")
        if np.shares_memory(y8, work.native):  # the output never aliases the input
            y8 = y8.copy()
        out = work.encode_u8(y8)
        if where is not None:
            out = composite(out, work.native, where)
        return work.build(out)
    x = work.color
    channels = x.shape[2]
    if spec.needs_rgb and channels == 1:
        y = luma(spec.fn(np.repeat(x, 3, axis=2), severity, rng, max_value=work.max_value))
    else:
        y = spec.fn(x, severity, rng, max_value=work.max_value)
    if y.shape != x.shape:
        raise AssertionError(f"internal: {name} returned shape {y.shape} for input {x.shape}")
    y = np.asarray(y, dtype=np.float32)
    if np.shares_memory(y, x):  # encode works in place; never on the working input
        y = y.copy()
    out = work.encode(y)
    if where is not None:
        out = composite(out, work.native, where)
    return work.build(out)
