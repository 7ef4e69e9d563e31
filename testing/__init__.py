"""``bioprior.testing``: the conformance kit for plugin authors (a pytest plugin).

One pytest item per (entry, check), as scikit-learn's ``parametrize_with_checks``::

    from bioprior.testing import parametrize_with_checks

    @parametrize_with_checks(distribution="bioprior-myplugin")
    def test_conformance(check):
        check()

Checks are chosen by kind (see :mod:`bioprior.testing.checks`); each failure says what to fix.
Known exceptions go in ``expected_failed_checks={"model:my_net": {"check": "why"}}``. The pytest
plugin (entry point ``pytest11``) adds pytest-benchmark fixtures for a plugin's speed
(:mod:`bioprior.testing.pytest_plugin`). ``bioprior plugins check DIST`` runs the same checks.

Importing this module does not import torch (nor pydantic): plugin-facing names come from
:mod:`bioprior.plugin` on first use, and the few core internals the kit runs (the planner and
the scorer, for a benchmark's end-to-end check) are imported inside the checks that need them.
The check modules import :mod:`bioprior.testing.subject` (the subject and the check outcomes),
never the kit that collects them.
"""

from __future__ import annotations

from .constraint_checks import constrained_model
from .kit import (
    Check,
    CheckFailed,
    CheckSkipped,
    KitConfig,
    checks_for,
    parametrize_with_checks,
    run_checks,
)

__all__ = [
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "KitConfig",
    "checks_for",
    "constrained_model",
    "parametrize_with_checks",
    "run_checks",
]
