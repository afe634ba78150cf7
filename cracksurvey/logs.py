"""The run's log file: what Dask says goes to ``OUT/cracksurvey.log``, not to the terminal.

Dask's scheduler, nannies and workers log worker restarts, lost connections, memory pressure
and, when a run is stopped, cancelled tasks; none of it is for the person at the terminal, all
of it helps when something goes wrong. :func:`engine_logs_to` sends these messages to one file
in the output folder, from this process (client, scheduler, nannies) and from the local
cluster's worker processes (a Dask worker preload, :func:`dask_setup`, started in each worker,
also in workers a nanny restarts). Each line carries its time and process id.

The command line uses it unless ``-v`` (then Dask logs to the terminal, as usual). Workers of an
external cluster (``--scheduler``) keep their own logging.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ENGINE_LOGGERS", "LOG_FILE", "LogFileHandler", "dask_setup", "engine_logs_to"]

LOG_FILE = "cracksurvey.log"

#: Loggers of the engine's libraries.
ENGINE_LOGGERS = ("distributed", "tornado", "bokeh", "asyncio")

#: Dask config key that carries the log file to the workers (with the rest of the config).
CONFIG_KEY = "cracksurvey.log-file"


class LogFileHandler(logging.FileHandler):
    """A log file, appended to, opened at the first message (the output folder exists by then).

    A file that cannot be written is skipped silently: the log is a diagnostic, never why a run
    fails or what fills the terminal.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # opening the file on the first message is not guarded there
        except OSError:
            pass

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _send_to(handler: logging.Handler) -> list[tuple[logging.Logger, list[logging.Handler], bool]]:
    """The engine loggers write to ``handler`` only (other file handlers kept); returns what
    puts them back."""
    saved = []
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        kept = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger.handlers = [*kept, handler]
        logger.propagate = False
    return saved


@contextmanager
def engine_logs_to(path: str | Path) -> Iterator[None]:
    """Within the context, Dask logs to ``path`` (appended), here and in the workers of the
    local clusters started meanwhile."""
    import dask

    path = Path(path).absolute()
    handler = LogFileHandler(path)
    saved = _send_to(handler)
    preload = dask.config.get("distributed.worker.preload", default=[]) or []
    if isinstance(preload, str):
        preload = [preload]
    try:
        with dask.config.set(
            {"distributed.worker.preload": [*preload, __name__], CONFIG_KEY: str(path)}
        ):
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate
        handler.close()


def dask_setup(worker: Any) -> None:
    """Dask worker preload: this worker process logs to the file of :func:`engine_logs_to`."""
    import dask

    path = dask.config.get(CONFIG_KEY, default=None)
    if path:
        _send_to(LogFileHandler(path))
