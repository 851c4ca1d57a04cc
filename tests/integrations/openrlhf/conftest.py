"""OpenRLHF adapter tests: stub flash_attn / vllm (CPU), then import OpenRLHF (skip outside its nox session)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # the test-only helpers beside this file

import openrlhf_stubs  # noqa: E402

from frameworks import require  # noqa: E402

openrlhf_stubs.install_stubs()
require("openrlhf")
