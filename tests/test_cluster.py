"""A real Dask cluster on localhost: `dask scheduler` + two `dask worker` processes (nannies).

``process --scheduler ADDRESS`` must give the layers of the in-process run; killing a worker
mid-run must cost nothing (its nanny restarts it, the scheduler reruns its tasks, the model
plugin is installed again); workers advertising a GPU resource take the model work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST, make_survey, oracle_model
from test_resume import TIMING_COLUMNS, assert_same_layers, make_slow_survey

from cracksurvey.model import ModelCard, save_model
from cracksurvey.predict import resolve_device
from cracksurvey.process import process_survey

pytestmark = pytest.mark.filterwarnings("ignore:.*not assigned to a building")

SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]
#: Float attributes: worker torch threads differ from the test process's (ULP-level noise).
RTOL = 1e-6


def start_worker(scheduler_file: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *WORKER,
            "--scheduler-file",
            str(scheduler_file),
            "--nworkers",
            "1",
            "--nthreads",
            "1",
            "--memory-limit",
            "0",
            "--no-dashboard",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=worker_env(),
    )


def worker_env() -> dict[str, str]:
    # workers import cracksurvey and the test-free oracle weights only; same interpreter
    return {**os.environ, "OMP_NUM_THREADS": "1", "DASK_LOGGING__DISTRIBUTED": "error"}


class Cluster:
    """A scheduler and workers in subprocesses, addressed like a remote cluster."""

    def __init__(self, folder: Path) -> None:
        self.scheduler_file = folder / "scheduler.json"
        self.procs = [
            subprocess.Popen(
                [
                    *SCHEDULER,
                    "--scheduler-file",
                    str(self.scheduler_file),
                    "--port",
                    "0",
                    "--host",
                    "127.0.0.1",
                    "--dashboard-address",
                    ":0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=worker_env(),
            )
        ]
        self.wait_for(lambda: self.scheduler_file.exists())
        self.wait_for(lambda: "address" in self.scheduler_file.read_text())
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def add_worker(self, *extra: str) -> None:
        n = len(self.worker_pids())
        self.procs.append(start_worker(self.scheduler_file, *extra))
        self.wait_for(lambda: len(self.worker_pids()) == n + 1)

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)

    def workers(self) -> dict[str, dict]:
        with self.client() as client:
            return client.scheduler_info(n_workers=-1)["workers"]

    def worker_pids(self) -> dict[str, int]:
        with self.client() as client:
            return client.run(os.getpid)

    def evaluate(self, expression: str) -> dict[str, object]:
        """``expression`` evaluated in every worker."""
        with self.client() as client:
            return client.run(eval, expression)

    @staticmethod
    def wait_for(condition, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "cluster did not start"
            time.sleep(0.1)

    def close(self) -> None:
        for proc in reversed(self.procs):  # only the processes this fixture started
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.add_worker()
        cluster.add_worker()
        yield cluster
    finally:
        cluster.close()


#: Evaluated in each worker (the workers cannot import this test module).
MODELS_LOADED = "sorted(sha for sha, _ in __import__('cracksurvey.engine.worker', fromlist=['_']).__dict__['_MODELS'])"


# --------------------------------------------------------------------------------------------
def test_scheduler_run_gives_the_local_layers(tmp_path: Path, weights: Path, cluster):
    root = make_survey(tmp_path / "survey")
    local = process_survey(
        root, out_dir=tmp_path / "local", weights=weights, overrides=FAST, synchronous=True
    )
    remote = process_survey(
        root,
        out_dir=tmp_path / "remote",
        weights=weights,
        overrides=FAST,
        scheduler=cluster.address,
    )
    assert remote.exit_code == 0 and remote.n_cracks == local.n_cracks == 5
    assert_same_layers(local.gpkg_path, remote.gpkg_path, drop=TIMING_COLUMNS, rtol=RTOL)
    # the weights travelled as bytes: each worker that ran tiles built the model once
    assert set(sum(cluster.evaluate(MODELS_LOADED).values(), [])) == {
        remote.record["model"]["sha256"]
    }


def test_a_worker_killed_mid_run_is_replaced_and_the_run_completes(
    tmp_path: Path, weights: Path, cluster
):
    root = make_slow_survey(tmp_path / "survey", n=3)
    local = process_survey(
        root, out_dir=tmp_path / "local", weights=weights, overrides=FAST, synchronous=True
    )
    pids = cluster.worker_pids()
    killed: list[int] = []

    def kill_one_worker(event) -> None:
        if event.kind == "tile" and event.image == "wall1.tif" and event.done == 5 and not killed:
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    remote = process_survey(
        root,
        out_dir=tmp_path / "remote",
        weights=weights,
        overrides=FAST,
        scheduler=cluster.address,
        progress=kill_one_worker,
    )
    assert killed, "no worker was killed"
    assert remote.exit_code == 0 and [i.status for i in remote.images] == ["ok"] * 3
    assert all(i.n_tiles == 25 for i in remote.images)
    assert_same_layers(local.gpkg_path, remote.gpkg_path, drop=TIMING_COLUMNS, rtol=RTOL)
    cluster.wait_for(lambda: len(cluster.worker_pids()) == 2)  # the nanny restarted it
    assert killed[0] not in cluster.worker_pids().values()


def test_gpu_resource_workers_take_the_model_work(tmp_path: Path, cluster):
    card = ModelCard("oracle-for-gpu-workers", "unet16", 1 / 16, True, threshold_px=4.0)
    weights = tmp_path / "gpu.safetensors"  # other bytes: a checksum no worker has seen yet
    save_model(oracle_model(), card, weights)
    cluster.add_worker("--resources", "GPU=1")
    [gpu_worker] = [a for a, w in cluster.workers().items() if w.get("resources", {}).get("GPU")]
    root = make_survey(tmp_path / "survey")
    summary = process_survey(
        root,
        weights=weights,
        overrides={**FAST, "model": {"precision": "fp32", "device": "auto"}},
        scheduler=cluster.address,
    )
    sha = summary.record["model"]["sha256"]
    holders = [addr for addr, shas in cluster.evaluate(MODELS_LOADED).items() if sha in shas]
    assert summary.exit_code == 0 and holders == [gpu_worker]


def test_auto_device_is_decided_where_the_model_runs(monkeypatch):
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
