"""Test-only Ray worker setup hook: the CPU stubs, then the package's real hook."""

from __future__ import annotations


def install() -> None:
    """Install the flash_attn / vllm stubs, then ``rac_losses.integrations.openrlhf.hook.install``."""
    import openrlhf_stubs

    openrlhf_stubs.install_stubs()
    from rac_losses.integrations.openrlhf.hook import install as install_rac

    install_rac()
