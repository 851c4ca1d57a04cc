"""Fixtures for the corruption tests (images are small except where a size is required)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from _images import natural_image  # noqa: E402


def all_modes(rgb: np.ndarray) -> dict[str, Image.Image]:
    """The image in each mode the spec names (RGB, L, RGBA, P with a transparent entry, I;16) plus LA."""
    base = Image.fromarray(rgb)
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).astype(np.uint8).reshape(rgb.shape[:2])])
    p = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    p.info["transparency"] = 0
    i16 = Image.frombytes("I;16", base.size, (rgb[:, :, 1].astype(np.uint16) * 257 + 3).astype("<u2").tobytes())
    return {
        "RGB": base,
        "L": base.convert("L"),
        "RGBA": Image.fromarray(rgba),
        "LA": base.convert("LA"),
        "P": p,
        "I;16": i16,
    }


@pytest.fixture(scope="session")
def nat() -> np.ndarray:
    return natural_image(0)
