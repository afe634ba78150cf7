"""The Dask cluster: local layout, worker start environment, task resources.

Default layout (:func:`default_layout`): one single-task worker process per core, torch one
thread each, capped so that each worker has about 3 GB of RAM (the working set of a 1280 x 1280
fp32 forward of the shipped model is about 1 GB; wider models need more). Task-level
parallelism keeps cores busy when the machine is shared (multi-threaded torch stalls on a busy
core) and overlaps one tile's reading and skeleton with another's forward; separate processes
also run the numpy parts without sharing a GIL. The measurements behind this choice are in
docs/performance.md.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from distributed import LocalCluster

from cracksurvey.config import EngineConfig
from cracksurvey.predict import HEAP_ENVIRON

__all__ = ["available_cores", "default_layout", "local_layout", "task_resources", "worker_environ"]

log = logging.getLogger(__name__)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_layout(
    cores: int | None = None, memory_bytes: int | None = None
) -> tuple[int, int, int]:
    """``(workers, threads_per_worker, torch_threads)`` for a local cluster on this machine.

    One single-task worker process per core, at most one per ~3 GB of RAM, torch threads
    sharing the cores among the workers (see the module docstring).

    >>> default_layout(2, 24 * 2**30)
    (2, 1, 1)
    >>> default_layout(16, 16 * 2**30)
    (5, 1, 3)
    """
    cores = cores or available_cores()
    if memory_bytes is None:
        import psutil

        memory_bytes = psutil.virtual_memory().total
    workers = max(1, min(cores, int(memory_bytes // (3 * 2**30))))
    return workers, 1, max(1, cores // workers)


def local_layout(config: EngineConfig) -> tuple[int, int, int]:
    """``(workers, threads_per_worker, torch_threads)`` of the local cluster for ``config``:
    its values where set, else :func:`default_layout`; torch threads share the cores among the
    task slots unless ``config.torch_threads`` says otherwise.

    >>> local_layout(EngineConfig(workers=1, threads_per_worker=1, torch_threads=2))
    (1, 1, 2)
    """
    workers = config.workers or default_layout()[0]
    threads = config.threads_per_worker
    torch_threads = config.torch_threads or max(1, available_cores() // (workers * threads))
    return workers, threads, torch_threads


@contextmanager
def worker_environ() -> Iterator[None]:
    """Worker processes started inside this context get :data:`HEAP_ENVIRON` (glibc's
    allocator settings must be there at process start; each nanny keeps them for the restarts
    it does). Wrap the creation of a ``LocalCluster`` in it.

    Dask's nanny puts these variables in this process's ``os.environ`` to spawn a worker; they
    are put back as they were on exit, so programs this process starts later do not inherit
    them (a nanny restarting a dead worker sets them again)."""
    key = "distributed.nanny.pre-spawn-environ"
    before = {k: os.environ.get(k) for k in HEAP_ENVIRON}
    try:
        with dask.config.set({key: {**dask.config.get(key), **HEAP_ENVIRON}}):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Dask settings of the local cluster: its scheduler, nannies and workers (each nanny keeps
#: them for its restarts). Dask's defaults poll for a dashboard and for monitoring this cluster
#: does not serve: the statistical profiler samples every worker thread 100 times a second,
#: every server measures its event loop's latency 50 times a second, and the system and memory
#: monitors read /proc 2 and 10 times a second. On an idle 2-worker cluster that cost 66 ms of
#: CPU per second (34 in the client's process, which runs the scheduler and the nannies, 16 in
#: each worker), 3.3 % of two cores taken from the tiles; with these settings 14 ms
#: (docs/performance.md). A worker past its memory limit is still stopped within half a second.
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}

#: Signals the local worker processes never receive: the client stops them in order.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Threads and processes started inside this context never receive SIGINT or SIGTERM.

    Ctrl-C in a terminal (and a batch system's SIGTERM) reaches every process of the group:
    workers would stop on their own, with tracebacks, while the client still needs them to
    shut down in order. A blocked signal stays blocked in the threads started meanwhile (the
    cluster's event loop, which later also restarts dead workers) and across the workers'
    fork and exec. This thread gets a signal that arrived meanwhile once the context exits.
    A worker still exits at once when its client process dies (Dask watches the parent).

    multiprocessing's resource tracker is started first: starting it unblocks both signals in
    the thread that starts it (it would be the cluster's event loop).
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_local_cluster(config: EngineConfig) -> tuple[Any, int, int]:
    """A ``LocalCluster`` laid out by :func:`local_layout`; returns it, its task slots and the
    torch threads per task. Its workers never receive SIGINT or SIGTERM
    (:func:`stop_signals_blocked`): the client stops them."""
    workers, threads, torch_threads = local_layout(config)
    # without the polling of a dashboard and monitors this cluster does not serve (WORKER_CONFIG)
    with worker_environ(), stop_signals_blocked(), dask.config.set(WORKER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=config.processes,
            dashboard_address=None,
            # the scheduler's health/metrics HTTP server still starts: any free port, so
            # concurrent clusters on one machine do not warn about port 8787
            scheduler_kwargs={"dashboard_address": ":0"},
            silence_logs=logging.WARNING,
        )
    return cluster, workers * threads, torch_threads


def task_resources(workers: dict[str, Any], resource: str) -> dict[str, float] | None:
    """``{resource: 1}`` when some worker advertises ``resource`` (GPU workers), else None.

    >>> task_resources({"a": {"resources": {"GPU": 1}}, "b": {"resources": {}}}, "GPU")
    {'GPU': 1}
    >>> task_resources({"a": {}}, "GPU") is None
    True
    """
    if any(w.get("resources", {}).get(resource, 0) > 0 for w in workers.values()):
        return {resource: 1}
    return None
