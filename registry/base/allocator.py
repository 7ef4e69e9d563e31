"""Keep freed memory in the process while it trains: glibc's malloc hands large freed blocks back
to the system (anything over its mmap threshold, and the heap's top beyond its trim threshold),
so every training step faults its activations and gradients in again page by page. On the
quickstart that was 6 million page faults and a tenth of the CPU time; with the limits raised
the same steps reuse the same pages (the numbers do not change: only where buffers live does).

:func:`keep_freed_memory` raises the three limits with ``mallopt`` (as ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` would at start-up; PyTorch's CPU tuning guide
suggests the same or another allocator). It leaves the allocator alone where the user set any
of those variables, where ``BIOPRIOR_MALLOC=system``, and where the C library is not glibc. A
process then keeps up to ``TRIM_BYTES`` of freed memory for reuse.

:func:`release_freed_memory` hands what is kept back at once (``malloc_trim``): the scorer calls
it when the plan's calibration is done, before its workers start. Calibrating Fig. 4A's three
HMAX variants left about 1.1 GB freed but kept in the scorer, which every forked worker inherited
(4.4-4.7 GB resident each).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_BYTES = 32 << 20  # glibc's largest mmap threshold on 64-bit
TRIM_BYTES = 256 << 20
TOP_PAD_BYTES = 64 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; whether they are raised."""
    global _applied
    if _applied is None:  # a forked child inherits both the settings and this flag
        _applied = _apply()
    return _applied


def _glibc(name: str, argtypes: list) -> Any:
    """glibc's function ``name`` (returning int), or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


def _apply() -> bool:
    if os.environ.get("BIOPRIOR_MALLOC") == "system" or any(v in os.environ for v in USER_SETTINGS):
        return False
    mallopt = _glibc("mallopt", [ctypes.c_int, ctypes.c_int])
    if mallopt is None:
        return False
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (M_MMAP_THRESHOLD, MMAP_BYTES),
            (M_TRIM_THRESHOLD, TRIM_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES),
        )
    )


def release_freed_memory() -> bool:
    """Give the memory glibc keeps freed back to the system (``malloc_trim(0)``); whether
    anything was released (False where the C library is not glibc)."""
    trim = _glibc("malloc_trim", [ctypes.c_size_t])
    return trim is not None and trim(0) == 1
