"""``patch_on_import``: the adapters' lazy patching, on throwaway modules (no framework needed)."""

from __future__ import annotations

import importlib
import sys

import pytest

from rac_losses.integrations.import_patch import patch_on_import


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """A module ``rac_probe_mod`` on ``sys.path``, not imported yet; ``sys.meta_path`` restored after."""
    (tmp_path / "rac_probe_mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "rac_probe_mod", raising=False)
    yield "rac_probe_mod"
    sys.modules.pop("rac_probe_mod", None)


def _mark(tag):
    def patch(module):
        module.patched = [*getattr(module, "patched", []), tag]

    return patch


def test_patched_when_first_imported_not_before(fresh):
    patch_on_import("a", {fresh: _mark("a")})
    assert fresh not in sys.modules  # nothing imported by installing
    module = importlib.import_module(fresh)
    assert module.VALUE == 1 and module.patched == ["a"]
    assert module.__spec__.loader.get_filename(fresh).endswith("rac_probe_mod.py")  # the real loader's API


def test_an_imported_module_is_patched_at_once(fresh):
    module = importlib.import_module(fresh)
    patch_on_import("a", {fresh: _mark("a")})
    assert module.patched == ["a"]


def test_the_same_owner_replaces_its_patches_others_coexist(fresh):
    patch_on_import("a", {fresh: _mark("a1")})
    patch_on_import("a", {fresh: _mark("a2")})
    patch_on_import("b", {fresh: _mark("b")})
    owners = [f.owner for f in sys.meta_path if type(f).__name__ == "_PatchOnImport"]
    assert sorted(owners) == ["a", "b"]
    module = importlib.import_module(fresh)
    assert sorted(module.patched) == ["a2", "b"]  # each owner's latest patch, once
