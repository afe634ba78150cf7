"""Ctrl-C and SIGTERM at random points of a real run (cracksurvey.cli.signals).

Each example starts ``cracksurvey process`` on a local Dask cluster in its own session, sends
SIGINT or SIGTERM, to the command (``kill``) or to its whole process group (a terminal's
Ctrl-C, a batch system's SIGTERM), at a point Hypothesis draws, and checks that:

- the exit status is 130 (SIGINT) or 143 (SIGTERM), stderr one line without a traceback (or 0,
  when the signal came once the outputs were written: the run had finished);
- no process of the run survives it (Dask workers, the resource tracker, ...);
- the lock is released and the rerun of the same command reuses every finished image, their
  cache entries untouched, and writes layers identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAST
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_lock import cluster_command
from test_resume import assert_same_layers, entries, make_slow_survey, run_json

from cracksurvey.io.cache import CACHE_DIR
from cracksurvey.io.lock import LOCK_FILE
from cracksurvey.process import process_survey

pytestmark = pytest.mark.filterwarnings("ignore:.*not assigned to a building")

N_IMAGES = 4


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slow_survey(tmp_path_factory.mktemp("survey"), n=N_IMAGES, size=96)


@pytest.fixture(scope="module")
def reference(survey: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of an uninterrupted run (the same settings as the commands)."""
    overrides = {**FAST, "cpp": {"patch_px": 16, "min_area_px": 3}}
    return process_survey(
        survey,
        out_dir=tmp_path_factory.mktemp("reference") / "out",
        weights=weights,
        overrides=overrides,
        synchronous=True,
    ).out_dir


def predictions(out: Path) -> dict[str, int]:
    root = out / CACHE_DIR / ".predictions"
    if not root.is_dir():
        return {}
    return {
        p.name: (p / "entry.json").stat().st_mtime_ns
        for p in root.iterdir()
        if (p / "entry.json").is_file()
    }


def results(out: Path) -> dict[str, int]:
    return entries(out) if (out / CACHE_DIR).is_dir() else {}


class ProcessTree:
    """Every process seen under a root process, as (pid, start time): pids get reused."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: set[tuple[int, float]] = set()

    def look(self) -> None:
        try:
            children = psutil.Process(self.root).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for child in children:
            try:
                self.seen.add((child.pid, child.create_time()))
            except psutil.NoSuchProcess:
                pass

    def alive(self) -> list[str]:
        living = []
        for pid, started in self.seen:
            try:
                process = psutil.Process(pid)
                if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                    living.append(f"{pid} {' '.join(process.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                pass
        return living


def handles_stop_signals(pid: int) -> bool:
    """Whether process ``pid`` catches SIGINT and SIGTERM (Linux /proc: the command started).

    Before that, during the interpreter's own start, a signal ends it like any program."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(x for x in status.splitlines() if x.startswith("SigCgt:")).split()[1], 16)
    return all(caught & (1 << (s - 1)) for s in (signal.SIGINT, signal.SIGTERM))


