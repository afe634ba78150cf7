"""Error hierarchy: every class also inherits a builtin so callers can catch either.

A message says what was found, what was expected, and how to fix it, in one line.
"""


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
