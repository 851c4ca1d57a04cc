"""Deterministic random streams and fast samplers.

Determinism contract: the generator handed to a corruption is a pure function of
``(seed, corruption name, image pixels + layout)``. It is built from a SHA-256 digest of those, so the
same inputs give the same stream in any process and in any order of calls, and no global RNG
(``random``, ``numpy.random``, ``torch``) is read or changed.

The severity is deliberately *not* part of the digest: all five severities of one image see the same
random draws (common random numbers), so a severity sweep is a coherent ladder (the same noise field
scaled up, the same patches masked plus more, the same blur direction) instead of five unrelated samples.

Samplers: :func:`standard_normal` draws N(0, 1) by 16-bit inverse-CDF table look-up (quantiles at the
centres of 65536 equal-probability cells). That is 5-10x faster than ``Generator.standard_normal``;
its moments match to ~1e-4 and its tails stop at |z| = 4.3 (probability 2e-5), which is invisible
once an image is quantised to 8 bits. :func:`poisson_from_levels` is an exact inverse-CDF Poisson
sampler (32-bit uniforms) for intensities on a 256-level grid.
"""

from __future__ import annotations

import functools
import hashlib
import statistics

import numpy as np

__all__ = ["make_rng", "image_digest", "standard_normal", "uniform01", "poisson_from_levels", "derive_seed"]

_DOMAIN = b"rac_losses.corruption/v1"


