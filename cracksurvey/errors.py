"""Error hierarchy: every class also inherits a builtin so callers can catch either.

A message says what was found, what was expected, and how to fix it, in one line.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


def suggest(word: str, allowed: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest allowed word, or an empty string."""
    close = difflib.get_close_matches(word, list(allowed), n=3, cutoff=0.6)
    if not close:
        return ""
    # Among close matches prefer the longest shared prefix: 'weight' -> 'weights', not
    # 'height'.
    best = max(close, key=lambda c: len(os.path.commonprefix([word.lower(), c.lower()])))
    return f" (did you mean {best!r}?)"


class CrackSurveyError(Exception):
    """Base class of all cracksurvey errors."""


class ConfigError(CrackSurveyError, ValueError):
    """A config file (survey.yaml, images.csv, a YAML preset) is malformed or contradictory."""


class InputRasterError(CrackSurveyError, OSError):
    """An input image cannot be read (corrupt, truncated, empty, unsupported layout)."""


class GeoreferenceError(CrackSurveyError, ValueError):
    """Georeferencing is missing, contradictory or unusable."""


class ModelError(CrackSurveyError, ValueError):
    """Weights do not match their model card or architecture, or the checksum fails."""


class OutputExistsError(CrackSurveyError, FileExistsError):
    """The output folder holds a previous run and --overwrite was not given."""


class DatasetError(CrackSurveyError, ValueError):
    """A training/evaluation dataset folder does not have the expected layout."""


class CrackSurveyWarning(UserWarning):
    """Warnings emitted by cracksurvey (tests turn them into errors)."""


class OutputWriteError(CrackSurveyError, OSError):
    """The output folder cannot be written (no space left, read-only, no permission)."""


class OutputInUseError(CrackSurveyError, BlockingIOError):
    """Another run holds the output folder's lock (:mod:`cracksurvey.io.lock`)."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) or SIGTERM; the message says what was kept.

    A :class:`KeyboardInterrupt`, so code that lets Ctrl-C through lets this through too. The
    images finished before the stop are in the output folder's cache: running the same command
    again resumes from them.

    Attributes
    ----------
    finished : int
        Images whose results are in the cache.
    total : int or None
        Images of the survey (None: stopped before the survey was read).
    """

    def __init__(self, message: str, *, finished: int = 0, total: int | None = None) -> None:
        super().__init__(message)
        self.finished = finished
        self.total = total
