"""The one precision rule of the core: compute in float32, or float64 when the input is float64."""

from __future__ import annotations

import torch

__all__ = ["working_dtype"]


def working_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision, float32 and integer input; float64 stays float64."""
    return torch.promote_types(x.dtype, torch.float32)
