"""Patch a framework's module when a process first imports it (or at once, if it already has).

Both adapters stay light this way: ``import verl`` (which imports every verl plugin) and OpenRLHF's Ray
worker setup hook load none of the modules they patch, and a process that never imports them (a vLLM
engine, a reward worker) pays nothing.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["Patch", "patch_on_import"]

#: A patch: called with the module, once it has been executed.
Patch = Callable[[ModuleType], None]


class _ThenPatch(importlib.abc.Loader):
    """A module's own loader, then the patch for it."""

    def __init__(self, loader: Any, patch: Patch) -> None:
        self.loader, self.patch = loader, patch

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders return for the modules it patches."""

    def __init__(self, owner: str, patches: Mapping[str, Patch]) -> None:
        self.owner, self.patches = owner, dict(patches)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.patches:
            return None
        # the first of these finders on sys.meta_path applies every owner's patch for the module
        patches = [f.patches[name] for f in sys.meta_path if isinstance(f, _PatchOnImport) and name in f.patches]

        def patch(module: ModuleType) -> None:
            for each in patches:
                each(module)

        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if isinstance(finder, _PatchOnImport) or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenPatch(spec.loader, patch)
                return spec
        return None


def patch_on_import(owner: str, patches: Mapping[str, Patch]) -> None:
    """Apply ``patches`` (module name -> patch): now to the modules already imported, to the others when
    first imported.

    A later call with the same ``owner`` replaces that owner's pending patches (modules already imported
    are patched again: patches must be idempotent).
    """
    for name, patch in patches.items():
        if name in sys.modules:
            patch(sys.modules[name])
    for finder in sys.meta_path:
        if isinstance(finder, _PatchOnImport) and finder.owner == owner:
            finder.patches = dict(patches)
            return
    sys.meta_path.insert(0, _PatchOnImport(owner, patches))
