"""The corruption registry: name -> (family, implementation).

Every corruption is a function ``fn(x, severity, rng, *, max_value) -> np.ndarray`` working on a
*working array*: ``float32`` of shape ``(H, W, C)`` with ``C`` in ``{1, 3}`` and values in ``[0, 1]``
(see :mod:`.modes`). It must return a new ``float32`` array of the same shape (values may fall outside
``[0, 1]``; the caller clips). ``severity`` is an int in ``1..5`` (already validated) and ``rng`` a
:class:`numpy.random.Generator` seeded by :mod:`._seeding`; no other source of randomness may be used.
``max_value`` is 255 for 8-bit sources and 65535 for 16-bit ones, for the few corruptions that quantise.

Corruptions flagged ``needs_rgb`` are handed a 3-channel array even for grey sources (the caller
replicates the grey channel and converts the result back with ITU-R 601 luma weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

__all__ = [
    "Corruption", "register", "register_u8", "get", "REGISTRY", "FAMILIES", "SEVERITIES", "SOURCES",
    "LEVELS", "corruption_level", "severity_for_level",
]

#: Valid severities, as in ImageNet-C.
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: The RAC paper's corruption levels ``severity / 5`` (its file names: ``T0.2`` ... ``T1.0``).
LEVELS: tuple[float, ...] = tuple(s / 5 for s in SEVERITIES)


def corruption_level(severity: int) -> float:
    """The RAC paper's corruption level of a severity: ``severity / 5`` (0 for a clean image).

    Raises:
        ValueError: if ``severity`` is not an int in 0..5.
    """
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= int(severity) <= 5:
        raise ValueError(f"severity must be an int in 0..5 (0 = clean), got {severity!r}")
    return int(severity) / 5


def severity_for_level(level: float) -> int:
    """The severity of a RAC corruption level (``0.2 -> 1`` ... ``1.0 -> 5``, ``0 -> 0``).

    Raises:
        ValueError: if ``level`` is not (within 1e-6) one of 0, 0.2, 0.4, 0.6, 0.8, 1.0.
    """
    try:
        s = round(float(level) * 5)
    except (TypeError, ValueError):
        raise ValueError(f"level must be one of 0, 0.2, 0.4, 0.6, 0.8, 1.0, got {level!r}") from None
    if not 0 <= s <= 5 or abs(float(level) * 5 - s) > 5e-6:
        raise ValueError(f"level must be one of 0, 0.2, 0.4, 0.6, 0.8, 1.0, got {level!r}")
    return s

#: Where a corruption's definition comes from.
SOURCES: tuple[str, ...] = ("imagenet-c", "imagenet-c-validation", "vlm", "rac-release")

#: Families, in display order.
FAMILIES: tuple[str, ...] = ("noise", "blur", "weather", "digital", "occlusion")

CorruptionFn = Callable[..., np.ndarray]


@dataclasses.dataclass(frozen=True)
class Corruption:
    """One registered corruption.

    Attributes:
        name: the public name (e.g. ``"gaussian_noise"``).
        family: one of :data:`FAMILIES`.
        source: one of :data:`SOURCES` (``"rac-release"``: the RAC release's variant of an ImageNet-C
            corruption, see :mod:`.rac`).
        fn: the implementation (see module docstring for its contract).
        needs_rgb: whether ``fn`` requires 3 channels.
        severity_dependent: ``False`` for corruptions that ignore the severity (``gray_mask``, ``blank``).
        u8: optional 8-bit fast path (see :func:`register_u8`).
        uses_rng: ``False`` for deterministic corruptions: they are handed ``rng=None`` and the caller
            skips hashing the image for a generator nobody reads.
    """

    name: str
    family: str
    source: str
    fn: CorruptionFn
    needs_rgb: bool = False
    severity_dependent: bool = True
    u8: CorruptionFn | None = None
    uses_rng: bool = True


_REGISTRY: dict[str, Corruption] = {}
#: Read-only view of the registry, in registration order.
REGISTRY: Mapping[str, Corruption] = MappingProxyType(_REGISTRY)


def register(
    name: str,
    family: str,
    source: str,
    *,
    needs_rgb: bool = False,
    severity_dependent: bool = True,
    uses_rng: bool = True,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator registering ``fn`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered or ``family``/``source`` is unknown.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")

    def deco(fn: CorruptionFn) -> CorruptionFn:
        if name in _REGISTRY:
            raise ValueError(f"corruption {name!r} is already registered")
        _REGISTRY[name] = Corruption(name, family, source, fn, needs_rgb, severity_dependent, uses_rng=uses_rng)
        return fn

    return deco


def register_u8(name: str) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator attaching an 8-bit fast path to the registered corruption ``name``.

    ``fn(x8, severity, rng) -> np.ndarray``: ``x8`` is ``uint8`` ``(H, W, C)``, ``C`` in ``{1, 3}``
    (read only: it may be the caller's own array), the result a new ``uint8`` array of the same shape
    (``(H, W)`` is accepted for ``C == 1``). It must compute what the float path followed by the 8-bit
    quantisation computes (up to rounding ties) and draw the same random numbers. :func:`corrupt` uses it
    for 8-bit grey/RGB sources without alpha, skipping the float conversion and quantisation.
    """

    def deco(fn: CorruptionFn) -> CorruptionFn:
        _REGISTRY[name] = dataclasses.replace(_REGISTRY[name], u8=fn)
        return fn

    return deco


def get(name: object) -> Corruption:
    """Look a corruption up by name.

    Raises:
        TypeError: if ``name`` is not a ``str``.
        ValueError: if ``name`` is unknown; the message lists the valid names.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (one of {sorted(_REGISTRY)}), got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown corruption name {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None
