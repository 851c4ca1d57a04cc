"""Lazy access to albumentations' functional kernels.

Importing albumentations takes 1.5-2.5 s and, unless ``NO_ALBUMENTATIONS_UPDATE`` is set, queries PyPI
for a newer version at import. We import it only when a corruption that uses it first runs, and set
``NO_ALBUMENTATIONS_UPDATE=1`` beforehand unless the user chose a value: a library should not make
network requests as a side effect.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

__all__ = ["pixel", "blur", "geometric"]


def _prepare() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@functools.cache
def pixel() -> ModuleType:
    """``albumentations.augmentations.pixel.functional``."""
    _prepare()
    from albumentations.augmentations.pixel import functional

    return functional


@functools.cache
def blur() -> ModuleType:
    """``albumentations.augmentations.blur.functional``."""
    _prepare()
    from albumentations.augmentations.blur import functional

    return functional


@functools.cache
def geometric() -> ModuleType:
    """``albumentations.augmentations.geometric.functional``."""
    _prepare()
    from albumentations.augmentations.geometric import functional

    return functional
