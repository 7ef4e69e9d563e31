"""A stop asked of a run from outside (``kill``, a batch scheduler's SIGTERM) handled like Ctrl-C:
an exception in the main thread, so that the run closes what it holds (the scorer asks its running
steps to checkpoint, then waits for them), says where it stopped, and exits ``128 + signal``.

Without it, SIGTERM ends the scorer at once, its worker processes die with it before they can
checkpoint (they follow their parent: ``PR_SET_PDEATHSIG``), and the log says nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by ``signum`` (a ``KeyboardInterrupt``: whatever cleans up after
    Ctrl-C cleans up after it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (143 for SIGTERM)."""
        return 128 + self.signum


def raise_stopped(signum: int, frame: Any) -> None:
    """The SIGTERM handler of :func:`stoppable`."""
    raise Stopped(signum)


@contextmanager
def stoppable() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises :class:`Stopped` there (where the
    default handler is in place: a handler someone else installed stays); after it, the handler
    as it was."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ["Stopped", "raise_stopped", "stoppable"]
