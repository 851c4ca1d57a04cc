"""``region``: only the box/mask is corrupted; everything outside is unchanged bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import all_modes
from _images import natural_image
from rac_losses.corruption import CORRUPTIONS, corrupt


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_box_and_mask(name: str) -> None:
    rgb = natural_image(4, 40, 52)
    box = (10, 5, 31, 27)  # x0, y0, x1, y1
    inside = np.zeros((40, 52), bool)
    inside[5:27, 10:31] = True
    blob = np.hypot(*np.mgrid[-20:20, -26:26]) < 12
    for mode, img in all_modes(rgb).items():
        full = np.asarray(corrupt(img, name, 4, seed=2))
        src = np.asarray(img)
        for region, where in ((box, inside), (blob, blob), (list(box), inside)):
            out = np.asarray(corrupt(img, name, 4, seed=2, region=region))
            assert np.array_equal(out[~where], src[~where]), (mode, name)
            assert np.array_equal(out[where], full[where]), (mode, name)  # the same draws as unrestricted


def test_box_is_clipped_and_widened() -> None:
    img = np.full((10, 10, 3), 128, np.uint8)
    out = corrupt(img, "blank", 1, region=(-5.0, 7.5, 100, 200))
    assert (out[8:] == 0).all() and (out[:7] == 128).all()
    assert (out[7] == 0).all()  # y0 = 7.5 widens to row 7


def test_pil_mask() -> None:
    img = Image.new("RGB", (8, 6), (9, 9, 9))
    m = Image.new("L", (8, 6), 0)
    m.putpixel((2, 3), 255)
    out = np.asarray(corrupt(img, "blank", 1, region=m))
    assert (out[3, 2] == 0).all() and (out.sum() == 9 * 3 * 47)


@pytest.mark.parametrize(
    ("region", "exc", "match"),
    [
        ((5, 5, 5, 9), ValueError, "x1 > x0 and y1 > y0"),
        ((50, 50, 60, 60), ValueError, "does not overlap the 10x8"),
        ((0, 0, float("nan"), 3), ValueError, "finite"),
        ((0, 0, 3), TypeError, "region must be None, a box"),
        ((0, 0, "3", 4), TypeError, "4 numbers"),
        (np.ones((8, 10), np.uint8), TypeError, "bool array"),
        (np.ones((10, 8), bool), ValueError, r"shape \(H, W\) = \(8, 10\)"),
        (Image.new("RGB", (10, 8)), TypeError, "mode '1' or 'L'"),
    ],
)
def test_bad_region(region: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        corrupt(np.zeros((8, 10, 3), np.uint8), "gaussian_noise", 1, region=region)
