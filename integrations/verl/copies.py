"""Corrupted copies of the training prompts, made on the fly (``+rac.corruption.source=generate``, the default).

:class:`CorruptedCopies` wraps verl's training dataset: after every image prompt that the policy selects
(``corruption.fraction`` of them by a keyed hash of the images, all of them by default) comes a copy of it
whose images are corrupted. The copy is verl's own row (same prompt, answer, ``extra_info``) with the
images of its ``raw_prompt`` replaced; verl gives it its own ``uid`` (so its own group of ``n`` rollouts
and its own advantages), and the pair columns (``pair_id``, ``is_noisy``, ``corruption_level``) that the
trainer's bonuses read are added to every row, as a paired dataset has them. With
:class:`~.sampler.PairSampler` a prompt and its copy are always in the same batch.

The corruption of a copy is a pure function of the prompt's images: :class:`~rac_losses.corruption.CorruptionPolicy`
keyed by :func:`rac_losses.corruption.pairs.image_key` of the image bytes, the key ``rac-corrupt pairs`` uses, so
for the same images and ``corruption.seed`` a copy gets the corruption, severity weights aside, that command
writes (every image of a prompt corrupted alike), in any worker and on any restart. ``corruption_level`` is
``severity / 5``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import Dataset

from rac_losses.corruption import CorruptionPolicy, corrupt, corruption_level
from rac_losses.corruption.dataset import DatasetError, decode_image
from rac_losses.corruption.pairs import column_layout, image_key, row_image_count, row_images

__all__ = ["CorruptedCopies"]

logger = logging.getLogger(__name__)

_WHERE = "the training set"
_IMAGE_FIELDS = ("image", "image_url", "bytes", "path")  # where an image item keeps its image (qwen_vl_utils, verl)


class CorruptedCopies(Dataset):
    """verl's training dataset, each selected image prompt followed by its corrupted copy.

    Args:
        dataset: verl's ``RLHFDataset`` (or a subclass): its ``dataframe`` (a ``datasets.Dataset``), ``image_key``,
            ``prompt_key``, and rows with ``raw_prompt`` chat messages whose image items are in the order of
            the row's images (verl's ``<image>`` placeholders) or name them (image items in the messages).
            Relative image paths are read from the working directory, where verl's image loading reads them.
        policy: which prompts get a copy (``fraction``, keyed by the images) and each copy's corruption.

    Attributes:
        pair_ids: one int per item: the dataset row a clean prompt and its copy share, -1 for a prompt
            without copy (the ``pair_id`` column, and what :class:`~.sampler.PairSampler` reads).
        copies: how many corrupted copies one pass adds.

    Raises:
        ValueError: ``dataset`` is not verl's kind; its images column is of a type that holds no images, or a
            row's cell is malformed (the row named).
    """

    def __init__(self, dataset: Any, policy: CorruptionPolicy) -> None:
        self.dataset, self.policy = dataset, policy
        if not all(hasattr(dataset, a) for a in ("dataframe", "image_key", "prompt_key")):
            raise ValueError(
                f"rac.corruption.source=generate needs verl's RLHFDataset or a subclass (a dataframe, image_key and "
                f"prompt_key); the training set is a {type(dataset).__name__}: build a paired set with rac-corrupt pairs "
                "and set +rac.corruption.source=dataset"
            )
        frame = dataset.dataframe
        names = frame.column_names
        column = dataset.image_key if dataset.image_key in names else dataset.prompt_key
        try:
            self.layout = column_layout(  # a prompt column holds messages, never image paths
                frame.data.schema, column, os.getcwd(), json_messages=column == dataset.prompt_key, where=_WHERE
            )
        except DatasetError as e:
            raise ValueError(f"rac.corruption.source=generate: {e}") from None
        self._cells = frame.select_columns(list(self.layout.columns)).with_format("arrow")
        logger.info("rac: choosing the corrupted copies of %d training prompts", len(frame))
        start = time.perf_counter()
        self._items: list[tuple[int, bool]] = []
        self.pair_ids: list[int] = []
        for row, selected in enumerate(self._selected()):
            if selected:
                self._items += [(row, False), (row, True)]
                self.pair_ids += [row, row]
            else:
                self._items.append((row, False))
                self.pair_ids.append(-1)
        self.copies = len(self._items) - len(frame)
        logger.info(
            "rac: %d corrupted copies of %d training prompts (%s layout, column %s; %.1f s)",
            self.copies, len(frame), self.layout.kind, column, time.perf_counter() - start,
        )

    def _row_cells(self, row: int) -> dict[str, Any]:
        table: pa.Table = self._cells[row]
        return table.to_pylist()[0]

    def _selected(self, chunk: int = 1024) -> list[bool]:
        """Per dataset row: whether it gets a copy (it has images, and the policy selects them)."""
        out: list[bool] = []
        fraction = self.policy.fraction
        for start in range(0, len(self._cells), chunk):
            table: pa.Table = self._cells[start : start + chunk]
            if fraction >= 1 and self.layout.kind == "bytes":  # count the images without copying their bytes
                column = table.column(0)
                if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
                    counts = pc.fill_null(pc.list_value_length(column), 0)
                else:
                    counts = pc.if_else(pc.is_null(column), 0, 1)
                out += [c > 0 for c in counts.to_pylist()]
                continue
            for row, cells in enumerate(table.to_pylist(), start):
                has = row_image_count(self.layout, cells, _WHERE, row) > 0
                out.append(has and (fraction >= 1 or (
                    fraction > 0 and self.policy.selects(image_key(row_images(self.layout, cells, _WHERE, row)))
                )))
        return out

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """verl's row dict of item ``index`` with ``pair_id``, ``is_noisy`` and ``corruption_level`` added."""
        row, noisy = self._items[index]
        item = self.dataset[row]
        item.update(pair_id=self.pair_ids[index], is_noisy=noisy, corruption_level=0.0)
        if noisy:
            item["raw_prompt"], severity = self._corrupted_messages(row, item["raw_prompt"])
            item["corruption_level"] = corruption_level(severity)
        return item

    def _corrupted_messages(self, row: int, messages: list[dict]) -> tuple[list[dict], int]:
        cells = self._row_cells(row)
        images = row_images(self.layout, cells, _WHERE, row)
        name, severity, seed = self.policy.choose(image_key(images))
        corrupted = [corrupt(decode_image(data, f"{_WHERE}: row {row}"), name, severity, seed=seed) for data in images]
        by_uri: dict[str, Any] = {}
        if self.layout.kind == "messages":  # items name their images: one corrupted image per distinct URI
            uris = [it["image"] for m in messages if isinstance(m.get("content"), list)
                    for it in m["content"] if _is_image(it) and isinstance(it.get("image"), str)]
            by_uri = dict(zip(dict.fromkeys(uris), corrupted))
        position = 0
        out = []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                out.append(message)
                continue
            new_content = []
            for it in content:
                if _is_image(it):
                    if self.layout.kind == "messages":
                        image = by_uri[it["image"]]
                    else:
                        if position >= len(corrupted):
                            raise ValueError(f"{_WHERE}: row {row} has more image items than images ({len(corrupted)})")
                        image, position = corrupted[position], position + 1
                    it = {**{k: v for k, v in it.items() if k not in _IMAGE_FIELDS}, "image": image}
                new_content.append(it)
            out.append({**message, "content": new_content})
        return out, severity


def _is_image(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "image"
