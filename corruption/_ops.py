"""Small array helpers shared by the corruption families (all on float32 ``(H, W[, C])`` arrays)."""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

__all__ = ["gaussian", "motion_blur", "luma", "as_hwc", "plasma_fractal"]

# ITU-R 601 luma weights (as cv2.COLOR_RGB2GRAY and PIL's convert("L")).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def as_hwc(y: np.ndarray, channels: int) -> np.ndarray:
    """Restore a trailing channel axis that OpenCV drops for single-channel ``(H, W, 1)`` input."""
    if y.ndim == 2:
        y = y[:, :, None]
    if y.shape[2] != channels:
        raise AssertionError(f"internal: expected {channels} channels, got shape {y.shape}")
    return y


def luma(x: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB -> ``(H, W, 1)`` float32 grey (ITU-R 601)."""
    return cv2.transform(np.ascontiguousarray(x, dtype=np.float32), LUMA[None, :])[:, :, None] if x.size else x[:, :, :1]


def gaussian(x: np.ndarray, sigma: float | tuple[float, float], *, truncate: float = 4.0,
             border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Gaussian blur with scikit-image semantics (``truncate`` standard deviations, default border
    ``'nearest'`` = replicate). ``sigma`` is a scalar or ``(sigma_y, sigma_x)``. Keeps ``x``'s shape."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    ky = 2 * int(math.ceil(truncate * sy)) + 1
    kx = 2 * int(math.ceil(truncate * sx)) + 1
    y = cv2.GaussianBlur(x, (kx, ky), sigmaX=float(sx), sigmaY=float(sy), borderType=border)
    return y.reshape(x.shape)


def _motion_shifts(radius: int, angle: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ImageNet-C's shifts ``(-ceil(i sin a - 0.5), -ceil(i cos a - 0.5))``, ``i = 0..2 radius``."""
    a = math.radians(angle)
    n = 2 * radius + 1
    return (tuple(-math.ceil(k * math.sin(a) - 0.5) for k in range(n)),
            tuple(-math.ceil(k * math.cos(a) - 0.5) for k in range(n)))


@functools.lru_cache(maxsize=512)
def _motion_kernel(radius: int, sigma: float, shifts: tuple, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Correlation kernel for ImageNet-C's motion blur: a one-sided half-Gaussian line.

    ImageNet-C averages ``width = 2 * radius + 1`` copies of the image shifted by
    ``(-ceil(i sin a - 0.5), -ceil(i cos a - 0.5))``, ``i = 0..width-1`` (``shifts``, see
    :func:`_motion_shifts`; the kernel depends on the angle only through them, so it is cached by them),
    weighted by a normalised Gaussian of ``i`` with ``sigma``, stopping at shifts as large as the image
    (we renormalise the truncated weights so tiny images do not darken). Returned as a compact kernel
    plus its anchor.
    """
    n = 2 * radius + 1
    i = np.arange(n, dtype=np.float64)
    w = np.exp(-(i**2) / (2.0 * sigma**2))
    w /= w.sum()
    dy = np.array(shifts[0])
    dx = np.array(shifts[1])
    keep = np.ones(n, dtype=bool)
    bad = np.flatnonzero((np.abs(dy) >= height) | (np.abs(dx) >= width))
    if bad.size:
        keep[bad[0]:] = False
    w, dy, dx = w[keep], dy[keep], dx[keep]
    w /= w.sum()
    # output(y, x) = sum_i w_i * img(y - dy_i, x - dx_i); as a correlation kernel K(r, c) applied at
    # anchor (ar, ac): img(y + r - ar, x + c - ac)  =>  r - ar = -dy_i, c - ac = -dx_i.
    ry, rx = -dy, -dx
    ar, ac = -ry.min(), -rx.min()
    kern = np.zeros((ry.max() - ry.min() + 1, rx.max() - rx.min() + 1), dtype=np.float32)
    np.add.at(kern, (ry + ar, rx + ac), w.astype(np.float32))
    return kern, (int(ac), int(ar))


@functools.lru_cache(maxsize=512)
def _motion_plan(radius: int, sigma: float, shifts: tuple, height: int, width: int):
    """The motion kernel split into pieces small enough for OpenCV's direct (sparse, non-DFT) filter.

    Returns ``(pad, pieces)``: ``pad = (top, bottom, left, right)`` edge replication and, per piece, its
    kernel and the ``(row, col)`` offset of its top-left tap relative to the output pixel."""
    kern, (ac, ar) = _motion_kernel(radius, sigma, shifts, height, width)
    ys, xs = np.nonzero(kern)
    oy, ox = ys - ar, xs - ac
    order = np.lexsort((np.abs(ox), np.abs(oy)))  # taps along the line
    pieces = []

    def flush(taps):
        ty = [t[0] for t in taps]
        tx = [t[1] for t in taps]
        y0, x0 = min(ty), min(tx)
        k = np.zeros((max(ty) - y0 + 1, max(tx) - x0 + 1), dtype=np.float32)
        for yy, xx in taps:
            k[yy - y0, xx - x0] = kern[yy + ar, xx + ac]
        pieces.append((k, int(y0), int(x0)))

    cur: list = []
    by0 = by1 = bx0 = bx1 = 0  # bounding box of cur
    for t in zip(oy[order].tolist(), ox[order].tolist()):
        if cur:
            ny0, ny1, nx0, nx1 = min(by0, t[0]), max(by1, t[0]), min(bx0, t[1]), max(bx1, t[1])
            if (ny1 - ny0 + 1) * (nx1 - nx0 + 1) < 49:
                cur.append(t)
                by0, by1, bx0, bx1 = ny0, ny1, nx0, nx1
                continue
            flush(cur)
        cur = [t]
        by0 = by1 = t[0]
        bx0 = bx1 = t[1]
    if cur:
        flush(cur)
    pad = (max(0, -int(oy.min())), max(0, int(oy.max())), max(0, -int(ox.min())), max(0, int(ox.max())))
    return pad, tuple(pieces)


def motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageNet-C motion blur of a float32 ``(H, W[, C])`` array (edges replicated); same shape.

    The line kernel is applied in pieces of fewer than 49 bounding-box pixels, each by OpenCV's direct
    filter (which visits only non-zero taps), on an edge-replicated copy: much faster than one large
    (FFT-filtered) kernel for this sparse line, and the same sum."""
    h, w = x.shape[:2]
    pad, pieces = _motion_plan(int(radius), float(sigma), _motion_shifts(int(radius), float(angle)), h, w)
    top, bottom, left, right = pad
    if x.ndim == 3 and x.shape[2] > 1:  # the direct filter is much faster per plane
        planes = [_motion_plane(np.ascontiguousarray(x[:, :, i]), pad, pieces) for i in range(x.shape[2])]
        return cv2.merge(planes).reshape(x.shape)
    return _motion_plane(x if x.ndim == 2 else x[:, :, 0], pad, pieces).reshape(x.shape)


def _motion_plane(src: np.ndarray, pad: tuple[int, int, int, int], pieces: tuple) -> np.ndarray:
    h, w = src.shape
    top, bottom, left, right = pad
    padded = cv2.copyMakeBorder(src, top, bottom, left, right, cv2.BORDER_REPLICATE)
    acc = None
    for k, y0, x0 in pieces:
        kh, kw = k.shape
        sub = padded[top + y0:top + y0 + h + kh - 1, left + x0:left + x0 + w + kw - 1]
        y = cv2.filter2D(sub, -1, k, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[:h, :w]
        if acc is None:
            acc = np.ascontiguousarray(y)
        else:
            cv2.add(acc, y, dst=acc)
    return acc


def plasma_fractal(rng: np.random.Generator, mapsize: int, wibbledecay: float) -> np.ndarray:
    """Diamond-square height map as ImageNet-C's fog uses it (random offsets ``wibble * U(-wibble,
    wibble)``, ``wibble`` starting at 100 and divided by ``wibbledecay`` per level, wrap-around
    neighbours), min-max normalised to ``[0, 1]``. ``mapsize`` must be a power of two >= 2.

    Returns:
        float32 ``(mapsize, mapsize)``.
    """
    if mapsize < 2 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two >= 2, got {mapsize}")
    m = np.zeros((mapsize, mapsize), dtype=np.float32)
    step = mapsize
    wibble = 100.0

    def jitter(a: np.ndarray) -> np.ndarray:
        return a * 0.25 + (wibble * wibble) * (2.0 * rng.random(a.shape, dtype=np.float32) - 1.0)

    while step >= 2:
        half = step // 2
        corners = m[0::step, 0::step]
        # squares: centre = mean of the four corners
        acc = corners + np.roll(corners, -1, axis=0)
        acc = acc + np.roll(acc, -1, axis=1)
        m[half::step, half::step] = jitter(acc)
        # diamonds: edge midpoints = mean of two corners and two centres
        centres = m[half::step, half::step]
        corners = m[0::step, 0::step]
        m[0::step, half::step] = jitter(centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1))
        m[half::step, 0::step] = jitter(centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0))
        step = half
        wibble /= wibbledecay
    m -= m.min()
    top = m.max()
    if top > 0:
        m /= top
    return m


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= ``max(n, 2)``."""
    return max(2, 1 << (max(n, 1) - 1).bit_length())
