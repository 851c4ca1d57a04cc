"""Prompts of the reward formulation: the response schema, labels, and clean-corrupted pairs in one rollout batch.

Patched into OpenRLHF's controller (the ``PPOTrainer`` Ray actor) by the hook:

- :func:`with_schema_and_labels` wraps ``prompts_dataset.preprocess_data``: the response schema is appended
  to the row's last user turn (``--rac.schema``), and the label becomes a :class:`~.paper.RACLabel` carrying
  the row's ``choices`` / ``is_multiple_choice`` and, for a paired dataset, ``pair_id`` / ``is_noisy`` /
  ``corruption_level``.
- :func:`with_paired_loader` wraps ``ppo_trainer.prepare_datasets``: the training dataloader becomes a
  :class:`PairedPrompts`, which yields *units*: a clean prompt with its corrupted copy (generated from the
  prompt's images, or the dataset's noisy row of the same ``pair_id``), or two unpaired prompts. Every unit
  holds two prompts (the last of an epoch may hold one), so OpenRLHF's rollout batches of
  ``rollout.batch_size * n`` samples (``rollout.batch_size`` even) never cut a unit.
- :func:`collect_units` replaces ``samples_generator._collect_prompt_batch`` for a :class:`PairedPrompts`
  iterator (whole units only) and :func:`with_joined_units` wraps ``SamplesGenerator._dispatch_prompts_to_vllm``
  so that a unit's prompts come back as one Ray object: their samples are contiguous, in the same rollout
  batch, and OpenRLHF's dynamic filtering keeps or drops a unit as one (on the mean score of its samples).

``rollout.batch_size`` counts every prompt of a rollout batch, clean and corrupted (as the release's paired
training sets count rows): with fraction 1 a batch holds ``batch_size / 2`` dataset prompts and their copies.
The corruption of a generated copy is a pure function of the prompt's images (their bytes: the key
``rac-corrupt pairs`` uses, so for the same images and ``--rac.corruption.seed`` a copy gets the corruption
and corruption seed that command writes, every image of a prompt corrupted alike) and draws its severity by
the ``--rac.corruption.weights``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from rac_losses.integrations.openrlhf.paper import PaperSettings, RACLabel
from rac_losses.rewards import with_response_schema

__all__ = [
    "PairedPrompts", "collect_units", "with_joined_units", "with_paired_loader", "with_schema_and_labels",
    "with_training_step",
]

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("pair_id", "is_noisy", "corruption_level")


def _with_schema(prompt: Any) -> Any:
    if isinstance(prompt, str):
        return with_response_schema([{"role": "user", "content": prompt}])[0]["content"]
    return with_response_schema(prompt)


def _row_label(label: Any, data: Any) -> RACLabel:
    attrs: dict[str, Any] = {}
    if data.get("choices") is not None:
        attrs["choices"] = data["choices"]
    if data.get("is_multiple_choice") is not None:
        attrs["multiple_choice"] = bool(data["is_multiple_choice"])
    if all(data.get(c) is not None for c in PAIR_COLUMNS):
        noisy = bool(data["is_noisy"])
        attrs["pair"] = int(data["pair_id"])
        attrs["level"] = float(data["corruption_level"]) if noisy else 0.0
        if noisy and not attrs["level"] > 0:
            raise ValueError(f"rac: a noisy row (pair_id {attrs['pair']}) has corruption_level {data['corruption_level']!r}; expected > 0")
    return RACLabel(label, **attrs)


def with_schema_and_labels(preprocess: Callable, settings: PaperSettings) -> Callable:
    """Wrap ``openrlhf.datasets.prompts_dataset.preprocess_data`` (see the module docstring).

    The row is never modified (the schema goes into a copy).
    """
    if getattr(preprocess, "rac_paper", False):
        return preprocess

    @functools.wraps(preprocess)
    def preprocess_data(data, input_template=None, input_key="input", label_key=None, apply_chat_template=None):
        if settings.schema:
            data = {**data, input_key: _with_schema(data[input_key])}
        prompt, label = preprocess(data, input_template, input_key, label_key, apply_chat_template)
        return prompt, _row_label(label, data)

    preprocess_data.rac_paper = True  # type: ignore[attr-defined]
    return preprocess_data


def _image_bytes(ref: Any) -> bytes:
    """What a prompt's image reference holds: file bytes for a path or ``file://`` URI, the bytes of raw or
    ``{"bytes": ...}`` images, the decoded bytes of a base64 string; otherwise (a URL, a PIL image) bytes
    that identify it (its text, or its mode, size and pixels)."""
    if isinstance(ref, dict) and ref.get("bytes") is not None:
        return bytes(ref["bytes"])
    if isinstance(ref, dict) and ref.get("path"):
        ref = ref["path"]
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref)
    if isinstance(ref, str):
        path = ref.removeprefix("file://")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return f.read()
        try:
            return base64.b64decode(ref, validate=True)
        except ValueError:
            return ref.encode()
    if hasattr(ref, "tobytes"):  # a PIL image
        return f"{ref.mode}{ref.size}".encode() + ref.tobytes()
    return repr(ref).encode()


def _image_key(images: Any) -> str:
    from rac_losses.corruption.pairs import image_key

    refs = images if isinstance(images, list) else [images]
    return image_key([_image_bytes(r) for r in refs])


def _has_images(images: Any) -> bool:
    return bool(images) if isinstance(images, list) else images is not None


class PairedPrompts:
    """OpenRLHF's training dataloader, yielding units of prompts (see the module docstring).

    Each ``next`` gives one unit as a batch ``(datasources, prompts, labels, images)``; labels are
    :class:`~.paper.RACLabel` with ``unit``, ``pair``, ``level`` and ``step`` set. Everything else
    (``len``, ``state_dict``, ``load_state_dict``, ``dataset``, ...) is the dataloader's.

    Attributes:
        step: the training step stamped on the labels (set by the trainer hooks).
    """

    def __init__(self, loader: Any, settings: PaperSettings) -> None:
        self.loader, self.settings, self.step = loader, settings, 0
        self._policy = settings.policy
        self._units = 0
        self._pairs = 0
        self._noisy: dict[int, tuple[Any, str, RACLabel, Any]] = {}
        if settings.source == "dataset":
            self._noisy = self._dataset_pairs(loader.dataset)

    @staticmethod
    def _dataset_pairs(dataset: Any) -> dict[int, tuple[Any, str, RACLabel, Any]]:
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError("rac: --rac.corruption.source dataset needs OpenRLHF's PromptDataset")
        if not any(isinstance(lab, RACLabel) and lab.pair >= 0 for lab in labels):
            raise ValueError(
                f"rac: --rac.corruption.source dataset: the training set has no paired rows (columns {', '.join(PAIR_COLUMNS)})"
            )
        clean, noisy = set(), {}
        for i, lab in enumerate(labels):
            if not (isinstance(lab, RACLabel) and lab.pair >= 0):
                continue
            if lab.level > 0:
                if lab.pair in noisy:
                    raise ValueError(f"rac: pair_id {lab.pair} has more than one noisy row (one corrupted copy per clean row)")
                noisy[lab.pair] = (dataset.datasources[i], dataset.prompts[i], lab, dataset.images[i])
            elif lab.pair in clean:
                raise ValueError(f"rac: pair_id {lab.pair} has more than one clean row")
            else:
                clean.add(lab.pair)
        return {p: row for p, row in noisy.items() if p in clean}  # a noisy row without its clean one: unpaired

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[tuple[list, list, list, list]]:
        return _UnitIterator(self)

    def copies(self) -> int:
        """How many corrupted prompts one pass over the training set adds to its rows (0 for ``dataset``)."""
        if self.settings.source != "generate" or not self.settings.pairs:
            return 0
        dataset = self.loader.dataset
        return sum(_has_images(img) and self._selects(img) for img in dataset.images)

    def _selects(self, images: Any) -> bool:
        fraction = self._policy.fraction
        return fraction >= 1 or (fraction > 0 and self._policy.selects(_image_key(images)))

    def _copy(self, label: RACLabel, images: Any) -> tuple[RACLabel, Any] | None:
        """The generated copy's ``(label fields, images)``, or None when the prompt gets none."""
        if not (_has_images(images) and self._selects(images)):
            return None
        from openrlhf.utils.vlm_utils import load_images

        from rac_losses.corruption._api import corrupt

        name, severity, seed = self._policy.choose(_image_key(images))
        pil = load_images(images)
        if not pil:
            return None
        corrupted = [corrupt(img.convert("RGB"), name, severity, seed=seed) for img in pil]
        return label.but(level=severity / 5), corrupted if isinstance(images, list) else corrupted[0]


