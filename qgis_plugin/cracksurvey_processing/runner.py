"""Run the ``cracksurvey`` executable for the Processing algorithms.

QGIS's Python cannot import cracksurvey's environment (torch, Dask ...), so every algorithm runs
the command line in a subprocess, in cracksurvey's own environment. This module has no QGIS
import: ``feedback`` is anything with QgsProcessingFeedback's ``setProgress``, ``pushInfo``,
``pushWarning``, ``reportError`` and ``isCanceled``.

The executable is, in order: the Processing setting (Settings > Options > Processing >
Providers > cracksurvey), the ``CRACKSURVEY_EXECUTABLE`` environment variable, ``cracksurvey``
on the PATH. Its progress bars (on stderr, asked for with ``CRACKSURVEY_PROGRESS=bars``) become
the algorithm's progress; its per-image lines, warnings and errors go to the log.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
from typing import Any

ENV_VAR = "CRACKSURVEY_EXECUTABLE"
SETTINGS_PATH = "Settings > Options > Processing > Providers > cracksurvey"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"^\s*(?P<desc>[^:|]+?):\s+(?P<pct>\d+)%\|.*?\|\s*(?P<n>\d+)/(?P<total>\d+)")


class CliError(Exception):
    """The executable is missing, or the command failed (its one-line error)."""


def find_executable(configured: str = "") -> str:
    """The cracksurvey executable: the setting, else $CRACKSURVEY_EXECUTABLE, else the PATH.

    Raises
    ------
    CliError
        A configured path that is not an executable, or none found (the message says where to
        set it).
    """
    for source, value in (("the Processing setting", configured),
                          (f"${ENV_VAR}", os.environ.get(ENV_VAR, ""))):
        if value:
            found = shutil.which(value)
            if found:
                return found
            raise CliError(f"cracksurvey executable {value!r} ({source}) is not an executable "
                           f"file; correct it in {SETTINGS_PATH}")
    found = shutil.which("cracksurvey")
    if found:
        return found
    raise CliError(
        "cracksurvey executable not found: install cracksurvey in its own Python environment "
        f"and set the path of its `cracksurvey` executable in {SETTINGS_PATH} (or the "
        f"{ENV_VAR} environment variable)"
    )


def child_environment() -> dict[str, str]:
    """The environment of the subprocess: QGIS's own Python settings removed, bars on."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "QGIS_PREFIX_PATH")}
    env["CRACKSURVEY_PROGRESS"] = "bars"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def output_folders(values: list[str]) -> list[str]:
    """Survey output folders from what the user picked: folders, their cracks.gpkg or run.json,
    or layers of a cracks.gpkg (``path|layername=...``); in order, without repeats."""
    folders: list[str] = []
    for value in values:
        path = str(value).split("|", 1)[0]
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        if folder not in folders:
            folders.append(folder)
    return folders


class ProgressLines:
    """Turns the command's stderr into progress (percent) and log lines.

    ``images`` and ``tiles`` bars (process) combine: images done plus the current image's
    share of tiles; any other bar (``fine-tune``) is its own percentage.
    """

    def __init__(self, feedback: Any) -> None:
        self.feedback = feedback
        self.bars: dict[str, tuple[int, int]] = {}
        self.errors: list[str] = []

    def percent(self) -> float | None:
        images = self.bars.get("images")
        if images is not None:
            n, total = images
            tiles = self.bars.get("tiles")
            share = tiles[0] / tiles[1] if tiles and tiles[1] and tiles[0] < tiles[1] else 0.0
            return 100.0 * min(total, n + share) / max(1, total)
        for n, total in self.bars.values():
            return 100.0 * n / max(1, total)
        return None

    def line(self, text: str) -> None:
        """Handle one line (or tqdm redraw) of stderr."""
        text = _ANSI.sub("", text).rstrip()
        if not text.strip():
            return
        bar = _BAR.match(text)
        if bar is not None:
            desc = bar["desc"].strip()
            if desc == "images" and "images" in self.bars and self.bars["images"][0] != int(bar["n"]):
                self.bars.pop("tiles", None)
            self.bars[desc] = (int(bar["n"]), int(bar["total"]))
            percent = self.percent()
            if percent is not None:
                self.feedback.setProgress(percent)
            return
        if text.startswith("error"):
            self.errors.append(text)
            self.feedback.reportError(text, False)
        elif text.startswith("warning"):
            self.feedback.pushWarning(text)
        else:
            self.feedback.pushInfo(text)


def _pump(stream: Any, out: queue.Queue[tuple[str, str | None]], name: str) -> None:
    buffer = ""
    for chunk in iter(lambda: stream.read1(4096), b""):
        buffer += chunk.decode("utf-8", "replace")
        *complete, buffer = re.split(r"[\r\n]", buffer)
        for piece in complete:
            out.put((name, piece))
    if buffer:
        out.put((name, buffer))
    out.put((name, None))


def run_cli(executable: str, args: list[str], feedback: Any) -> str:
    """Run ``executable args``; stream stderr to ``feedback``; return stdout.

    Exit status 0 and 1 (process: some images failed, the others have their results) return;
    any other raises :class:`CliError` with the command's error line. Cancelling in QGIS
    terminates the command.
    """
    feedback.pushCommandInfo(" ".join([executable, *args]))
    process = subprocess.Popen([executable, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=child_environment())
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    pumps = [threading.Thread(target=_pump, args=(s, lines, n), daemon=True)
             for s, n in ((process.stdout, "stdout"), (process.stderr, "stderr"))]
    for pump in pumps:
        pump.start()
    progress = ProgressLines(feedback)
    stdout: list[str] = []
    open_streams = 2
    while open_streams:
        if feedback.isCanceled() and process.poll() is None:
            process.terminate()
        try:
            name, text = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if text is None:
            open_streams -= 1
        elif name == "stdout":
            stdout.append(text)
        else:
            progress.line(text)
    code = process.wait()
    if feedback.isCanceled():
        raise CliError("cancelled")
    if code not in (0, 1):
        detail = progress.errors[-1] if progress.errors else f"exit status {code}"
        raise CliError(f"cracksurvey {args[0]} failed: {detail}")
    if code == 1:
        feedback.reportError("some images failed (see above); the others have their results",
                             False)
    return "\n".join(stdout)
