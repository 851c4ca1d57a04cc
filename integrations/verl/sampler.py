"""A training sampler that keeps each clean prompt and its corrupted copies in one batch.

The corruption bonus compares a clean prompt's rollouts with its corrupted copy's, and only within one
training batch. With verl's default sampler (``data.shuffle=True``: a random permutation of rows) a clean
row and its copy meet in a batch only by chance, about ``batch size / dataset size`` of the time. verl's
dataloader cuts the sampler's order into consecutive batches of ``data.train_batch_size`` prompts, so
:class:`PairSampler` emits the rows of one ``pair_id`` consecutively, in a shuffled order of pairs, and
rows without a pair in runs of the pair size: every batch holds whole pairs when the batch size is a
multiple of the pair size.

The sampler's position (the epoch's order and how far into it) is saved with verl's dataloader checkpoint
(torchdata's ``StatefulDataLoader`` reads the iterator's ``state_dict``), so a resumed run continues the
epoch it stopped in, in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PairSampler"]


class PairSampler(Sampler[int]):
    """Row indices, pair by pair: the rows sharing a ``pair_id`` (``>= 0``) are consecutive.

    Args:
        pair_ids: ``N`` ints, the dataset's ``pair_id`` column; a negative id is a row without pair.
        batch_size: the dataloader's batch size (``data.train_batch_size``).
        shuffle: shuffle the order of pairs and of the rows without pair (a fresh order every epoch, from
            ``seed`` and the epoch number); else the dataset's order (by each unit's first row). The rows of
            a pair keep the dataset's order (clean first, as ``rac-corrupt pairs`` writes them).
        seed: the shuffle's seed.

    Rows without pair are emitted ``pair size`` at a time, so they never push a pair across a batch
    boundary; an epoch's last incomplete run comes last.

    Raises:
        ValueError: pairs of different sizes, or a ``batch_size`` that is not a multiple of the pair size
            (a batch would split a pair).
    """

    def __init__(self, pair_ids: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        ids = np.asarray([int(p) for p in pair_ids], dtype=np.int64)
        pairs: dict[int, list[int]] = {}
        for row, pair in enumerate(ids.tolist()):
            if pair >= 0:
                pairs.setdefault(pair, []).append(row)
        sizes = sorted({len(u) for u in pairs.values()})
        if len(sizes) > 1:
            raise ValueError(
                f"data: pairs of {' and '.join(map(str, sizes))} rows (pair_id): a batch of whole pairs needs every "
                "pair the same size (rac-corrupt pairs writes 2 rows per pair)"
            )
        self.size = sizes[0] if sizes else 1
        if batch_size % self.size:
            raise ValueError(
                f"data.train_batch_size={batch_size} is not a multiple of the pair size ({self.size} rows per "
                "pair_id): a batch would split a clean prompt from its corrupted copy"
            )
        self.pairs = list(pairs.values())
        self.singles = np.flatnonzero(ids < 0).tolist()
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def order(self, epoch: int) -> list[int]:
        """The rows of epoch ``epoch`` (0-based), in the order they are emitted."""
        pairs, singles = self.pairs, self.singles
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=generator).tolist()]
            singles = [singles[i] for i in torch.randperm(len(singles), generator=generator).tolist()]
        size = self.size
        runs = [singles[i : i + size] for i in range(0, len(singles), size)]
        whole = [r for r in runs if len(r) == size]
        units: list[list[int]] = pairs + whole
        if not self.shuffle:
            units.sort(key=lambda unit: unit[0])  # the dataset's order
        elif whole and pairs:
            units = [units[i] for i in torch.randperm(len(units), generator=generator).tolist()]
        out = [row for unit in units for row in unit]
        if runs and len(runs[-1]) < size:
            out += runs[-1]
        return out

    def __iter__(self) -> Iterator[int]:
        iterator = _PairIterator(self, self.epoch)
        self.epoch += 1
        return iterator

    def __len__(self) -> int:
        return sum(len(u) for u in self.pairs) + len(self.singles)


class _PairIterator(Iterator[int]):
    """One epoch of a :class:`PairSampler`; its ``state_dict`` is the epoch and the rows emitted."""

    def __init__(self, sampler: PairSampler, epoch: int) -> None:
        self.sampler, self.epoch, self.yielded = sampler, epoch, 0
        self.rows = sampler.order(epoch)

    def __iter__(self) -> _PairIterator:
        return self

    def __next__(self) -> int:
        if self.yielded >= len(self.rows):
            raise StopIteration
        self.yielded += 1
        return self.rows[self.yielded - 1]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["yielded"]`` rows; later epochs follow it."""
        self.epoch, self.yielded = int(state["epoch"]), int(state["yielded"])
        self.rows = self.sampler.order(self.epoch)
        self.sampler.epoch = self.epoch + 1