class _UnitIterator:
    def __init__(self, prompts: PairedPrompts) -> None:
        self.prompts, self.source = prompts, self._rows(iter(prompts.loader))
        self.single: tuple | None = None

    def __iter__(self) -> _UnitIterator:
        return self

    @staticmethod
    def _rows(batches: Iterator) -> Iterator[tuple]:
        for batch in batches:
            datasources, prompts, labels, images = batch
            yield from zip(datasources, prompts, labels, images)

    def _emit(self, rows: list[tuple]) -> tuple[list, list, list, list]:
        p = self.prompts
        unit = p._units
        p._units += 1
        rows = [(d, q, lab.but(unit=unit, step=p.step), img) for d, q, lab, img in rows]
        return tuple(list(col) for col in zip(*rows))  # type: ignore[return-value]

    def __next__(self) -> tuple[list, list, list, list]:
        p, pairing = self.prompts, self.prompts.settings.pairs
        for datasource, prompt, label, images in self.source:
            label = label if isinstance(label, RACLabel) else RACLabel(label)
            if not pairing:
                return self._emit([(datasource, prompt, label.but(pair=-1, level=0.0), images)])
            if p.settings.source == "dataset":
                if label.level > 0 and label.pair in p._noisy:
                    continue  # comes with its clean row
                copy = p._noisy.get(label.pair) if label.level == 0 else None
                if copy is not None:
                    d2, q2, lab2, img2 = copy
                    return self._emit([(datasource, prompt, label, images), (d2, q2, lab2, img2)])
                row = (datasource, prompt, label.but(pair=-1), images)
            else:
                made = p._copy(label, images)
                if made is not None:
                    pair = p._pairs
                    p._pairs += 1
                    copy_label, copy_images = made
                    return self._emit([
                        (datasource, prompt, label.but(pair=pair, level=0.0), images),
                        (datasource, prompt, copy_label.but(pair=pair), copy_images),
                    ])
                row = (datasource, prompt, label.but(pair=-1, level=0.0), images)
            if self.single is None:
                self.single = row
                continue
            first, self.single = self.single, None
            return self._emit([first, row])
        if self.single is not None:
            last, self.single = self.single, None
            return self._emit([last])
        raise StopIteration


