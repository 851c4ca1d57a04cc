"""Hypothesis strategies for batches of rows: arbitrary int64 ids, ties, invalid rows, variable groups."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

ID = st.integers(min_value=-(2**62), max_value=2**62)


@dataclass
class Batch:
    confidence: torch.Tensor  # [N] float64
    reward: torch.Tensor  # [N] float64 (few distinct values, so ties happen)
    group: torch.Tensor  # [N] int64, arbitrary non-contiguous ids
    severity: torch.Tensor  # [N] int64 in 0..5
    valid: torch.Tensor  # [N] bool


@st.composite
def batches(draw, min_rows: int = 0, max_rows: int = 20, max_groups: int = 5, conf_bound: float = 5.0) -> Batch:
    n = draw(st.integers(min_rows, max_rows))
    ids = draw(st.lists(ID, min_size=1, max_size=max_groups, unique=True))
    group = [draw(st.sampled_from(ids)) for _ in range(n)]
    reward_values = draw(st.lists(st.floats(-3, 3, allow_nan=False, allow_subnormal=False), min_size=1, max_size=4))
    reward = [draw(st.sampled_from(reward_values)) for _ in range(n)]
    confidence = draw(st.lists(st.floats(-conf_bound, conf_bound, allow_nan=False, allow_subnormal=False), min_size=n, max_size=n))
    severity = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    valid = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if draw(st.booleans()):
        valid = [True] * n
    return Batch(
        confidence=torch.tensor(confidence, dtype=torch.float64),
        reward=torch.tensor(reward, dtype=torch.float64),
        group=torch.tensor(group, dtype=torch.int64),
        severity=torch.tensor(severity, dtype=torch.int64),
        valid=torch.tensor(valid, dtype=torch.bool),
    )


def random_batch(generator: torch.Generator, n: int, n_groups: int, *, dtype=torch.float64) -> Batch:
    """A seeded random batch for non-hypothesis tests (bigger sizes)."""
    ids = torch.randint(-(2**40), 2**40, (n_groups,), generator=generator)
    group = ids[torch.randint(0, n_groups, (n,), generator=generator)]
    reward = torch.randint(0, 3, (n,), generator=generator).to(torch.float64) / 2
    return Batch(
        confidence=torch.randn(n, generator=generator, dtype=torch.float64).to(dtype),
        reward=reward,
        group=group,
        severity=torch.randint(0, 4, (n,), generator=generator),
        valid=torch.rand(n, generator=generator) > 0.15,
    )
