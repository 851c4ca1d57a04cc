"""Every corruption at every severity on every mode and the required sizes; argument errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import all_modes
from _images import natural_image
from rac_losses.corruption import (
    CORRUPTIONS, FAMILIES, IMAGENET_C, IMAGENET_C_VALIDATION, RAC_VARIANTS, SEVERITIES, VLM_CORRUPTIONS, corrupt,
)
from rac_losses.corruption._registry import REGISTRY

NAMES = list(CORRUPTIONS)
SIZES = [(1, 1), (3, 5), (17, 255)]  # (H, W); 1024x768 below


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return natural_image(seed, h, w) if min(h, w) >= 8 else np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_catalogue() -> None:
    assert len(IMAGENET_C) == 15 and len(IMAGENET_C_VALIDATION) == 4
    assert set(CORRUPTIONS) == set(IMAGENET_C) | set(IMAGENET_C_VALIDATION) | set(VLM_CORRUPTIONS) | set(RAC_VARIANTS)
    assert list(CORRUPTIONS) == [*IMAGENET_C, *IMAGENET_C_VALIDATION, *VLM_CORRUPTIONS, *RAC_VARIANTS]
    assert {n for n, c in REGISTRY.items() if c.source == "rac-release"} == set(RAC_VARIANTS)
    for n in RAC_VARIANTS:  # each variant's family is the ImageNet-C original's
        assert CORRUPTIONS[n] == CORRUPTIONS[n.removesuffix("_rac")]
    assert set(CORRUPTIONS.values()) <= set(FAMILIES)
    assert CORRUPTIONS["gaussian_noise"] == "noise" and CORRUPTIONS["frost"] == "weather"
    assert CORRUPTIONS["glass_blur"] == "blur" and CORRUPTIONS["pixelate"] == "digital"
    with pytest.raises(TypeError):
        CORRUPTIONS["x"] = "noise"  # read-only


@pytest.mark.parametrize("name", NAMES)
def test_modes_and_small_sizes(name: str) -> None:
    for h, w in SIZES:
        for mode, img in all_modes(_rgb(h, w)).items():
            for sev in SEVERITIES:
                out = corrupt(img, name, sev, seed=1)
                assert isinstance(out, Image.Image)
                assert (out.mode, out.size) == (img.mode, img.size), (mode, h, w, sev)
                if mode in ("RGBA", "LA"):  # alpha untouched
                    assert np.array_equal(np.asarray(out)[..., -1], np.asarray(img)[..., -1])
                if mode == "P":
                    idx, src = np.asarray(out), np.asarray(img)
                    assert np.array_equal(idx[src == 0], src[src == 0])  # transparent entry kept
                    assert out.getpalette()[: len(img.getpalette())] == img.getpalette()


@pytest.mark.parametrize("name", NAMES)
def test_arrays(name: str) -> None:
    rgb = _rgb(17, 255)
    arrays = [rgb, rgb[:, :, 0], rgb[:, :, :1], rgb[:, :, :2], np.dstack([rgb, rgb[:, :, :1]]), rgb.astype(np.uint16) * 257]
    for a in arrays:
        for sev in SEVERITIES:
            out = corrupt(a, name, sev)
            assert isinstance(out, np.ndarray) and out.shape == a.shape and out.dtype == a.dtype
        if a.ndim == 3 and a.shape[2] in (2, 4):
            assert np.array_equal(out[..., -1], a[..., -1])
    before = rgb.copy()
    corrupt(rgb, name, 3)
    assert np.array_equal(rgb, before), "input must not be modified"


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_1024x768_every_name_and_severity(mode: str) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    image = all_modes(rgb)[mode]
    for name in NAMES:
        for sev in SEVERITIES:
            out = corrupt(image, name, sev)
            assert (out.mode, out.size) == (mode, (1024, 768))


def test_other_modes() -> None:
    rgb = _rgb(20, 30)
    base = Image.fromarray(rgb)
    for img in (base.convert("1"), base.convert("I"), base.convert("CMYK"), base.convert("YCbCr"),
                base.convert("L").convert("I;16B")):
        out = corrupt(img, "gaussian_noise", 3)
        assert (out.mode, out.size) == (img.mode, img.size)


def test_pil_and_array_agree() -> None:
    rgb = _rgb(24, 40)
    out_img = corrupt(Image.fromarray(rgb), "shot_noise", 4, seed=3)
    out_arr = corrupt(rgb, "shot_noise", 4, seed=3)
    assert np.array_equal(np.asarray(out_img), out_arr)


def test_16_bit_precision_kept() -> None:
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7 + 11)
    out = corrupt(a, "contrast", 1)
    assert len(np.unique(out)) > 1000  # not squeezed through 8 bits


@pytest.mark.parametrize("severity", [0, 6, -1, 100])
def test_bad_severity(severity: int) -> None:
    with pytest.raises(ValueError, match="severity must be an int in 1..5"):
        corrupt(np.zeros((4, 4, 3), np.uint8), "gaussian_noise", severity)


def test_bad_arguments() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown corruption name 'gausian_noise'.*gaussian_noise.*zoom_blur"):
        corrupt(img, "gausian_noise", 1)
    with pytest.raises(TypeError, match="name must be a str"):
        corrupt(img, 3, 1)
    with pytest.raises(TypeError, match="severity must be an int"):
        corrupt(img, "gaussian_noise", 2.0)
    with pytest.raises(TypeError, match="severity must be an int"):
        corrupt(img, "gaussian_noise", True)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        corrupt(img, "gaussian_noise", 1, seed="0")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        corrupt(img, "gaussian_noise", 1, seed=-1)


@pytest.mark.parametrize(
    ("image", "exc", "match"),
    [
        ([[0, 1], [2, 3]], TypeError, "image must be a PIL.Image.Image or a uint8/uint16 numpy array, got list"),
        ("cat.png", TypeError, "got str"),
        (np.zeros((4, 4, 3), np.float32), TypeError, "dtype uint8 or uint16, got float32"),
        (np.zeros((4, 4, 3), np.int64), TypeError, "dtype uint8 or uint16"),
        (np.zeros((4, 4, 5), np.uint8), ValueError, r"shape \(H, W\) or \(H, W, C\)"),
        (np.zeros((4,), np.uint8), ValueError, r"shape \(H, W\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "at least 1x1"),
        (Image.new("F", (4, 4)), TypeError, "unsupported PIL image mode 'F'; supported modes: 1, L, LA"),
    ],
)
def test_non_image_input(image: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        corrupt(image, "gaussian_noise", 1)
