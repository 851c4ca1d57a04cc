"""``CorruptionPolicy``: a deterministic choice of corruption per sample, for training integrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._api import check_severity, corrupt
from ._registry import get
from ._seeding import check_seed, derive_seed

__all__ = ["CorruptionPolicy"]

_DEFAULT_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)


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

    The choice is uniform over ``names x severities`` and a pure function of ``(seed, key)``: the same
    rollout id gets the same corruption in every process, epoch and worker. ``1`` and ``"1"`` are
    different keys.

    Args:
        names: corruption names (default: the 15 ImageNet-C corruptions). Duplicates weight a name up.
        severities: severities to draw from (default ``(1, 2, 3, 4, 5)``).
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

    names: tuple[str, ...] = _DEFAULT_NAMES
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
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
        n_opts = len(self.names) * len(self.severities)
        i = h % n_opts
        name, sev = self.names[i // len(self.severities)], self.severities[i % len(self.severities)]
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
