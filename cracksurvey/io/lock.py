"""One run per output folder: the lock file ``OUT/cracksurvey.lock``.

A run holds the lock from before it reads the survey until it ends, on every path (finished,
failed, stopped by a signal). The file says who holds it, as JSON: host, process id, start time,
command (and, to tell a dead holder from a live one, the process's own start time, its process
namespace and its SLURM job)::

    {"host": "node7", "pid": 4242, "started_utc": "2025-03-01T10:02:03+00:00",
     "command": "cracksurvey process survey --out out", ...}

A second run on the same folder refuses at once with
:class:`~cracksurvey.errors.OutputInUseError`, naming the holder, whatever ``overwrite`` says.
A lock whose holder has ended is taken over, with a :class:`~cracksurvey.errors.CrackSurveyWarning`:

- a holder on this host (same host name and process namespace) whose process is gone; its
  start time is compared too, so a process id reused since is not taken for the holder;
- a holder that was an earlier run of this same SLURM job (a requeued job: SLURM ends a job's
  processes before it runs it again).

A holder on another host cannot be checked from here: the run refuses and says how to remove
the lock once the user knows that run has ended (``break_lock=True``, ``--break-lock``, or
deleting the file).

Shared filesystems (NFS, Lustre, GPFS): the lock is made by writing a unique file beside it and
hard-linking that file to the lock's name, which fails when the name exists: atomic on local
filesystems and NFS alike, and the lock is never seen half-written. This is the method open(2)
recommends where ``O_EXCL`` cannot be relied on, link count included (a lost NFS reply can
report a failed link that was made). Where hard links are not supported, ``O_CREAT | O_EXCL``
(atomic on NFSv3 and later). A takeover removes the old lock only while holding an advisory lock
(``flock``) on it and after reading back that it is still the same lock, so two runs taking
over one stale lock at the same moment cannot remove each other's new lock.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shlex
import socket
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil

from cracksurvey.errors import CrackSurveyWarning, OutputInUseError, OutputWriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "LockHolder", "RunLock", "check_run_lock", "holder_ended"]

logger = logging.getLogger(__name__)

LOCK_FILE = "cracksurvey.lock"

#: link(2) errors that mean "no hard links on this filesystem" (then O_CREAT | O_EXCL).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


@dataclass(frozen=True)
class LockHolder:
    """The run that holds (or held) an output folder's lock, as its lock file says.

    Attributes
    ----------
    host : str
        Host name of the run.
    pid : int
        Its process id on that host.
    started_utc : str
        When it took the lock (ISO 8601, UTC).
    command : str
        Its command line.
    token : str
        Unique to this lock (a lock read back is compared by it).
    process_started : float or None
        The process's start time (seconds since the epoch): a process id reused by another
        process since does not count as the holder.
    pid_namespace : str or None
        The process-id namespace (Linux): containers sharing a host name do not share pids.
    slurm_job, slurm_restart : str, int or None
        ``SLURM_JOB_ID`` and ``SLURM_RESTART_COUNT`` of a run inside a SLURM job.
    user : str or None
    """

    host: str
    pid: int
    started_utc: str
    command: str
    token: str
    process_started: float | None = None
    pid_namespace: str | None = None
    slurm_job: str | None = None
    slurm_restart: int | None = None
    user: str | None = None

    def describe(self) -> str:
        """``pid 4242 on host node7, started 2025-03-01 10:02:03 UTC: cracksurvey process ...``"""
        try:
            started = datetime.fromisoformat(self.started_utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            started = self.started_utc
        return f"pid {self.pid} on host {self.host}, started {started}: {self.command}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LockHolder:
        """Raises ValueError for anything but a complete lock file."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        holder = cls(**{k: v for k, v in data.items() if k in names})
        if not isinstance(holder.pid, int) or not holder.token or not holder.host:
            raise ValueError("no host, pid or token")
        return holder


