"""Import-time stubs for OpenRLHF 0.11.2 on a CPU-only machine (test-only; nothing here ships).

Used by ``conftest.py`` in the test process and by ``ray_setup_hook.py`` in Ray workers.

``openrlhf.models`` imports ``flash_attn`` (a CUDA-only build) and ``openrlhf.trainer.ray`` imports ``vllm``
at import time; neither is called by the code under test. The stubs provide only the names touched at
import, and raise if anything calls them. OpenRLHF's own tests stub the same modules.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from unittest.mock import MagicMock


def _unavailable(*args, **kwargs):
    raise RuntimeError("flash_attn stub: not available on CPU")


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module


def install_stubs() -> None:
    """Put ``flash_attn`` and ``vllm`` stand-ins in ``sys.modules`` unless the real ones are importable."""
    if "flash_attn" not in sys.modules and importlib.util.find_spec("flash_attn") is None:
        _module("flash_attn")
        _module(
            "flash_attn.bert_padding",
            index_first_axis=_unavailable, pad_input=_unavailable, rearrange=_unavailable, unpad_input=_unavailable,
        )
        _module("flash_attn.utils")
        _module("flash_attn.utils.distributed", all_gather=_unavailable)
    if "vllm" not in sys.modules and importlib.util.find_spec("vllm") is None:
        for name in ("vllm", "vllm.inputs", "vllm.utils"):
            stub = MagicMock()
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            stub.__version__ = "0.29.0"
            sys.modules[name] = stub

