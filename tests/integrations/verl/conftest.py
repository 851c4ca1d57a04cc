"""verl adapter tests: import verl (skip outside the ``verl`` nox session), run its engine on the CPU."""

from __future__ import annotations

import os
import sys

import pytest

from frameworks import require

require("verl")
sys.path.insert(0, os.path.dirname(__file__))  # the test-only helpers beside this file

import verl_cpu  # noqa: E402  (after verl is known to be importable)

verl_cpu.install()


@pytest.fixture(scope="session")
def tiny_vl_path(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder."""
    import tiny_vl

    return tiny_vl.save(tmp_path_factory.mktemp("tinyqwenvl"))


@pytest.fixture(scope="module")
def hf(tiny_vl_path):
    """The tiny checkpoint as a plain transformers model (the reference forward), float32, eager attention."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_path, attn_implementation="eager").float()


@pytest.fixture(scope="module")
def frozen_worker(tiny_vl_path):
    """verl's training engine on the tiny checkpoint with lr = 0: parameters never move, so every test sees
    the checkpoint's weights and gradients compare."""
    import vl_batch

    return vl_batch.make_worker(tiny_vl_path, lr=0.0)
