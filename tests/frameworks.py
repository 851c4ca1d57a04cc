"""Import a framework for its adapter's tests: skip when absent, unless the session requires it.

The nox sessions ``verl`` and ``openrlhf`` set ``RAC_FRAMEWORK_TESTS`` to the framework they installed, so
a broken install there fails instead of skipping; elsewhere (the core environment) the tests skip.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(name: str) -> ModuleType:
    """``import name``; in its own nox session an import error fails, elsewhere the module is skipped."""
    if os.environ.get("RAC_FRAMEWORK_TESTS") == name:
        return importlib.import_module(name)
    return pytest.importorskip(name)