def check_seed(seed: object, *, argname: str = "seed") -> int:
    """Validate a seed: a non-negative Python or NumPy integer (not ``bool``).

    Raises:
        TypeError: if ``seed`` is not an integer.
        ValueError: if ``seed`` is negative.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{argname} must be a non-negative int, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"{argname} must be a non-negative int, got {seed}")
    return seed


def image_digest(layout: str, pixels: np.ndarray, extra: bytes = b"") -> bytes:
    """SHA-256 over a layout tag, the array's shape/dtype and its raw bytes (C order).

    Args:
        layout: a tag such as the PIL mode (``"RGB"``); arrays are tagged with their implied mode.
        pixels: the image's native pixel array (any shape/dtype).
        extra: additional bytes (e.g. a palette).
    """
    h = hashlib.sha256()
    arr = np.ascontiguousarray(pixels)
    h.update(f"{layout}|{arr.shape}|{arr.dtype.str}|".encode())
    h.update(memoryview(arr).cast("B") if arr.size else b"")
    h.update(extra)
    return h.digest()


def make_rng(seed: int, name: str, digest: bytes) -> np.random.Generator:
    """The generator for one ``(seed, name, image)``: PCG64 seeded from SHA-256 of the three."""
    h = hashlib.sha256(_DOMAIN)
    h.update(b"\0" + name.encode() + b"\0" + str(seed).encode() + b"\0" + digest)
    return np.random.Generator(np.random.PCG64(int.from_bytes(h.digest(), "little")))


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed derived from ``seed`` and string parts (used by :class:`CorruptionPolicy`)."""
    h = hashlib.sha256(_DOMAIN + b"|derive|" + str(seed).encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    nd = statistics.NormalDist()
    q = [nd.inv_cdf((k + 0.5) / 65536.0) for k in range(65536)]
    tab = np.asarray(q, dtype=np.float64)
    tab -= tab.mean()  # exactly symmetric already; guards rounding
    tab /= tab.std()  # unit variance exactly (the truncated tails lose ~1e-4)
    return tab.astype(np.float32)


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``float32`` array of ``shape`` with (16-bit quantile) N(0, 1) entries."""
    n = int(np.prod(shape))
    u = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)
    table = _normal_table()
    out = np.empty(n, dtype=np.float32)
    # in blocks: np.take converts the indices to intp, and one image-sized intp temporary costs more
    # in page faults than the look-up itself
    for i in range(0, n, _TAKE_BLOCK):
        np.take(table, u[i:i + _TAKE_BLOCK], out=out[i:i + _TAKE_BLOCK])
    return out.reshape(shape)


_TAKE_BLOCK = 16384


def uniform01(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``float32`` uniforms in ``[0, 1)``."""
    return rng.random(shape, dtype=np.float32)


_BUCKET_BITS = 12  # coarse table resolution for the Poisson sampler


@functools.lru_cache(maxsize=16)
def _poisson_tables(scale: float, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF tables for Poisson(scale * l / levels), l = 0..levels.

    Returns ``(cdf, coarse)``: ``cdf[l, k] = P(X <= k)`` (float64, padded with 1.0) and
    ``coarse[l, b]`` = the sample value for every uniform in bucket ``b`` of ``2**12`` equal buckets,
    or 255 where the bucket straddles a CDF step (resolved exactly against ``cdf``).
    """
    lam = scale * np.arange(levels + 1, dtype=np.float64) / levels
    kmax = int(scale + 12.0 * np.sqrt(scale) + 30.0)
    if kmax >= 255:
        raise ValueError(f"Poisson table too large for scale {scale}")
    k = np.arange(kmax + 1, dtype=np.float64)
    # log pmf = k log(lam) - lam - log(k!)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kmax + 1)))])
    with np.errstate(divide="ignore", invalid="ignore"):
        logpmf = k[None, :] * np.log(lam[:, None]) - lam[:, None] - logfact[None, :]
    pmf = np.exp(logpmf)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # lam = 0: X = 0 surely
    cdf = np.minimum(np.cumsum(pmf, axis=1), 1.0)
    cdf[:, -1] = 1.0
    nb = 1 << _BUCKET_BITS
    edges = np.arange(nb + 1, dtype=np.float64) / nb
    coarse = np.empty((levels + 1, nb), dtype=np.uint8)
    for li in range(levels + 1):
        lo = np.searchsorted(cdf[li], edges[:-1], side="right")  # value at the bucket's start
        hi = np.searchsorted(cdf[li], edges[1:], side="left")  # value just below the bucket's end
        coarse[li] = np.where(lo == hi, lo, 255).astype(np.uint8)
    return cdf, coarse


def poisson_from_levels(rng: np.random.Generator, levels_img: np.ndarray, scale: float, levels: int = 255) -> np.ndarray:
    """Exact Poisson draws with means ``scale * levels_img / levels``.

    Args:
        levels_img: integer array (any shape) with values in ``0..levels``.
        scale: the Poisson mean at ``levels_img == levels``.

    Returns:
        ``uint8`` array of the same shape (counts; ``scale`` must keep them below 255).
    """
    cdf, coarse = _poisson_tables(float(scale), int(levels))
    n = levels_img.size
    u = np.frombuffer(rng.bytes(4 * n), dtype=np.uint32).reshape(levels_img.shape)
    table = coarse.reshape(-1)
    lv = levels_img.reshape(-1)
    uf = u.reshape(-1)
    out = np.empty(n, dtype=np.uint8)
    idx = np.empty(min(n, _TAKE_BLOCK), dtype=np.intp)
    for i in range(0, n, _TAKE_BLOCK):  # in blocks: no image-sized index temporaries (see standard_normal)
        j = min(n, i + _TAKE_BLOCK)
        k = idx[: j - i]
        np.left_shift(lv[i:j], _BUCKET_BITS, out=k, dtype=np.intp)
        k |= uf[i:j] >> (32 - _BUCKET_BITS)
        np.take(table, k, out=out[i:j])
    out = out.reshape(levels_img.shape)
    amb = out == 255
    if amb.any():
        la = levels_img[amb].astype(np.intp)
        ua = (u[amb].astype(np.float64) + 0.5) / 4294967296.0
        out[amb] = (cdf[la] <= ua[:, None]).sum(axis=1).astype(np.uint8)
    return out