def reached(point: int, out: Path, pid: int) -> bool:
    """-1: the command has started; 0: the run holds its lock; k > 0: k images are cached."""
    if point < 0:
        return handles_stop_signals(pid)
    if point == 0:
        return (out / LOCK_FILE).exists()
    return len(results(out)) >= point


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(point=st.integers(-1, N_IMAGES - 1), delay=st.floats(0.0, 2.0), to_group=st.booleans())
def test_a_signal_stops_the_run_in_order_and_the_rerun_resumes(
    signum: int,
    point: int,
    delay: float,
    to_group: bool,
    survey: Path,
    reference: Path,
    weights: Path,
    tmp_path_factory: pytest.TempPathFactory,
):
    out = tmp_path_factory.mktemp("interrupted") / "out"
    command = cluster_command(survey, out, weights)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    tree = ProcessTree(run.pid)
    deadline = time.monotonic() + 300
    while run.poll() is None and not reached(point, out, run.pid):
        assert time.monotonic() < deadline, "the run did not get going"
        tree.look()
        time.sleep(0.02)
    until = time.monotonic() + delay
    while run.poll() is None and time.monotonic() < until:
        tree.look()
        time.sleep(0.02)
    signalled = run.poll() is None
    if signalled:
        if to_group:
            os.killpg(run.pid, signum)
        else:
            run.send_signal(signum)
    while run.poll() is None:
        assert time.monotonic() < deadline + 120, "the run did not stop"
        tree.look()
        time.sleep(0.02)
    stderr = run.stderr.read()
    run.stderr.close()

    finished_first = not signalled or run.returncode == 0
    if finished_first:  # before the signal, or the signal came once its outputs were written
        event(
            "the run finished before the signal"
            if not signalled
            else "the signal came once the outputs were written"
        )
        assert run.returncode == 0, stderr
        assert (out / "run.json").exists() and "Traceback" not in stderr
    else:
        assert run.returncode == 128 + signum, stderr
        assert "Traceback" not in stderr and "distributed" not in stderr, stderr
        [line] = [x for x in stderr.splitlines() if x.strip()]
        assert line.startswith(f"stopped by {signal.Signals(signum).name}: "), line
        assert "run the same command again" in line, line
    gone_by = time.monotonic() + 15
    while tree.alive() and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert tree.alive() == [], tree.alive()
    assert not (out / LOCK_FILE).exists()
    if finished_first:
        return

    finished, predicted = results(out), predictions(out)
    told = re.search(r"(\d+) of \d+ images finished", line)
    event(
        f"stopped with {'some' if told else 'no'} images finished, signal to "
        f"{'the group' if to_group else 'the command'}"
    )
    if told is not None:  # an image committed just as the signal came may not be counted
        assert int(told.group(1)) <= len(finished) <= int(told.group(1)) + 1, line
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stderr.strip() == ""
    cache = run_json(out)["cache"]
    assert len(cache["reused"]) == len(finished)
    assert len(cache["computed"]) == N_IMAGES - len(finished)
    assert {k: v for k, v in results(out).items() if k in finished} == finished  # untouched
    assert {k: v for k, v in predictions(out).items() if k in predicted} == predicted
    assert_same_layers(out / "cracks.gpkg", reference / "cracks.gpkg", drop=("seconds",))
    assert (out / "summary.csv").read_text() == (reference / "summary.csv").read_text()


# --------------------------------------------------------------------------------------------
# The stop handler itself
# --------------------------------------------------------------------------------------------
def test_an_interrupt_lost_in_a_finalizer_is_raised_at_the_next_step(capsys):
    import weakref

    from cracksurvey.cli.signals import stop_on_signals

    def lost(_: object) -> None:
        raise KeyboardInterrupt

    class Thing:
        pass

    with stop_on_signals() as stop:
        stop.raise_if_stopping()  # nothing yet
        stop.received.append(signal.SIGTERM)  # as the handler does, then raises...
        thing = Thing()
        ref = weakref.ref(thing, lost)  # ...inside a weakref callback: Python drops it
        del thing
        assert ref() is None
        with pytest.raises(KeyboardInterrupt):
            stop.raise_if_stopping()
        stop.done()
        stop.raise_if_stopping()  # the work is done: nothing to stop
    assert capsys.readouterr().err == ""  # no "Exception ignored in ..." report


HANGING_SHUTDOWN = """
import subprocess, sys, time
from cracksurvey.cli.signals import stop_on_signals
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
with stop_on_signals() as stop:
    try:
        print(child.pid, flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("stopping", flush=True)
        time.sleep(120)  # a shutdown that hangs
"""


def test_a_second_signal_after_the_grace_ends_a_hanging_shutdown():
    from cracksurvey.cli.signals import FORCE_AFTER_S

    run = subprocess.Popen(
        [sys.executable, "-c", HANGING_SHUTDOWN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = int(run.stdout.readline())
    run.send_signal(signal.SIGTERM)
    assert run.stdout.readline().strip() == "stopping"
    run.send_signal(signal.SIGINT)  # at once: the same request, the shutdown goes on
    time.sleep(0.5)
    assert run.poll() is None
    time.sleep(FORCE_AFTER_S)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130
    assert "stopped at once by a second SIGINT" in run.stderr.read()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the child process survived"
        time.sleep(0.05)
