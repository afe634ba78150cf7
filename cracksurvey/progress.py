"""Progress reporting: what a long run tells the caller as it goes.

The library never prints: ``process_survey`` and the engine call a :data:`ProgressCallback`
with a :class:`ProgressEvent`; the CLI turns the events into progress bars on stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cracksurvey.process import ImageOutcome

__all__ = ["ProgressCallback", "ProgressEvent", "ProgressKind"]

ProgressKind = Literal["discover", "images", "image", "tile", "image_done"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a run.

    Attributes
    ----------
    kind : {'discover', 'images', 'image', 'tile', 'image_done'}
        ``discover``: ``done`` of ``total`` image files are read and hashed (``image``: the
        file). ``images``: the run starts, ``total`` images. ``image``: image number ``done + 1`` of
        ``total`` starts. ``tile``: ``done`` of ``total`` tiles of ``image`` are written.
        ``image_done``: ``outcome`` of image number ``done`` of ``total``.
    done, total : int
    image : str or None
        The image's file name (``image``, ``tile`` and ``image_done`` events).
    outcome : ImageOutcome or None
        ``image_done`` only.
    cached : bool
        ``image_done`` only: the outcome comes from the cache of a previous run.
    """

    kind: ProgressKind
    done: int
    total: int
    image: str | None = None
    outcome: ImageOutcome | None = None
    cached: bool = False


#: Called with each :class:`ProgressEvent`; it must return quickly.
ProgressCallback = Callable[[ProgressEvent], None]
