"""Performance pairs (pytest-benchmark): a reference and the engine in the same run, the GPU
synchronized inside the timed call. Every test here is marked ``perf`` and skipped by the default
run; run them with ``python -m pytest tests/perf -m perf --benchmark-enable --benchmark-autosave``
and read the ratios with ``python -m bioprior.perf``.

``extra_info`` of each benchmark: ``pair`` (the comparison), ``role`` ("reference" | "engine"),
``images`` per timed call, ``images_per_s``, ``device`` and, on GPU, ``bf16_peak_fraction`` (the
achieved FLOP rate over a measured bf16 matmul rate of the device).
"""

from __future__ import annotations

import pytest
from perfkit import recorder


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/perf/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.perf)


@pytest.fixture
def record(benchmark):
    return recorder(benchmark)
