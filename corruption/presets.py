"""Named corruption sets and the RAC paper's severity mix.

- ``"paper"``: :data:`PAPER_CORRUPTIONS`, the 8 corruptions RAC's release uses ("safe for math and
  science images"), with the release's own definitions where they differ from ImageNet-C's
  (``impulse_noise_rac``, ``fog_rac``, ``elastic_transform_rac``; see :mod:`.rac`). Reproduces the release.
- ``"paper-imagenet-c"``: :data:`PAPER_CORRUPTIONS_IMAGENET_C`, the same 8 with ImageNet-C's definitions.
- ``"imagenet-c"``: the 15 ImageNet-C benchmark corruptions.
- :data:`PAPER_MIX`: the corrupted halves of the paper's main training set, 50% level 0.2 (severity 1),
  40% level 0.4 (severity 2), 10% level 0.6 (severity 3).
"""

from __future__ import annotations

__all__ = [
    "IMAGENET_C", "PAPER_CORRUPTIONS", "PAPER_CORRUPTIONS_IMAGENET_C", "PAPER_MIX", "NAME_PRESETS", "resolve_names",
]

#: The 15 ImageNet-C benchmark corruptions, in ImageNet-C's order.
IMAGENET_C: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: The RAC release's 8 corruptions, its own definitions (the preset ``"paper"``).
PAPER_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise_rac", "fog_rac", "brightness", "contrast",
    "elastic_transform_rac", "jpeg_compression",
)
#: The same 8 corruptions with ImageNet-C's definitions (the preset ``"paper-imagenet-c"``).
PAPER_CORRUPTIONS_IMAGENET_C: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "fog", "brightness", "contrast", "elastic_transform",
    "jpeg_compression",
)
#: ``((severity, weight), ...)``: the paper's 50/40/10 mix of levels 0.2/0.4/0.6.
PAPER_MIX: tuple[tuple[int, float], ...] = ((1, 0.5), (2, 0.4), (3, 0.1))

#: Preset name -> corruption names.
NAME_PRESETS: dict[str, tuple[str, ...]] = {
    "paper": PAPER_CORRUPTIONS,
    "paper-imagenet-c": PAPER_CORRUPTIONS_IMAGENET_C,
    "imagenet-c": IMAGENET_C,
}


def resolve_names(names: str | tuple[str, ...]) -> tuple[str, ...]:
    """A preset name -> its corruptions; a single corruption name -> a 1-tuple; a tuple -> itself
    (presets inside a tuple are expanded too)."""
    if isinstance(names, str):
        names = (names,)
    out: list[str] = []
    for n in names:
        out.extend(NAME_PRESETS.get(n, (n,)) if isinstance(n, str) else (n,))
    return tuple(out)
