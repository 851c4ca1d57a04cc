"""The package's public namespace: every name resolves, and importing it costs nothing."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import rac_losses


def test_importing_the_package_loads_no_torch(tmp_path):
    # a framework hook under rac_losses.integrations is imported in every worker process, before the
    # framework sets the process up (thread counts): the package itself must not load torch.
    # cwd: not the repository root, whose source folder would shadow the installed package
    code = "import sys, rac_losses, rac_losses.integrations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", sorted(rac_losses.__all__))
def test_every_public_name_is_its_modules_object(name):
    module = importlib.import_module(f"rac_losses.{rac_losses._EXPORTS[name]}")
    assert getattr(rac_losses, name) is getattr(module, name)


def test_submodules_are_attributes_of_the_package(tmp_path):
    code = "import rac_losses; print(rac_losses.metrics.__name__, rac_losses.rewards.paper_reward.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["rac_losses.metrics", "paper_reward"], out.stderr


def test_all_and_the_lazy_table_agree_and_unknown_names_raise():
    assert sorted(rac_losses.__all__) == sorted(rac_losses._EXPORTS)
    assert set(rac_losses.__all__) <= set(dir(rac_losses))
    with pytest.raises(AttributeError, match="no attribute 'rank_loss'"):
        rac_losses.rank_loss  # noqa: B018
    with pytest.raises(ImportError):
        exec("from rac_losses import rank_loss", {})


def test_the_source_checkout_imports_like_the_installed_package():
    # a process started in the repository root imports the checkout (Ray puts the driver's working directory
    # on every worker's sys.path): its integrations/ and corruption/ must resolve as in the installed package
    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys, rac_losses, rac_losses.integrations.import_patch, rac_losses.corruption.presets; "
        "print(rac_losses.integrations.__file__); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    where, torch_loaded = out.stdout.split()
    assert Path(where).resolve().parent.name == "integrations" and torch_loaded == "False", out.stderr
