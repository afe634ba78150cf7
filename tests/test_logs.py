"""Dask's messages go to the run's log file, not the terminal (cracksurvey.logs)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from distributed import Client

from cracksurvey.config import EngineConfig
from cracksurvey.engine.cluster import start_local_cluster
from cracksurvey.logs import ENGINE_LOGGERS, LOG_FILE, engine_logs_to


def say_from_worker() -> int:
    logging.getLogger("distributed.worker").warning("a warning from a worker")
    return os.getpid()


def blocked_signals(pid: int) -> set[int]:
    """The signals process ``pid`` has blocked (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    raise AssertionError("no SigBlk line")


def test_client_and_worker_messages_go_to_the_file_and_workers_ignore_stop_signals(
    tmp_path: Path, capfd
):
    path = tmp_path / LOG_FILE
    before = {name: logging.getLogger(name).handlers[:] for name in ENGINE_LOGGERS}
    with engine_logs_to(path):
        logging.getLogger("distributed.nanny").warning("a warning from a nanny")
        cluster, _, _ = start_local_cluster(EngineConfig(workers=1))
        try:
            with Client(cluster) as client:
                [worker_pid] = client.run(say_from_worker).values()
                assert {signal.SIGINT, signal.SIGTERM} <= blocked_signals(worker_pid)
        finally:
            cluster.close()
    assert {name: logging.getLogger(name).handlers for name in ENGINE_LOGGERS} == before
    text = path.read_text()
    assert f"{os.getpid()} WARNING distributed.nanny: a warning from a nanny" in text
    assert f"{worker_pid} WARNING distributed.worker: a warning from a worker" in text
    assert "a warning from" not in capfd.readouterr().err
    assert {signal.SIGINT, signal.SIGTERM} & blocked_signals(os.getpid()) == set()


def test_an_unwritable_log_file_is_skipped_silently(tmp_path: Path, capfd):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with engine_logs_to(blocker / LOG_FILE):
        logging.getLogger("distributed").error("nowhere to go")
    assert "Logging error" not in capfd.readouterr().err
