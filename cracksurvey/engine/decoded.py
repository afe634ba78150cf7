"""Whole decoded images shared by the engine's processes on one machine.

A JPEG or PNG is not tiled: GDAL decodes any window of it from the top of the image, so a
worker decodes such an image whole, once, and cuts its tiles from memory
(:func:`cracksurvey.engine.worker.read_tile`). Each local worker used to decode it again and
keep its own copy. Now the first process that needs it decodes it into a file in shared memory
(``/dev/shm``, else the temporary directory), under a lock, and every worker maps that file:
one decode and one copy per machine. On a 4096 x 4096 JPEG that is one decode of 0.17-0.29 s
fewer per extra worker (docs/performance.md).

The process that wrote a file removes it once it has moved two images on (a worker keeps the
previous image's file for the client's crack verifier) and when the engine lets it go; files a
killed process left behind are removed by the next one after :data:`STALE_S`. A file
removed while mapped stays readable by the processes that map it; a process that comes later
decodes the image again. Any file error (no room, no ``/dev/shm``, a read-only temporary
directory) falls back to a private decode: it can cost time, never a result.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_S", "file_stem", "image_key", "release_shared", "shared_decode"]

log = logging.getLogger(__name__)

STALE_S = 3600
"""A decoded file older than this (seconds) is left over by a process that was killed."""

_HEADROOM_BYTES = 256 * 2**20  # free space kept beyond the file itself
_BASES = (Path("/dev/shm"), Path(tempfile.gettempdir()))
_CREATED: list[Path] = []  # files this process wrote and still has to remove, oldest first


def _directory(nbytes: int) -> Path | None:
    """The first of :data:`_BASES` with room for ``nbytes`` (our own subfolder), or None."""
    for base in _BASES:
        directory = base / f"cracksurvey-decoded-{os.getuid()}"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            owner = directory.stat()
            room = os.statvfs(directory)
        except OSError:
            continue
        if owner.st_uid != os.getuid() or owner.st_mode & 0o022:
            continue  # not ours alone: another user could put pixels there
        if room.f_bavail * room.f_frsize >= nbytes + _HEADROOM_BYTES:
            return directory
    return None


def _sweep(directory: Path) -> None:
    """Remove the files of this folder older than :data:`STALE_S`."""
    now = time.time()
    for path in directory.iterdir():
        try:
            if now - path.stat().st_mtime > STALE_S:
                path.unlink()
        except OSError:
            pass


def file_stem(key: str, shape: tuple[int, int, int]) -> str:
    """Name (without folder and suffix) of the shared file of an image."""
    return hashlib.sha256(f"{key}|{shape}".encode()).hexdigest()[:32]


def shared_decode(
    key: str, shape: tuple[int, int, int], decode: Callable[[], np.ndarray]
) -> np.ndarray:
    """The image ``decode()`` returns, ``(bands, rows, cols)`` uint8, shared on this machine.

    ``key`` names the image's content (path, modification time, size). The result is a
    read-only map of the shared file, or ``decode()``'s own array when no file can be used.
    Errors of ``decode()`` itself (a corrupt image) are raised as they are.
    """
    nbytes = math.prod(shape)
    directory = _directory(nbytes) if fcntl is not None else None
    if directory is None:
        return decode()
    name = file_stem(key, shape)
    final = directory / f"{name}.rgb"
    try:
        lock = open(directory / f"{name}.lock", "a+b")  # noqa: SIM115 - held across the decode
    except OSError:
        return decode()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker decoding this image: wait for it
        if not final.exists():
            whole = np.ascontiguousarray(decode(), dtype=np.uint8)
            if whole.shape != shape:
                raise ValueError(f"decoded {whole.shape}, expected {shape}")
            tmp = directory / f"{name}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    whole.tofile(f)
                os.replace(tmp, final)
            except OSError as exc:
                log.debug("decoded image not shared (%s): kept in this process", exc)
                tmp.unlink(missing_ok=True)
                return whole
            _CREATED.append(final)
            _sweep(directory)
    try:
        return np.memmap(final, dtype=np.uint8, mode="r", shape=shape)
    except (OSError, ValueError):  # removed meanwhile by the process that wrote it
        return decode()


def image_key(path: str | Path) -> tuple[str, int, int]:
    """What names an image's content here: its path, modification time and size."""
    stat = os.stat(path)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def release_shared(keep_newest: int = 0) -> None:
    """Remove the decoded files this process wrote, but its ``keep_newest`` latest ones.

    A worker keeps the previous image's file too: ``process`` reads that image again (the crack
    verifier) while the workers start the next one. Maps made before stay readable.
    """
    for path in _CREATED[: max(0, len(_CREATED) - keep_newest)]:
        path.unlink(missing_ok=True)
        path.with_suffix(".lock").unlink(missing_ok=True)
        _CREATED.remove(path)


atexit.register(release_shared)
