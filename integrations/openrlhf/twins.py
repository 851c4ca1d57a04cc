"""Corrupted twins of a rollout's images, as the model's processor turns them into model inputs."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from rac_losses.corruption import CorruptionPolicy

__all__ = ["corrupted_inputs", "sample_key"]


def sample_key(sequence: torch.Tensor, attention_mask: torch.Tensor) -> str:
    """A stable id of one rollout: the SHA-256 of its prompt + response token ids (padding dropped).

    The same rollout gets the same key in every worker and epoch, so :class:`CorruptionPolicy` gives it the
    same twin (``selects`` / ``apply`` are pure functions of the key).

    Args:
        sequence: ``[T]`` token ids; attention_mask: ``[T]``, non-zero on real tokens.
    """
    ids = sequence[attention_mask.bool()].to(device="cpu", dtype=torch.int64)
    return hashlib.sha256(ids.numpy().tobytes()).hexdigest()


def corrupted_inputs(
    processor: Any, images: Any, clean_inputs: dict[str, torch.Tensor], key: str, policy: CorruptionPolicy
) -> tuple[dict[str, torch.Tensor], int]:
    """The model inputs of a rollout's images after corruption, and the corruption's severity.

    Every image of the rollout gets the corruption ``policy.apply(image, key)`` picks for ``key`` (one name
    and severity per rollout, so the twin has one severity). Corruptions keep the image size, so the
    processor yields the same token grid as for the clean images; this is checked.

    Args:
        processor: the model's ``AutoProcessor`` (OpenRLHF's ``tokenizer`` for a VLM); its
            ``image_processor`` turns PIL images into ``pixel_values`` / ``image_grid_thw``.
        images: the rollout's image references (paths, URLs, base64, PIL), as OpenRLHF keeps them.
        clean_inputs: the clean images' processor outputs (``Experience.mm_train_inputs`` of the rollout).
        key: the rollout's :func:`sample_key`.
        policy: which corruption and severity.

    Returns:
        ``(inputs, severity)``: the same keys as ``clean_inputs``, tensors of the same shapes (CPU).

    Raises:
        ValueError: no image could be loaded, the processor has no ``image_processor``, or the corrupted
            images give other shapes than the clean ones (the twin would not be the same prompt).
    """
    from openrlhf.utils.vlm_utils import load_images

    pil = load_images(images)
    if not pil:
        raise ValueError(f"rac: no image of rollout {key[:12]} could be loaded for its corrupted twin")
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        raise ValueError(
            f"rac: corrupted twins need a VLM processor with an image_processor, got {type(processor).__name__}"
        )
    corrupted, severities = [], set()
    for image in pil:
        twin, _, severity = policy.apply(image, key)
        corrupted.append(twin)
        severities.add(severity)
    (severity,) = severities  # one key -> one (name, severity) for every image
    out = image_processor(images=corrupted, return_tensors="pt")
    inputs = {}
    for name, clean in clean_inputs.items():
        value = torch.as_tensor(out[name]) if name in out else None
        if value is None or value.shape != clean.shape or (not value.is_floating_point() and not torch.equal(value, clean)):
            got = None if value is None else tuple(value.shape)
            raise ValueError(
                f"rac: the corrupted images of rollout {key[:12]} give {name} {got}, the clean ones "
                f"{tuple(clean.shape)}; a twin must keep the image grid"
            )
        inputs[name] = value.to(clean.dtype)
    return inputs, severity
