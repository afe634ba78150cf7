"""The ``cracksurvey`` command line: one click group, thin commands.

Heavy imports (torch, dask, geopandas) happen inside the commands so ``--help`` is instant.
Errors are one clear line (traceback with ``-v``); progress bars go to stderr; ``--json`` prints
machine-readable results on stdout.
"""

from cracksurvey.cli import commands, finetune, process  # noqa: F401  (they register commands)
from cracksurvey.cli.group import main

__all__ = ["main"]