def _this_process() -> LockHolder:
    """The lock this process writes."""
    process = psutil.Process()
    try:
        user: str | None = process.username()
    except (psutil.Error, KeyError, OSError):
        user = None
    slurm_job, slurm_restart = _slurm_job()
    return LockHolder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        token=uuid.uuid4().hex,
        process_started=process.create_time(),
        pid_namespace=_pid_namespace(),
        slurm_job=slurm_job,
        slurm_restart=slurm_restart,
        user=user,
    )


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _slurm_job() -> tuple[str | None, int | None]:
    """``(SLURM_JOB_ID, SLURM_RESTART_COUNT)`` of this process, (None, None) outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None, None
    try:
        return job, int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return job, None


def _process_alive(pid: int, process_started: float | None) -> bool:
    """Whether process ``pid`` runs and is the one started at ``process_started``."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process_started is None or abs(process.create_time() - process_started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def holder_ended(holder: LockHolder) -> bool | None:
    """True: the holder has ended; False: it runs; None: it cannot be told from this host."""
    slurm_job, slurm_restart = _slurm_job()
    if holder.slurm_job is not None and holder.slurm_job == slurm_job:
        if holder.slurm_restart != slurm_restart:
            return True  # an earlier run of this (requeued) job
    if holder.host != socket.gethostname():
        return None
    namespace = _pid_namespace()
    if holder.pid_namespace and namespace and holder.pid_namespace != namespace:
        return None
    return not _process_alive(holder.pid, holder.process_started)


# --------------------------------------------------------------------------------------------
# The lock file
# --------------------------------------------------------------------------------------------
def _read(path: Path) -> tuple[bytes, LockHolder | None] | None:
    """The lock file's bytes and holder (None: unreadable); None when there is no lock file.

    A file that does not parse is read again for up to half a second: with ``O_EXCL`` (no hard
    links) a lock is seen empty until its holder has written it.
    """
    data = b""
    for _ in range(10):
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return data, None
        try:
            return data, LockHolder.from_json(data.decode("utf-8"))
        except (ValueError, TypeError):
            time.sleep(0.05)
    return data, None


