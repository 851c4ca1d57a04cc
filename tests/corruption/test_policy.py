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


# --- the RAC paper's preset --------------------------------------------------------------------------

from rac_losses.corruption import (  # noqa: E402
    LEVELS, NAME_PRESETS, PAPER_CORRUPTIONS, PAPER_CORRUPTIONS_IMAGENET_C, PAPER_MIX, corruption_level,
    severity_for_level,
)


def test_presets_name_the_paper_s_eight_corruptions():
    base = ("gaussian_noise", "shot_noise", "impulse_noise", "fog", "brightness", "contrast", "elastic_transform",
            "jpeg_compression")
    assert PAPER_CORRUPTIONS_IMAGENET_C == base
    assert tuple(n.removesuffix("_rac") for n in PAPER_CORRUPTIONS) == base
    assert {n for n in PAPER_CORRUPTIONS if n.endswith("_rac")} == {"impulse_noise_rac", "fog_rac", "elastic_transform_rac"}
    assert CorruptionPolicy(names="paper").names == PAPER_CORRUPTIONS
    assert CorruptionPolicy(names="paper-imagenet-c").names == PAPER_CORRUPTIONS_IMAGENET_C
    assert CorruptionPolicy(names="imagenet-c").names == IMAGENET_C == NAME_PRESETS["imagenet-c"]
    assert CorruptionPolicy(names=["paper", "blank"]).names == (*PAPER_CORRUPTIONS, "blank")


def test_paper_policy_is_deterministic_and_honours_the_mix():
    p = CorruptionPolicy.paper(seed=11)
    assert (p.names, p.severities, p.severity_weights) == (PAPER_CORRUPTIONS, (1, 2, 3), (0.5, 0.4, 0.1))
    assert PAPER_MIX == ((1, 0.5), (2, 0.4), (3, 0.1))
    n = 20000
    picks = [p.choose(f"k{i}") for i in range(n)]
    assert picks == [CorruptionPolicy.paper(seed=11).choose(f"k{i}") for i in range(n)]
    assert picks[:50] != [CorruptionPolicy.paper(seed=12).choose(f"k{i}") for i in range(50)]
    sev = collections.Counter(s for _, s, _ in picks)
    for s, w in PAPER_MIX:  # within 4 binomial standard deviations
        assert abs(sev[s] / n - w) < 4 * (w * (1 - w) / n) ** 0.5, sev
    names = collections.Counter(nm for nm, _, _ in picks)
    assert set(names) == set(PAPER_CORRUPTIONS) and max(abs(c / n - 1 / 8) for c in names.values()) < 0.012
    # name and severity are drawn independently: each name sees the 50/40/10 mix
    for nm in PAPER_CORRUPTIONS:
        sub = [s for x, s, _ in picks if x == nm]
        assert abs(sub.count(1) / len(sub) - 0.5) < 0.06
    assert CorruptionPolicy.paper(names="paper-imagenet-c").names == PAPER_CORRUPTIONS_IMAGENET_C


def test_severity_weights_zero_weight_is_never_drawn_and_uniform_equals_equal_weights():
    p = CorruptionPolicy(names="fog", severities=(1, 2, 3), severity_weights=(0, 3, 1), seed=2)
    sev = collections.Counter(p.choose(i)[1] for i in range(4000))
    assert 1 not in sev and abs(sev[2] / 4000 - 0.75) < 0.03
    assert CorruptionPolicy(names="fog", severities=4, severity_weights=2).choose(7)[:2] == ("fog", 4)


@pytest.mark.parametrize("bad, err, msg", [
    ((0.5, 0.5), ValueError, "one weight per severity"),
    ((1, -1, 1), ValueError, "non-negative"),
    ((0, 0, 0), ValueError, "not all zero"),
    ((1, float("nan"), 1), ValueError, "finite"),
    ((1, float("inf"), 1), ValueError, "finite"),
    ((1, "2", 1), TypeError, "numbers"),
    ((1, True, 1), TypeError, "numbers"),
])
def test_bad_severity_weights_raise_naming_them(bad, err, msg):
    with pytest.raises(err, match=f"severity_weights.*{msg}|severity_weights must be {msg}"):
        CorruptionPolicy(severities=(1, 2, 3), severity_weights=bad)


def test_levels():
    assert LEVELS == (0.2, 0.4, 0.6, 0.8, 1.0)
    assert [corruption_level(s) for s in range(6)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [severity_for_level(v) for v in (0, 0.2, 0.4, 0.6000001, 0.8, 1.0, "0.4")] == [0, 1, 2, 3, 4, 5, 2]
    for bad in (0.3, 1.2, -0.2, "x", None):
        with pytest.raises(ValueError, match="level must be one of"):
            severity_for_level(bad)
    for bad in (6, -1, 1.0, True):
        with pytest.raises(ValueError, match="severity must be an int in 0..5"):
            corruption_level(bad)
