"""Test-only: run verl 0.9.1's engine on this CPU-only machine (verl ships no CPU platform).

verl registers its FSDP engine for cuda/npu only and asks its platform object for a device module; this
shim answers "cpu" everywhere and uses gloo. Import it before any verl engine module; never shipped.
"""

from __future__ import annotations

import os
import types

import torch

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
os.environ.setdefault("RANK", "0")
os.environ.setdefault("WORLD_SIZE", "1")
os.environ.setdefault("LOCAL_RANK", "0")
os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")  # the FSDP engine is registered for cuda/npu only


def _noop(*args, **kwargs):
    return None


_DEVICE_MODULE = types.SimpleNamespace(
    is_available=lambda: True, current_device=lambda: "cpu", device_count=lambda: 1, set_device=_noop,
    synchronize=_noop, empty_cache=_noop, manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed,
    max_memory_allocated=lambda *a, **k: 0, max_memory_reserved=lambda *a, **k: 0,
    memory_allocated=lambda *a, **k: 0, memory_reserved=lambda *a, **k: 0, reset_peak_memory_stats=_noop,
    mem_get_info=lambda *a, **k: (0, 0), get_device_name=lambda *a, **k: "cpu", is_initialized=lambda: True,
)


def install() -> None:
    """Make verl's platform the host CPU and start a one-process gloo group (idempotent)."""
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.plugin.platform.platform_manager import set_platform

    class PlatformCPU(PlatformCUDA):
        device_name = property(lambda self: "cpu")
        vendor_name = property(lambda self: "cpu")
        device_module = property(lambda self: _DEVICE_MODULE)

        def is_available(self): return True
        def current_device(self): return "cpu"
        def device_count(self): return 1
        def set_device(self, i): pass
        def synchronize(self, i=None): pass
        def manual_seed(self, s): torch.manual_seed(s)
        def manual_seed_all(self, s): torch.manual_seed(s)
        def set_allocator_settings(self, s): pass
        def empty_cache(self): pass
        def communication_backend_name(self): return "gloo"
        def is_ipc_supported(self): return False

    set_platform(PlatformCPU())
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", rank=0, world_size=1)
