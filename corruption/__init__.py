"""Image corruptions for clean/corrupted twins (installed as ``rac_losses.corruption``).

- :func:`corrupt` ``(image, name, severity, *, seed=0, region=None)``: a corrupted copy of a PIL image
  or uint8/uint16 array, same type, size and mode; deterministic in ``(image, name, severity, seed)``.
- :data:`CORRUPTIONS`: ``name -> family`` for the 15 ImageNet-C corruptions, its 4 validation ones and
  the VLM-calibration ones (``patch_mask``, ``gray_mask``, ``blank``, ``diffusion_noise``) and the RAC
  release's variants of three ImageNet-C ones (``fog_rac``, ``elastic_transform_rac``, ``impulse_noise_rac``).
- :class:`CorruptionPolicy`: picks ``(name, severity)`` per sample key, deterministically;
  ``CorruptionPolicy.paper()`` is the RAC paper's (8 corruptions, severities 1/2/3 at 50/40/10%).
- :func:`corruption_level` / :data:`LEVELS`: the paper's level ``severity / 5``.
- CLI ``rac-corrupt`` (:mod:`.cli`): ``preview`` contact sheets, ``dataset`` parquet conversion, and the
  paper's data (:mod:`.pairs`): ``pairs`` (paired training sets, the 50/40/10 main set), ``testsets``.

ImageNet-C: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019. Parameter tables as in the Apache-2.0 ``imagecorruptions`` package.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from . import blur, digital, noise, rac, vlm, weather  # noqa: F401  (register the corruptions)
from ._api import corrupt
from ._registry import FAMILIES, LEVELS, REGISTRY, SEVERITIES, corruption_level, severity_for_level
from .modes import SUPPORTED_MODES
from .policy import CorruptionPolicy
from .presets import IMAGENET_C, NAME_PRESETS, PAPER_CORRUPTIONS, PAPER_CORRUPTIONS_IMAGENET_C, PAPER_MIX

#: ImageNet-C's 4 held-out validation corruptions.
IMAGENET_C_VALIDATION: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: The corruptions used in VLM calibration work.
VLM_CORRUPTIONS: tuple[str, ...] = ("patch_mask", "gray_mask", "blank", "diffusion_noise")
#: The RAC release's variants of ImageNet-C corruptions (see :mod:`.rac`): ``fog_rac``,
#: ``elastic_transform_rac``, ``impulse_noise_rac``.
RAC_VARIANTS: tuple[str, ...] = ("impulse_noise_rac", "fog_rac", "elastic_transform_rac")
#: ``name -> family`` for every corruption, in a stable order (ImageNet-C, its validation set, VLM,
#: the RAC release's variants).
CORRUPTIONS: Mapping[str, str] = MappingProxyType(
    {n: REGISTRY[n].family for n in IMAGENET_C + IMAGENET_C_VALIDATION + VLM_CORRUPTIONS + RAC_VARIANTS}
)
assert set(CORRUPTIONS) == set(REGISTRY), "every registered corruption must be listed"
#: Corruptions that ignore the severity (the image carries no evidence at every level).
SEVERITY_INDEPENDENT: tuple[str, ...] = tuple(n for n, c in REGISTRY.items() if not c.severity_dependent)

__all__ = [
    "corrupt", "CORRUPTIONS", "CorruptionPolicy", "IMAGENET_C", "IMAGENET_C_VALIDATION", "VLM_CORRUPTIONS",
    "SEVERITY_INDEPENDENT", "SEVERITIES", "FAMILIES", "SUPPORTED_MODES", "RAC_VARIANTS", "PAPER_CORRUPTIONS",
    "PAPER_CORRUPTIONS_IMAGENET_C", "PAPER_MIX", "NAME_PRESETS", "LEVELS", "corruption_level", "severity_for_level",
]