def _create(path: Path, holder: LockHolder) -> bytes:
    """Create the lock file atomically; FileExistsError when there is one."""
    data = holder.to_json().encode("utf-8")
    unique = path.with_name(f".{path.name}.{holder.token}")
    try:
        with open(unique, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(unique, path)
        except OSError as exc:
            if os.stat(unique).st_nlink != 2:  # NFS: a lost reply may report a link made
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                _create_exclusive(path, data)
    finally:
        unique.unlink(missing_ok=True)
    return data


def _create_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(path: Path, stale: bytes) -> bool:
    """Remove the lock file if it still holds ``stale``; False if it changed or is gone."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:  # no advisory locks here (an NFS mount without lockd)
                logger.debug("%s: no flock (%s); taking over without it", path, exc)
        try:
            if path.read_bytes() != stale:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def _refusal(
    out: Path, path: Path, holder: LockHolder | None, ended: bool | None, *, break_lock: bool
) -> OutputInUseError | None:
    """The error that refuses the run, or None when the lock may be taken over.

    ``ended``: :func:`holder_ended` of ``holder``.
    """
    if holder is None:
        if break_lock:
            return None
        return OutputInUseError(
            f"{path} exists but is not a readable lock; if no other run uses {out}, rerun "
            "with --break-lock or delete the file"
        )
    if ended is False:
        hint = "; --break-lock removes only locks of runs that have ended" if break_lock else ""
        return OutputInUseError(
            f"{out} is in use by another run ({holder.describe()}){hint}: wait for it to "
            f"finish or stop it (kill {holder.pid}), or choose another --out"
        )
    if ended is None and not break_lock:
        return OutputInUseError(
            f"{out} is in use by a run on another host ({holder.describe()}), which cannot be "
            f"checked from {socket.gethostname()}: if that run has ended, rerun with "
            f"--break-lock or delete {path}"
        )
    return None


def check_run_lock(out_dir: str | Path, *, break_lock: bool = False) -> None:
    """Raise :class:`OutputInUseError` if a run holds ``out_dir`` (nothing is written).

    A quick look for a command line to refuse before it loads anything; :meth:`RunLock.acquire`
    decides for good.
    """
    path = Path(out_dir) / LOCK_FILE
    found = _read(path)
    if found is not None:
        holder = found[1]
        ended = holder_ended(holder) if holder is not None else None
        refusal = _refusal(Path(out_dir), path, holder, ended, break_lock=break_lock)
        if refusal is not None:
            raise refusal


class RunLock:
    """The lock of an output folder, held by this process (:meth:`acquire`, :meth:`release`).

    Use as a context manager::

        with RunLock.acquire(out):
            ...

    Attributes
    ----------
    path : Path
        The lock file.
    holder : LockHolder
        What it says (this process).
    """

    def __init__(
        self, path: Path, holder: LockHolder, data: bytes, created: tuple[Path, ...] = ()
    ) -> None:
        self.path = path
        self.holder = holder
        self._data = data
        self._created = created
        self._held = True

    @classmethod
    def acquire(cls, out_dir: str | Path, *, break_lock: bool = False) -> RunLock:
        """Take the lock of ``out_dir`` (created if missing), or refuse.

        Parameters
        ----------
        out_dir : str or Path
            The output folder.
        break_lock : bool
            Also take over a lock that cannot be checked (held on another host, or unreadable).
            A holder on this host that still runs is never broken.

        Raises
        ------
        OutputInUseError
            Another run holds the lock (the message names it and says what to do).
        OutputWriteError
            The output folder cannot be created or written.
        """
        out = Path(out_dir)
        path = out / LOCK_FILE
        holder = _this_process()
        created = tuple(p for p in (out, *out.parents) if not p.exists())
        for _ in range(5):
            try:
                out.mkdir(parents=True, exist_ok=True)
                return cls(path, holder, _create(path, holder), created)
            except FileExistsError:
                pass
            except FileNotFoundError:  # the folder was removed meanwhile
                continue
            except OSError as exc:
                raise OutputWriteError(
                    f"{out}: the output folder cannot be written ({exc.strerror or exc}); fix "
                    "its permissions or free space, or choose another --out"
                ) from exc
            found = _read(path)
            if found is None:  # released meanwhile
                continue
            stale, previous = found
            ended = holder_ended(previous) if previous is not None else None
            refusal = _refusal(out, path, previous, ended, break_lock=break_lock)
            if refusal is not None:
                raise refusal
            who = previous.describe() if previous is not None else "an unreadable lock file"
            what = (
                f"took over the lock of a run that has ended ({who}); the images it finished "
                "are reused"
                if ended
                else f"removed the lock of {who} (--break-lock)"
            )
            try:
                removed = _remove_stale(path, stale)
            except OSError as exc:
                raise OutputInUseError(
                    f"{out}: the lock of a run that has ended ({who}) cannot be removed "
                    f"({exc.strerror or exc}); delete {path}"
                ) from exc
            if removed:
                warnings.warn(
                    f"{out}: {what}",
                    CrackSurveyWarning,
                    stacklevel=3,
                )
        raise OutputInUseError(
            f"{out}: other runs keep taking its lock ({path}); run one at a time per --out"
        )

    def release(self) -> None:
        """Remove the lock file if it is still this process's (idempotent).

        Folders that :meth:`acquire` created and that are empty again are removed too: a run
        refused before it wrote anything leaves no trace.
        """
        if not self._held:
            return
        self._held = False
        try:
            if self.path.read_bytes() == self._data:
                self.path.unlink()
                for folder in self._created:
                    try:
                        folder.rmdir()
                    except OSError:  # not empty: the run wrote into it
                        break
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("%s: could not remove the lock (%s); delete it by hand", self.path, exc)
            return
        logger.warning(
            "%s: the lock was taken over by another run meanwhile; left as is", self.path
        )

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
