"""Ctrl-C and SIGTERM during a command: the run stops in order, once.

The first SIGINT or SIGTERM raises :class:`KeyboardInterrupt` in the main thread, wherever it
is: the library shuts the engine down, releases the output folder's lock and says what it
kept (:class:`~cracksurvey.errors.RunInterrupted`); the command prints that as one line and
exits with the shell's code for the signal, 128 + its number (130 for SIGINT, 143 for
SIGTERM). Signals that arrive during that shutdown do not interrupt it, except that a second
one after :data:`FORCE_AFTER_S` seconds ends the process at once (its child processes
killed): for a shutdown that hangs.

Python does not pass on an exception raised while it runs a finalizer or a weakref callback
(garbage collection can run one at any point): it reports it as "unraisable" and goes on. So
the KeyboardInterrupt of a signal can be lost; such a report is kept off the terminal here, and
the caller checks the list of received signals at its next step (:func:`raise_if_stopping`,
called by the progress callback of ``process`` at every tile and image).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = [
    "FORCE_AFTER_S",
    "STOP_SIGNALS",
    "exit_code",
    "raise_if_stopping",
    "stop_on_signals",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: A second signal this long after the first ends the process without waiting for the
#: shutdown (sooner, it is taken as the same request: a terminal's Ctrl-C and a batch system's
#: SIGTERM can reach a process twice, once directly and once through its process group).
FORCE_AFTER_S = 5.0


def exit_code(signum: int) -> int:
    """The shell's exit status of a command stopped by ``signum``.

    >>> exit_code(signal.SIGINT), exit_code(signal.SIGTERM)
    (130, 143)
    """
    return 128 + int(signum)


def _force_exit(signum: int) -> None:
    """End this process now: kill its child processes (Dask workers), then exit."""
    import psutil

    sys.stderr.write(
        f"\nstopped at once by a second {signal.Signals(signum).name}; the images finished "
        "before are kept in the cache: run the same command again to resume\n"
    )
    sys.stderr.flush()
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    os._exit(exit_code(signum))


def raise_if_stopping(received: list[int]) -> None:
    """Raise KeyboardInterrupt if a stop signal came (in case its own was lost, see above)."""
    if received:
        raise KeyboardInterrupt


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Within the context, SIGINT and SIGTERM raise KeyboardInterrupt (once).

    Yields the list of the signals received (empty until the first), to tell SIGINT from
    SIGTERM afterwards and for :func:`raise_if_stopping`. The previous handlers are put back
    on exit. Main thread only.
    """
    received: list[int] = []
    first_at: list[float] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if received:  # already stopping: the shutdown runs to its end
            if time.monotonic() - first_at[0] >= FORCE_AFTER_S:
                _force_exit(signum)
            return
        received.append(signum)
        first_at.append(time.monotonic())
        raise KeyboardInterrupt

    unraisable = sys.unraisablehook

    def lost_interrupt_unreported(report: Any) -> None:
        if not (received and report.exc_type is KeyboardInterrupt):
            unraisable(report)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    sys.unraisablehook = lost_interrupt_unreported
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable
