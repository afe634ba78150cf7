"""One run per output folder (cracksurvey.io.lock): the lock file, refusals, stale takeovers.

The in-process tests pin the rules; the last ones run real ``cracksurvey process`` commands in
subprocesses: two runs on one ``--out``, and a run killed with SIGKILL whose lock is taken over.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil
import pytest
from conftest import FAST, make_survey
from test_resume import assert_same_layers, cli_command, entries, make_slow_survey, run_json

from cracksurvey.errors import CrackSurveyWarning, OutputInUseError, OutputWriteError
from cracksurvey.io import lock as lock_module
from cracksurvey.io.cache import CACHE_DIR
from cracksurvey.io.lock import LOCK_FILE, LockHolder, RunLock, check_run_lock, holder_ended
from cracksurvey.process import process_survey

pytestmark = pytest.mark.filterwarnings("ignore:.*not assigned to a building")


def read_lock(out: Path) -> dict:
    return json.loads((out / LOCK_FILE).read_text())


def write_lock(out: Path, **fields) -> Path:
    """A lock file as another run would have left it."""
    out.mkdir(parents=True, exist_ok=True)
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_utc": "2025-03-01T10:02:03+00:00",
        "command": "cracksurvey process s",
        "token": "0123456789abcdef",
        "process_started": psutil.Process().create_time(),
        **fields,
    }
    path = out / LOCK_FILE
    path.write_text(json.dumps(holder))
    return path


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------------------------
# The lock file
# --------------------------------------------------------------------------------------------
def test_lock_names_host_pid_start_and_command_and_goes_on_release(tmp_path: Path):
    out = tmp_path / "out"
    with RunLock.acquire(out) as lock:
        holder = read_lock(out)
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert holder["started_utc"].endswith("+00:00") and holder["command"]
        assert lock.holder == LockHolder.from_json((out / LOCK_FILE).read_text())
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # no helper file left
    assert not out.exists()  # created by the lock, empty again: removed
    out.mkdir()
    with RunLock.acquire(out):
        pass
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_live_holder_refuses_in_one_line_naming_it(tmp_path: Path):
    out = tmp_path / "out"
    with RunLock.acquire(out):
        for attempt in (
            lambda: RunLock.acquire(out),
            lambda: check_run_lock(out),
            lambda: RunLock.acquire(out, break_lock=True),
        ):
            with pytest.raises(OutputInUseError) as refused:
                attempt()
            message = str(refused.value)
            assert "\n" not in message
            assert f"pid {os.getpid()} on host {socket.gethostname()}, started " in message
            assert "UTC" in message and "wait for it to finish" in message
        assert "--break-lock removes only locks of runs that have ended" in message
        assert isinstance(refused.value, BlockingIOError)


def test_a_dead_holder_on_this_host_is_taken_over_with_a_warning(tmp_path: Path):
    out = tmp_path / "out"
    write_lock(out, pid=dead_pid())
    check_run_lock(out)  # no refusal
    with pytest.warns(CrackSurveyWarning, match="took over the lock of a run that has ended"):
        lock = RunLock.acquire(out)
    assert read_lock(out)["token"] == lock.holder.token
    lock.release()


def test_a_reused_pid_or_a_zombie_is_not_the_holder(tmp_path: Path):
    me = psutil.Process()
    reused = LockHolder(
        socket.gethostname(),
        os.getpid(),
        "2025-03-01T10:02:03+00:00",
        "c",
        "t",
        process_started=me.create_time() - 3600,
    )
    assert holder_ended(reused) is True
    assert (
        holder_ended(
            LockHolder(
                socket.gethostname(), os.getpid(), "", "c", "t", process_started=me.create_time()
            )
        )
        is False
    )
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert holder_ended(LockHolder(socket.gethostname(), zombie.pid, "", "c", "t")) is True
    zombie.wait()


def test_another_host_cannot_be_checked_refuse_unless_break_lock(tmp_path: Path):
    out = tmp_path / "out"
    path = write_lock(out, host="node7", pid=4242)
    with pytest.raises(OutputInUseError) as refused:
        RunLock.acquire(out)
    message = str(refused.value)
    assert "run on another host (pid 4242 on host node7, started 2025-03-01 10:02:03 UTC" in message
    assert "--break-lock" in message and str(path) in message
    with pytest.warns(CrackSurveyWarning, match=r"removed the lock of pid 4242 on host node7"):
        RunLock.acquire(out, break_lock=True).release()


def test_another_pid_namespace_is_another_host(tmp_path: Path):
    holder = LockHolder(socket.gethostname(), dead_pid(), "", "c", "t", pid_namespace="pid:[1]")
    assert holder_ended(holder) is None


def test_an_earlier_run_of_the_same_slurm_job_is_taken_over(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "81234")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    out = tmp_path / "out"
    write_lock(out, host="node7", slurm_job="81234", slurm_restart=0)
    with pytest.warns(CrackSurveyWarning, match="took over"):
        lock = RunLock.acquire(out)
    assert read_lock(out)["slurm_job"] == "81234" and read_lock(out)["slurm_restart"] == 1
    lock.release()
    write_lock(out, host="node7", slurm_job="81234", slurm_restart=1)  # a step running now
    with pytest.raises(OutputInUseError):
        RunLock.acquire(out)


def test_an_unreadable_lock_refuses_unless_break_lock(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text("{not json")
    with pytest.raises(OutputInUseError, match="is not a readable lock"):
        RunLock.acquire(out)
    with pytest.warns(CrackSurveyWarning, match="removed the lock of an unreadable lock file"):
        RunLock.acquire(out, break_lock=True).release()


def test_without_hard_links_the_lock_is_created_with_o_excl(tmp_path: Path, monkeypatch):
    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(lock_module.os, "link", no_link)
    out = tmp_path / "out"
    with RunLock.acquire(out):
        assert read_lock(out)["pid"] == os.getpid()
        with pytest.raises(OutputInUseError):
            RunLock.acquire(out)
    assert not (out / LOCK_FILE).exists()


def test_release_leaves_a_lock_that_another_run_took(tmp_path: Path):
    out = tmp_path / "out"
    lock = RunLock.acquire(out)
    write_lock(out, host="node7")  # e.g. --break-lock from another host
    lock.release()
    assert read_lock(out)["host"] == "node7"


def test_unwritable_folder_is_an_output_error(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match="the output folder cannot be written"):
        RunLock.acquire(blocker / "out")


TAKEOVER = """
import sys, time
sys.path.insert(0, {tests!r})
from cracksurvey.errors import OutputInUseError
from cracksurvey.io.lock import RunLock
while time.time() < {start}:
    time.sleep(0.001)
