"""Ctrl-C and SIGTERM during a command: the run stops in order, once.

The first SIGINT or SIGTERM raises :class:`KeyboardInterrupt` in the main thread, wherever it
is: the library shuts the engine down, releases the output folder's lock and says what it
kept (:class:`~cracksurvey.errors.RunInterrupted`); the command prints that as one line and
exits with the shell's code for the signal, 128 + its number (130 for SIGINT, 143 for
SIGTERM). Signals that arrive during that shutdown do not interrupt it, except that a second
one after :data:`FORCE_AFTER_S` seconds ends the process at once (its child processes
killed): for a shutdown that hangs. Once the work is done (finished, or its stop reported),
signals are ignored: what is left is printing the last line and exiting, and the interpreter's
own exit (seconds with torch and Dask loaded) ends with the run's exit status. (A signal in
the fraction of a second before the command starts, while Python itself starts, ends it as it
ends any program.)

Python does not pass on an exception raised while it runs a finalizer or a weakref callback
(garbage collection can run one at any point): it reports it as "unraisable" and goes on. So
the KeyboardInterrupt of a signal can be lost; such a report is kept off the terminal here, and
the caller checks at its next step (:meth:`StopSignals.raise_if_stopping`, called by the
progress callback of ``process`` at every tile and image).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["FORCE_AFTER_S", "STOP_SIGNALS", "StopSignals", "exit_code", "stop_on_signals"]

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


class StopSignals:
    """What :func:`stop_on_signals` received, and whether a signal still stops the work.

    Attributes
    ----------
    received : list of int
        The signals received, in order (empty until the first).
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.first_at = 0.0
        self.work_done = False

    @property
    def signum(self) -> int | None:
        """The first signal received, None before any."""
        return self.received[0] if self.received else None

    def raise_if_stopping(self) -> None:
        """Raise KeyboardInterrupt if a signal came during the work (in case its own was lost,
        see the module docstring)."""
        if self.received and not self.work_done:
            raise KeyboardInterrupt

    def done(self) -> None:
        """The work is done: later signals are ignored (what is left is saying so and exiting)."""
        self.work_done = True

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.work_done:
            return
        if self.received:  # already stopping: the shutdown runs to its end
            if time.monotonic() - self.first_at >= FORCE_AFTER_S:
                _force_exit(signum)
            return
        self.received.append(signum)
        self.first_at = time.monotonic()
        raise KeyboardInterrupt


def _ignore_while_exiting() -> None:
    """atexit: a signal while the interpreter finishes (seconds, with torch and Dask loaded)
    no longer kills a process whose work is done (SIG_IGN outlives Python's own handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """Within the context, the first SIGINT or SIGTERM raises KeyboardInterrupt.

    Yields the :class:`StopSignals` that says which came. The previous handlers are put back
    on exit; once a process that used this context exits, the two signals are ignored. Main
    thread only.
    """
    stop = StopSignals()
    unraisable = sys.unraisablehook

    def lost_interrupt_unreported(report: Any) -> None:
        if not (stop.received and report.exc_type is KeyboardInterrupt):
            unraisable(report)

    previous = {signum: signal.signal(signum, stop.handle) for signum in STOP_SIGNALS}
    sys.unraisablehook = lost_interrupt_unreported
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = unraisable
        # registered last, so it runs first: before the exit handlers of Dask, torch and
        # multiprocessing, which can take a while
        atexit.unregister(_ignore_while_exiting)
        atexit.register(_ignore_while_exiting)
