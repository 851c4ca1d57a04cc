"""``CorruptionPolicy``: a deterministic choice of corruption per sample, for training integrations."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._api import check_severity, corrupt
from ._registry import get
from ._seeding import check_seed, derive_seed
from .presets import IMAGENET_C, PAPER_MIX, resolve_names

__all__ = ["CorruptionPolicy"]


def _key_bytes(key: object) -> str:
    if isinstance(key, (bool, np.bool_)):
        raise TypeError("key must be a str or an int, got bool")
    if isinstance(key, str):
        return "s:" + key
    if isinstance(key, (int, np.integer)):
        return "i:" + str(int(key))
    raise TypeError(f"key must be a str or an int, got {type(key).__name__}")


@dataclasses.dataclass(frozen=True)
class CorruptionPolicy:
    """Pick a ``(name, severity)`` and a corruption seed per sample key, deterministically.

    Without ``severity_weights`` the choice is uniform over ``names x severities``; with them the name
    is uniform over ``names`` and the severity drawn by weight, independently. Either way it is a pure
    function of ``(seed, key)``: the same rollout id gets the same corruption in every process, epoch
    and worker. ``1`` and ``"1"`` are different keys.

    Args:
        names: corruption names, or a preset: ``"paper"`` (the RAC release's 8 corruptions with its own
            definitions), ``"paper-imagenet-c"`` (the same 8, ImageNet-C's definitions),
            ``"imagenet-c"`` (the 15 ImageNet-C corruptions, the default); see :mod:`.presets`.
            Duplicates weight a name up.
        severities: severities to draw from (default ``(1, 2, 3, 4, 5)``).
        severity_weights: optional non-negative weights, one per severity (normalised by their sum);
            ``None`` (default): uniform. :meth:`paper` uses the paper's 50/40/10 mix of severities 1/2/3.
        fraction: the share of samples that get a corrupted twin, in ``[0, 1]`` (default 1); which ones
            is :meth:`selects`, a pure function of ``(seed, key)`` like the choice itself.
        seed: non-negative int.

    Raises:
        ValueError / TypeError: on an unknown name (the message lists valid ones), an empty list,
            a severity outside 1..5, a fraction outside ``[0, 1]`` or a bad seed.

    Example::

        policy = CorruptionPolicy(names=["gaussian_noise", "patch_mask"], severities=[3, 5], seed=0)
        twin, name, severity = policy.apply(image, key="rollout-17")
    """

    names: tuple[str, ...] = IMAGENET_C
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    fraction: float = 1.0
    seed: int = 0
    severity_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        names = resolve_names(self.names if isinstance(self.names, str) else tuple(self.names))
        if not names:
            raise ValueError("names must not be empty")
        for n in names:
            get(n)
        sev = (self.severities,) if isinstance(self.severities, (int, np.integer)) else tuple(self.severities)
        if not sev:
            raise ValueError("severities must not be empty")
        sev = tuple(check_severity(s, argname="severities[i]") for s in sev)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "severities", sev)
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float, np.integer, np.floating)):
            raise TypeError(f"fraction must be a number in [0, 1], got {type(self.fraction).__name__}")
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {self.fraction!r}")
        object.__setattr__(self, "fraction", float(self.fraction))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.severity_weights is not None:
            wts = self.severity_weights
            wts = (wts,) if isinstance(wts, (int, float, np.integer, np.floating)) else tuple(wts)
            if len(wts) != len(sev):
                raise ValueError(f"severity_weights must have one weight per severity ({len(sev)}), got {len(wts)}")
            for w in wts:
                if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                    raise TypeError(f"severity_weights must be numbers, got {type(w).__name__}")
            wts = tuple(float(w) for w in wts)
            if not all(math.isfinite(w) and w >= 0 for w in wts) or sum(wts) <= 0:
                raise ValueError(f"severity_weights must be finite, non-negative and not all zero, got {wts}")
            object.__setattr__(self, "severity_weights", wts)

    @classmethod
    def paper(cls, seed: int = 0, *, fraction: float = 1.0, names: str | Iterable[str] = "paper") -> CorruptionPolicy:
        """The RAC paper's policy: its 8 corruptions (``"paper"``: the release's definitions), one drawn
        uniformly per key, at severity 1 / 2 / 3 (level 0.2 / 0.4 / 0.6) with probability 0.5 / 0.4 / 0.1.

        ``names="paper-imagenet-c"`` keeps the mix with ImageNet-C's definitions."""
        return cls(names=names if isinstance(names, str) else tuple(names), severities=tuple(s for s, _ in PAPER_MIX),
                   severity_weights=tuple(w for _, w in PAPER_MIX), fraction=fraction, seed=seed)

    def selects(self, key: str | int) -> bool:
        """Whether sample ``key`` gets a corrupted twin: true for a ``fraction`` share of keys.

        Raises:
            TypeError: if ``key`` is not a str or int.
        """
        h = derive_seed(self.seed, "select", _key_bytes(key))
        return (h % 2**53) / 2**53 < self.fraction

    def choose(self, key: str | int) -> tuple[str, int, int]:
        """Return ``(name, severity, corruption_seed)`` for ``key`` (a str or int sample id).

        Raises:
            TypeError: if ``key`` is not a str or int.
        """
        k = _key_bytes(key)
        h = derive_seed(self.seed, "policy", k)
        if self.severity_weights is None:
            n_opts = len(self.names) * len(self.severities)
            i = h % n_opts
            name, sev = self.names[i // len(self.severities)], self.severities[i % len(self.severities)]
        else:
            name = self.names[h % len(self.names)]
            sev = self.severities[_pick(self.severity_weights, derive_seed(self.seed, "severity", k))]
        return name, sev, derive_seed(self.seed, "image", k)

    def apply(self, image: Any, key: str | int, *, region: object = None) -> tuple[Any, str, int]:
        """Corrupt ``image`` as :meth:`choose` dictates; return ``(corrupted, name, severity)``."""
        name, sev, s = self.choose(key)
        return corrupt(image, name, sev, seed=s, region=region), name, sev

    def __call__(self, image: Any, key: str | int, *, region: object = None) -> Any:
        """``apply(...)[0]``: the corrupted image only."""
        return self.apply(image, key, region=region)[0]

    @classmethod
    def from_names(cls, names: Iterable[str], severities: Iterable[int] = (1, 2, 3, 4, 5), seed: int = 0) -> CorruptionPolicy:
        """Build from any iterables."""
        return cls(names=tuple(names), severities=tuple(severities), seed=seed)


def _pick(weights: tuple[float, ...], h: int) -> int:
    """Index drawn by ``weights`` from a 63-bit hash (inverse CDF on its top 53 bits)."""
    u = (h >> 10) / 2**53 * sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u rounding onto the total
