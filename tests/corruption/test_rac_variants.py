"""The RAC release's variants (``fog_rac``, ``impulse_noise_rac``, ``elastic_transform_rac``): each against
a slow reference of its definition, its contrast with ImageNet-C's version, determinism through ``corrupt``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from _images import natural_image
from rac_losses.corruption import RAC_VARIANTS, SEVERITIES, corrupt
from rac_losses.corruption._ops import next_power_of_two, plasma_fractal
from rac_losses.corruption.noise import IMPULSE_NOISE
from rac_losses.corruption.rac import ELASTIC_RAC, elastic_rac_params, elastic_transform_rac, fog_rac, impulse_noise_rac
from rac_losses.corruption.weather import FOG


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return natural_image(3, 40, 56).astype(np.float32) / 255


def _mean_change(img: np.ndarray, name: str, sev: int, seeds: int = 4) -> float:
    return float(np.mean([np.abs(corrupt(img, name, sev, seed=s).astype(np.float64) - img).mean() for s in range(seeds)]))


@pytest.mark.parametrize("sev", SEVERITIES)
def test_fog_rac_normalises_by_the_maximum_after_the_fog(x: np.ndarray, sev: int) -> None:
    a, decay = FOG[sev - 1]
    plasma = plasma_fractal(np.random.default_rng(9), next_power_of_two(56), decay)[:40, :56, None].astype(np.float64)
    fogged = x.astype(np.float64) + a * plasma
    want = fogged * fogged.max() / (fogged.max() + a)
    got = fog_rac(x, sev, np.random.default_rng(9), max_value=255)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("sev", SEVERITIES)
def test_impulse_noise_rac_matches_a_loop(x: np.ndarray, sev: int) -> None:
    h, w, _ = x.shape
    n = int(h * w * IMPULSE_NOISE[sev - 1])
    rng = np.random.default_rng(4)
    ys, xs, coins = rng.integers(0, h, n), rng.integers(0, w, n), rng.random(n)
    want = x.copy()
    for i in np.argsort(coins >= 0.5, kind="stable"):  # salt pixels first, then pepper (pepper wins a tie)
        want[ys[i], xs[i], :] = 1.0 if coins[i] < 0.5 else 0.0
    got = impulse_noise_rac(x, sev, np.random.default_rng(4), max_value=255)
    np.testing.assert_array_equal(got, want)
    changed = np.any(got != x, axis=2)
    assert np.all(np.isin(got[changed], (0.0, 1.0)))  # whole pixels, every channel the same value
    assert np.all((got[changed] == got[changed][:, :1]))


def test_impulse_noise_rac_draws_with_replacement() -> None:
    # ImageNet-C hits a share c of the *values*; the release draws int(H W c) pixels with replacement, so it
    # hits 1 - exp(-c) of the pixels (fewer distinct ones), every channel at once
    img = natural_image(0, 128, 160)
    c = IMPULSE_NOISE[4]
    hit = np.mean([np.any(corrupt(img, "impulse_noise_rac", 5, seed=s) != img, axis=2).mean() for s in range(3)])
    assert abs(hit - (1 - np.exp(-c))) < 0.02
    assert _mean_change(img, "impulse_noise_rac", 5, 3) < 0.92 * _mean_change(img, "impulse_noise", 5, 3)


def _elastic_reference(x: np.ndarray, sev: int, rng: np.random.Generator) -> np.ndarray:
    """The release's construction with SciPy's filters (float64): affine warp of three points, then a
    Gaussian-smoothed random displacement, bilinear, reflected borders."""
    import cv2

    h, w, _ = x.shape
    alpha, sigma, affine = elastic_rac_params(sev, h, w)
    c = np.array([h // 2, w // 2], dtype=np.float32)
    s = min(h, w) // 3
    src = np.array([c + s, [c[0] + s, c[1] - s], c - s], dtype=np.float32)
    dst = (src + rng.uniform(-affine, affine, size=src.shape)).astype(np.float32)
    warped = cv2.warpAffine(x, cv2.getAffineTransform(src, dst), (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101).reshape(x.shape)
    sigma = max(sigma, 0.01)
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="reflect", truncate=3) * alpha
    gy, gx = np.mgrid[0:h, 0:w]
    coords = [gy + dy, gx + dx]
    return np.dstack([ndimage.map_coordinates(warped[:, :, k].astype(np.float64), coords, order=1, mode="reflect")
                      for k in range(x.shape[2])])


@pytest.mark.parametrize("sev", SEVERITIES)
@pytest.mark.parametrize("shape", [(40, 56, 3), (31, 23, 1)])
def test_elastic_transform_rac_matches_scipy(sev: int, shape: tuple[int, int, int]) -> None:
    x = natural_image(5, shape[0], shape[1]).astype(np.float32)[:, :, : shape[2]] / 255
    got = elastic_transform_rac(x, sev, np.random.default_rng(2), max_value=255)
    want = _elastic_reference(x, sev, np.random.default_rng(2))
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3)  # OpenCV's bilinear weights are fixed-point (1/32)


def test_elastic_rac_table_is_the_release_s_and_not_monotone() -> None:
    assert ELASTIC_RAC[0] == (2.0, 0.7, 0.1) and len(ELASTIC_RAC) == 5
    assert elastic_rac_params(1, 244, 400) == pytest.approx((488.0, 170.8, 24.4))
    assert elastic_rac_params(3, 122, 122) == pytest.approx((6.1, 1.22, 2.44))
    img = natural_image(1, 96, 128)
    change = [_mean_change(img, "elastic_transform_rac", s, 2) for s in SEVERITIES]
    assert min(change[:2]) > 2 * max(change[2:])  # severities 1-2 warp far more than 3-5
    assert change[2] < change[3] < change[4]


def test_fog_rac_is_stronger_than_imagenet_c_fog() -> None:
    img = natural_image(0, 64, 80)
    for sev in (1, 5):
        assert _mean_change(img, "fog_rac", sev) > 1.5 * _mean_change(img, "fog", sev)


@pytest.mark.parametrize("name", RAC_VARIANTS)
def test_variants_are_deterministic(name: str) -> None:
    img = natural_image(2, 33, 47)
    a, b = corrupt(img, name, 3, seed=5), corrupt(img.copy(), name, 3, seed=5)
    assert np.array_equal(a, b) and not np.array_equal(a, corrupt(img, name, 3, seed=6))
    assert not np.array_equal(a, img)