def collect_units(collect: Callable) -> Callable:
    """Wrap ``samples_generator._collect_prompt_batch``: whole units from a :class:`PairedPrompts` iterator.

    Draws units until at least ``num_prompts`` prompts (a unit is never cut; OpenRLHF's own function keeps
    only the first ``num_prompts`` of a batch). Any other iterator (evaluation) goes to OpenRLHF's function.
    """
    if getattr(collect, "rac_units", False):
        return collect

    @functools.wraps(collect)
    def collect_prompt_batch(dataloader_iter, num_prompts: int):
        if not isinstance(dataloader_iter, _UnitIterator):
            return collect(dataloader_iter, num_prompts)
        prompts, labels, images = [], [], []
        while len(prompts) < num_prompts:
            try:
                _, unit_prompts, unit_labels, unit_images = next(dataloader_iter)
            except StopIteration:
                return prompts, labels, images, True
            prompts.extend(unit_prompts)
            labels.extend(unit_labels)
            images.extend(unit_images)
        return prompts, labels, images, False

    collect_prompt_batch.rac_units = True  # type: ignore[attr-defined]
    return collect_prompt_batch


def _join(*responses: list) -> list:
    return [r for part in responses for r in part]


_REMOTE_JOIN: Any = None


def _remote_join() -> Any:
    global _REMOTE_JOIN
    if _REMOTE_JOIN is None:
        import ray

        _REMOTE_JOIN = ray.remote(num_cpus=0)(_join)
    return _REMOTE_JOIN


