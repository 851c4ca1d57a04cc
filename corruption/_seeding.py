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
import sys

import numpy as np

__all__ = ["make_rng", "image_digest", "random_bits", "standard_normal", "uniform01", "poisson_from_levels", "derive_seed"]

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


_LITTLE = sys.byteorder == "little"


def random_bits(rng: np.random.Generator, n: int, dtype: type = np.uint16) -> np.ndarray:
    """``n`` uniform ``uint16``/``uint32`` words: the little-endian pieces of ``ceil(n * size / 8)``
    full-range 64-bit draws (``rng.integers(0, 2**64, dtype=uint64)``; the same on any platform).

    One 64-bit draw per four 16-bit words is ~1.6x faster than ``Generator.bytes``' 32-bit draws (and
    ~6x faster than ``bytes`` itself, which copies its output three times)."""
    size = np.dtype(dtype).itemsize
    words = (size * n + 7) // 8
    raw = rng.integers(0, 1 << 64, size=words, dtype=np.uint64, endpoint=False)
    if not _LITTLE:
        return raw.astype("<u8").view(np.dtype(dtype).newbyteorder("<"))[:n].astype(dtype)
    return raw.view(dtype)[:n]


@functools.lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    nd = statistics.NormalDist()
    q = [nd.inv_cdf((k + 0.5) / 65536.0) for k in range(65536)]
    tab = np.asarray(q, dtype=np.float64)
    tab -= tab.mean()  # exactly symmetric already; guards rounding
    tab /= tab.std()  # unit variance exactly (the truncated tails lose ~1e-4)
    return tab.astype(np.float32)


@functools.lru_cache(maxsize=16)
def scaled_normal_table(scale: float) -> np.ndarray:
    """``int16`` table ``rint(scale * q)`` of the 65536 normal quantiles ``q`` (for 8-bit sources:
    ``x + rint(255 c z)`` equals ``rint(x + 255 c z)`` for integer ``x``, up to rounding ties)."""
    t = np.rint(_normal_table().astype(np.float64) * scale)
    if np.abs(t).max() > 32767:
        raise ValueError(f"scale {scale} too large for an int16 table")
    t = t.astype(np.int16)
    t.flags.writeable = False
    return t


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """``float32`` array of ``shape`` with (16-bit quantile) N(0, 1) entries."""
    n = int(np.prod(shape))
    out = np.empty(n, dtype=np.float32)
    for i, j, z in normal_blocks(rng, n):
        out[i:j] = z
    return out.reshape(shape)


def normal_blocks(rng: np.random.Generator, n: int, table: np.ndarray | None = None):
    """Yield ``(start, stop, z)`` over ``n`` (16-bit quantile) N(0, 1) values, ``z`` a ``float32``
    block of length ``stop - start`` (a reused buffer: consume it before the next step).

    The values are exactly those of :func:`standard_normal` (the 16-bit words of
    ``random_bits(rng, n)``), drawn block by block: no image-sized temporaries (the index conversion in
    ``np.take`` and fresh image-sized buffers cost more in page faults than the look-up itself).
    ``table`` replaces the quantile table by a transformed copy of it (e.g. :func:`scaled_normal_table`)."""
    if table is None:
        table = _normal_table()
    buf = np.empty(min(n, _TAKE_BLOCK), dtype=table.dtype)
    for i in range(0, n, _TAKE_BLOCK):
        j = min(n, i + _TAKE_BLOCK)
        z = buf[: j - i]
        np.take(table, random_bits(rng, j - i, np.uint16), out=z)  # _TAKE_BLOCK % 4 == 0: same words
        yield i, j, z


_TAKE_BLOCK = 131072  # a multiple of 4: blocks draw whole 64-bit words


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
    table = coarse.reshape(-1)
    lv = np.ascontiguousarray(levels_img).reshape(-1)
    out = np.empty(n, dtype=np.uint8)
    idx = np.empty(min(n, _TAKE_BLOCK), dtype=np.intp)
    # in blocks (uniforms included): no image-sized temporaries (see normal_blocks); the words drawn
    # are those of random_bits(rng, n, np.uint32)
    for i in range(0, n, _TAKE_BLOCK):
        j = min(n, i + _TAKE_BLOCK)
        uf = random_bits(rng, j - i, np.uint32)
        k = idx[: j - i]
        np.left_shift(lv[i:j], _BUCKET_BITS, out=k, dtype=np.intp)
        k |= uf >> (32 - _BUCKET_BITS)
        o = out[i:j]
        np.take(table, k, out=o)
        amb = o == 255
        if amb.any():
            la = lv[i:j][amb].astype(np.intp)
            ua = (uf[amb].astype(np.float64) + 0.5) / 4294967296.0
            o[amb] = (cdf[la] <= ua[:, None]).sum(axis=1).astype(np.uint8)
    return out.reshape(levels_img.shape)
