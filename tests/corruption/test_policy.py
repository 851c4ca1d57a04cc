"""``CorruptionPolicy``: deterministic per-key choice."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from _images import natural_image
from rac_losses.corruption import IMAGENET_C, CorruptionPolicy, corrupt


def test_deterministic_and_uniform() -> None:
    p = CorruptionPolicy(names=["gaussian_noise", "patch_mask", "fog"], severities=[2, 5], seed=3)
    assert p.choose("rollout-1") == CorruptionPolicy(names=("gaussian_noise", "patch_mask", "fog"), severities=(2, 5), seed=3).choose("rollout-1")
    counts = collections.Counter(p.choose(i)[:2] for i in range(6000))
    assert set(counts) == {(n, s) for n in ("gaussian_noise", "patch_mask", "fog") for s in (2, 5)}
    assert min(counts.values()) > 800  # ~1000 each
    assert p.choose(1) != p.choose("1") or p.choose(2) != p.choose("2")
    other = CorruptionPolicy(names=p.names, severities=p.severities, seed=4)
    assert [p.choose(i) for i in range(20)] != [other.choose(i) for i in range(20)]


def test_apply() -> None:
    img = natural_image(0, 32, 32)
    p = CorruptionPolicy(seed=1)
    assert p.names == IMAGENET_C and p.severities == (1, 2, 3, 4, 5)
    out, name, sev = p.apply(img, key=17)
    _, _, s = p.choose(17)
    assert np.array_equal(out, corrupt(img, name, sev, seed=s))
    assert np.array_equal(p(img, 17), out)
    region_out = p(img, 17, region=(0, 0, 8, 8))
    assert np.array_equal(region_out[8:], img[8:])


def test_errors() -> None:
    with pytest.raises(ValueError, match="unknown corruption name 'nope'"):
        CorruptionPolicy(names=["nope"])
    with pytest.raises(ValueError, match="names must not be empty"):
        CorruptionPolicy(names=[])
    with pytest.raises(ValueError, match="severities"):
        CorruptionPolicy(severities=[0])
    with pytest.raises(TypeError, match="key must be a str or an int"):
        CorruptionPolicy().choose(1.5)
    with pytest.raises(ValueError, match="seed"):
        CorruptionPolicy(seed=-2)
    assert CorruptionPolicy(names="fog", severities=3).choose(0)[:2] == ("fog", 3)


def test_selects_is_deterministic_and_takes_the_fraction():
    p = CorruptionPolicy(fraction=0.3, seed=7)
    keys = [f"rollout-{i}" for i in range(4000)]
    chosen = [p.selects(k) for k in keys]
    assert chosen == [CorruptionPolicy(fraction=0.3, seed=7).selects(k) for k in keys]
    assert abs(sum(chosen) / len(keys) - 0.3) < 0.03  # binomial sd is 0.007
    assert chosen != [CorruptionPolicy(fraction=0.3, seed=8).selects(k) for k in keys]


def test_selects_nests_across_fractions_and_covers_the_ends():
    keys = list(range(500))
    low = {k for k in keys if CorruptionPolicy(fraction=0.2).selects(k)}
    high = {k for k in keys if CorruptionPolicy(fraction=0.6).selects(k)}
    assert low < high  # a larger fraction keeps every key a smaller one selected
    assert all(CorruptionPolicy(fraction=1).selects(k) for k in keys)
    assert not any(CorruptionPolicy(fraction=0).selects(k) for k in keys)


@pytest.mark.parametrize("bad, err", [(-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.5", TypeError), (True, TypeError)])
def test_bad_fraction_raises_naming_it(bad, err):
    with pytest.raises(err, match="fraction"):
        CorruptionPolicy(fraction=bad)