def with_joined_units(dispatch: Callable) -> Callable:
    """Wrap ``SamplesGenerator._dispatch_prompts_to_vllm``: one Ray object per unit of prompts.

    Prompts whose labels share a ``unit`` (consecutive, as :func:`collect_units` returns them) come back as
    one list of responses, so ``_generate_vllm`` adds their samples together. Other prompts are unchanged.
    """
    if getattr(dispatch, "rac_units", False):
        return dispatch

    @functools.wraps(dispatch)
    def dispatch_prompts(self, prompts, labels, *args, **kwargs):
        refs = dispatch(self, prompts, labels, *args, **kwargs)
        units = [getattr(lab, "unit", None) for lab in labels]
        if len(refs) != len(labels) or all(u is None for u in units):
            return refs
        joined, i = [], 0
        while i < len(refs):
            j = i + 1
            while units[i] is not None and j < len(refs) and units[j] == units[i]:
                j += 1
            joined.append(refs[i] if j == i + 1 else _remote_join().remote(*refs[i:j]))
            i = j
        return joined

    dispatch_prompts.rac_units = True  # type: ignore[attr-defined]
    return dispatch_prompts


def with_paired_loader(prepare: Callable, settings: PaperSettings) -> Callable:
    """Wrap ``ppo_trainer.prepare_datasets``: the training dataloader becomes a :class:`PairedPrompts`.

    ``max_steps`` (the learning-rate schedule's length) counts the generated copies too: OpenRLHF computes it
    as ``rows * n // train.batch_size * num_episodes * max_epochs``; here ``rows`` includes the copies.
    """
    if getattr(prepare, "rac_paper", False):
        return prepare

    @functools.wraps(prepare)
    def prepare_datasets(strategy, tokenizer):
        loader, eval_loader, max_steps = prepare(strategy, tokenizer)
        paired = PairedPrompts(loader, settings)
        copies = paired.copies()
        if copies:
            args = strategy.args
            rows = len(loader.dataset) + copies
            max_steps = (rows * args.rollout.n_samples_per_prompt // args.train.batch_size
                         * args.train.num_episodes * args.train.max_epochs)
            logger.info("rac: %d generated corrupted prompts per pass; max_steps %d", copies, max_steps)
        return paired, eval_loader, max_steps

    prepare_datasets.rac_paper = True  # type: ignore[attr-defined]
    return prepare_datasets


def with_training_step(cls: type) -> None:
    """Keep ``PairedPrompts.step`` at the training step OpenRLHF is at (``BasePPOTrainer``, in place).

    ``init_checkpoint_states`` gives the resumed step, ``train_step`` the next one.
    """
    if getattr(cls, "rac_steps", False):
        return
    init_states, train_step = cls.init_checkpoint_states, cls.train_step

    def _set(self: Any, step: int) -> None:
        loader = getattr(self, "prompts_dataloader", None)
        if isinstance(loader, PairedPrompts):
            loader.step = int(step)

    @functools.wraps(init_states)
    def init_checkpoint_states(self):
        states = init_states(self)
        _set(self, states.get("global_step", 0))
        return states

    @functools.wraps(train_step)
    def step(self, rollout_samples, global_step):
        status, next_step = train_step(self, rollout_samples, global_step)
        _set(self, next_step)
        return status, next_step

    cls.init_checkpoint_states, cls.train_step = init_checkpoint_states, step
    cls.rac_steps = True