try:
    lock = RunLock.acquire({out!r})
except OutputInUseError:
    print("refused")
else:
    print("won")
    time.sleep(3)
    lock.release()
"""


def test_runs_taking_over_one_stale_lock_at_once_get_one_winner(tmp_path: Path):
    out = tmp_path / "out"
    write_lock(out, pid=dead_pid())
    script = TAKEOVER.format(tests=str(Path(__file__).parent), start=time.time() + 3, out=str(out))
    runs = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", script], stdout=subprocess.PIPE, text=True
        )
        for _ in range(5)
    ]
    said = sorted(run.communicate(timeout=120)[0].strip() for run in runs)
    assert said == ["refused"] * 4 + ["won"]


# --------------------------------------------------------------------------------------------
# process_survey holds the lock
# --------------------------------------------------------------------------------------------
def test_process_survey_refuses_a_folder_in_use_even_with_overwrite(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    out = tmp_path / "out"
    with RunLock.acquire(out):
        for overwrite in (False, True):
            with pytest.raises(OutputInUseError):
                process_survey(
                    root,
                    out_dir=out,
                    weights=weights,
                    overrides=FAST,
                    synchronous=True,
                    overwrite=overwrite,
                )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing touched


def test_process_survey_releases_the_lock_on_success_and_on_error(tmp_path: Path, weights: Path):
    root = make_survey(tmp_path / "survey")
    out = tmp_path / "out"
    process_survey(root, out_dir=out, weights=weights, overrides=FAST, synchronous=True)
    assert not (out / LOCK_FILE).exists()
    with pytest.raises(ValueError):  # a bad config: refused before any image
        process_survey(
            root,
            out_dir=out,
            weights=weights,
            overwrite=True,
            overrides={**FAST, "tiling": {"tile_px": -1}},
            synchronous=True,
        )
    assert not (out / LOCK_FILE).exists()


# --------------------------------------------------------------------------------------------
# Real commands
# --------------------------------------------------------------------------------------------
def cluster_command(root: Path, out: Path, weights: Path) -> list[str]:
    """:func:`test_resume.cli_command` on a local Dask cluster of one worker."""
    command = cli_command(root, out, weights)
    at = command.index("--scheduler")
    return [*command[:at], "--workers", "1", "--set", "engine.torch_threads=1", *command[at + 2 :]]


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.02)


def test_a_second_run_on_the_same_out_refuses_at_once_and_the_first_finishes(
    tmp_path: Path, weights: Path
):
    root = make_slow_survey(tmp_path / "survey", n=4, size=96)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        cluster_command(root, out, weights),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (out / LOCK_FILE).exists(), first)
    started = read_lock(out)["started_utc"]
    seconds = []
    for _ in range(3):  # the fastest of three: the machine is shared
        t0 = time.monotonic()
        second = subprocess.run(
            [*cluster_command(root, out, weights), "--overwrite"],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds.append(time.monotonic() - t0)
        assert second.returncode == 2, second.stderr
        [line] = [x for x in second.stderr.splitlines() if x.strip()]
        assert line.startswith(
            f"error: {out} is in use by another run (pid {first.pid} on "
            f"host {socket.gethostname()}, started "
        )
        assert started.replace("T", " ")[:19] in line and "wait for it to finish" in line
        assert first.poll() is None, "the first run had ended: no refusal to test"
    assert min(seconds) < 1.0, seconds

    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert err.strip() == ""  # untouched: no error, no warning
    assert not (out / LOCK_FILE).exists()
    cache = run_json(out)["cache"]
    assert len(cache["computed"]) == 4 and cache["reused"] == []
    reference = process_survey(
        root,
        out_dir=tmp_path / "reference",
        weights=weights,
        overrides={**FAST, "cpp": {"patch_px": 16, "min_area_px": 3}},
        synchronous=True,
    )
    assert_same_layers(out / "cracks.gpkg", reference.gpkg_path, drop=("seconds",))


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path: Path, weights: Path):
    root = make_slow_survey(tmp_path / "survey", n=4, size=96)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = cli_command(root, out, weights)
    killed = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: (out / CACHE_DIR).is_dir() and len(entries(out)) >= 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert read_lock(out)["pid"] == killed.pid

    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    lines = [x for x in rerun.stderr.splitlines() if x.strip()]
    takeover = f"warning: {out}: took over the lock of a run that has ended "
    [line] = [x for x in lines if x.startswith(takeover)]  # one line, once
    assert line.startswith(
        f"{takeover}(pid {killed.pid} on host {socket.gethostname()}, started "
    ), rerun.stderr
    # Once in CI (not reproduced in 24 kills here) the rerun printed one more line; what the
    # kill leaves may warn, but nothing may fail. Shown in pytest's warnings summary.
    others = [x for x in lines if x != line]
    assert not any(x.lower().startswith("error") for x in others), rerun.stderr
    if others:
        warnings.warn(f"the rerun after a kill also printed: {others}", stacklevel=1)
    assert not (out / LOCK_FILE).exists()
    assert len(run_json(out)["cache"]["reused"]) >= 1
