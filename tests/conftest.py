"""Shared test setup: hypothesis profiles and the reference implementations on sys.path.

Profiles: ``ci`` (derandomized, so CI is reproducible; selected when ``CI`` is set) and ``dev`` (random
seeds, more examples; the default). Override with ``HYPOTHESIS_PROFILE=ci|dev``.
"""

import os
import sys

from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))  # for `import reference` (tests use --import-mode=importlib)

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
