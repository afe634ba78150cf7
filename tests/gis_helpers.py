"""Helpers shared by the real-client GIS tests (test_qgis, test_cog, test_gis_cases, test_merge).

- :func:`process_oracle`: ``process_survey`` with the oracle stand-in model of test_process
  (a drawn dark line is exactly the crack), synchronous and with small tiles;
- :func:`drawn_line`: where a crack drawn with :func:`conftest.crack_array` must come out;
- :func:`run_qgis`: QGIS itself (Debian's bindings for the system Python), headless, on a
  GeoPackage and rasters, via ``tests/qgis_probe.py``; skips the test, saying why, when
  ``/usr/bin/python3 -c "import qgis.core"`` fails;
- :func:`run_qgis_script`: any such script (``tests/qgis_edit.py`` edits a GeoPackage as an
  engineer does, ``tests/qgis_processing.py`` runs the Processing algorithms).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import shapely
from affine import Affine
from conftest import FAST, save_oracle

from cracksurvey.errors import CrackSurveyWarning
from cracksurvey.process import RunSummary, process_survey

__all__ = ["FAST", "drawn_line", "process_oracle", "run_qgis", "run_qgis_script", "save_oracle"]

SYSTEM_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).with_name("qgis_probe.py")


def process_oracle(
    survey: Path,
    weights: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    expect_warnings: bool = False,
    **kwargs: Any,
) -> RunSummary:
    """Process ``survey`` with the oracle model; CrackSurveyWarnings are allowed if expected."""
    config = {**FAST, **(overrides or {})}
    with warnings.catch_warnings():
        if expect_warnings:
            warnings.simplefilter("ignore", CrackSurveyWarning)
        return process_survey(survey, weights=weights, overrides=config, synchronous=True, **kwargs)


def drawn_line(polyline: Sequence[tuple[int, int]], transform: Affine) -> shapely.LineString:
    """The centreline of a crack drawn through pixel (row, col) vertices, in ``transform``'s
    coordinates (pixel centres)."""
    return shapely.LineString([transform @ (col + 0.5, row + 0.5) for row, col in polyline])


@cache
def _qgis_missing() -> str:
    """Why QGIS cannot be used ('' when it can)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"],
        capture_output=True,
        text=True,
        env=_qgis_env(),
        timeout=120,
    )
    if probe.returncode:
        return (
            "QGIS Python bindings not importable by /usr/bin/python3 "
            f"(`make system-deps` installs python3-qgis): {probe.stderr.strip()[-200:]}"
        )
    return ""


def _qgis_env() -> dict[str, str]:
    runtime = Path(tempfile.gettempdir()) / f"cracksurvey-qgis-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        QT_QPA_PLATFORM="offscreen",
        XDG_RUNTIME_DIR=str(runtime),
        HOME=str(runtime),
        QGIS_CUSTOM_CONFIG_PATH=str(runtime),
    )
    return env


def run_qgis_script(
    script: Path, *args: str | Path, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run a script with QGIS's Python (headless); its last stdout line, parsed as JSON.

    Skips the test, saying why, when QGIS is not there.
    """
    reason = _qgis_missing()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [SYSTEM_PYTHON, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**_qgis_env(), **(env or {})},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_qgis(
    gpkg: Path | None, layers: Sequence[str] = (), rasters: Sequence[Path] = ()
) -> dict[str, Any]:
    """What QGIS sees: ``{"qgis", "vectors": {layer: ...}, "rasters": {path: ...}}``."""
    args = [str(gpkg), *layers] if gpkg is not None else []
    if rasters:
        args += ["--raster", *map(str, rasters)]
    return run_qgis_script(PROBE, *args)
