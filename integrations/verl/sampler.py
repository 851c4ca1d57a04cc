"""A training sampler that keeps each clean prompt and its corrupted copies in one batch.

The corruption bonus compares a clean prompt's rollouts with its corrupted copy's, and only within one
training batch. With verl's default sampler (``data.shuffle=True``: a random permutation of rows) a clean
row and its copy meet in a batch only by chance, about ``batch size / dataset size`` of the time. verl's
dataloader cuts the sampler's order into consecutive batches of ``data.train_batch_size`` prompts, so
:class:`PairSampler` emits the rows of one ``pair_id`` consecutively, in a shuffled order of pairs, and
every batch holds whole pairs when the batch size is a multiple of the pair size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PairSampler"]


class PairSampler(Sampler[int]):
    """Row indices, pair by pair: the rows sharing a ``pair_id`` (``>= 0``) are consecutive.

    Args:
        pair_ids: ``N`` ints, the dataset's ``pair_id`` column; a negative id is a row without pair.
        batch_size: the dataloader's batch size (``data.train_batch_size``).
        shuffle: shuffle the order of pairs (a fresh order every epoch, from ``seed`` and the epoch number);
            the rows of a pair keep the dataset's order (clean first, as ``rac-corrupt pairs`` writes them).
        seed: the shuffle's seed.

    Raises:
        ValueError: pairs of different sizes, or a ``batch_size`` that is not a multiple of the pair size
            (a batch would split a pair); a row without pair in a dataset of pairs larger than one row.
    """

    def __init__(self, pair_ids: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        ids = np.asarray([int(p) for p in pair_ids], dtype=np.int64)
        units: dict[int, list[int]] = {}
        for row, pair in enumerate(ids.tolist()):
            units.setdefault(pair if pair >= 0 else -1 - row, []).append(row)
        sizes = sorted({len(u) for u in units.values()})
        if len(sizes) > 1:
            raise ValueError(
                f"data: pairs of {' and '.join(map(str, sizes))} rows (pair_id; a negative id is a row of its own): "
                "a batch of whole pairs needs every pair the same size (rac-corrupt pairs writes 2 rows per pair)"
            )
        size = sizes[0] if sizes else 1
        if batch_size % size:
            raise ValueError(
                f"data.train_batch_size={batch_size} is not a multiple of the pair size ({size} rows per pair_id): "
                "a batch would split a clean prompt from its corrupted copy"
            )
        self.units = list(units.values())
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def __iter__(self) -> Iterator[int]:
        order: Sequence[int] = range(len(self.units))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.units), generator=generator).tolist()
        self.epoch += 1
        for unit in order:
            yield from self.units[unit]

    def __len__(self) -> int:
        return sum(len(u) for u in self.units)
