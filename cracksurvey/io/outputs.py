"""Run outputs besides the GeoPackage: the output folder, ``run.json``, ``summary.csv/json``.

Every file is written atomically (a temporary file in the same folder, then one rename), so an
interrupted run never leaves a half-written output that looks complete. ``run.json`` is written
last: its presence marks a folder holding a finished run, which a new run refuses to overwrite
without ``overwrite=True`` (``--overwrite``).

The mask COGs written by the engine are read back here in strips of whole patch rows
(:func:`read_mask_strips`) for the CPP statistic, so memory stays flat.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window

from cracksurvey.errors import OutputExistsError
from cracksurvey.io.raster import GDAL_CACHEMAX_BYTES

__all__ = [
    "OUTPUT_FILES",
    "RASTER_DIR",
    "REPORT_HTML",
    "RUN_JSON",
    "SUMMARY_CSV",
    "SUMMARY_JSON",
    "atomic_write_text",
    "check_output_dir",
    "clear_previous_outputs",
    "describe_input_files",
    "json_ready",
    "read_mask_strips",
    "write_run_json",
    "write_summary_tables",
]

logger = logging.getLogger(__name__)

RUN_JSON = "run.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
GPKG = "cracks.gpkg"
REPORT_HTML = "report.html"
RASTER_DIR = "rasters"
#: Files of a run in the output folder (rasters/ aside).
OUTPUT_FILES = (GPKG, SUMMARY_CSV, SUMMARY_JSON, REPORT_HTML, RUN_JSON)
_RASTER_SUFFIXES = ("_distance.tif", "_mask.tif")


def check_output_dir(out_dir: str | Path, *, overwrite: bool) -> Path:
    """Refuse an output folder that holds a previous run, unless ``overwrite``.

    Raises
    ------
    OutputExistsError
        ``out_dir/run.json`` exists and ``overwrite`` is False, or ``out_dir`` is a file.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    if (out / RUN_JSON).exists() and not overwrite:
        raise OutputExistsError(
            f"{out} already holds a previous run ({RUN_JSON}); pass --overwrite to replace it "
            "or choose another --out"
        )
    return out


def clear_previous_outputs(out_dir: str | Path) -> list[Path]:
    """Delete the outputs of a previous run in ``out_dir`` (only files cracksurvey writes).

    ``run.json`` goes first, so an interrupted rerun is never mistaken for a finished run.
    Other files in the folder are left alone.

    Returns
    -------
    list of Path
        The files deleted.
    """
    out = Path(out_dir)
    removed: list[Path] = []
    for name in (RUN_JSON, *OUTPUT_FILES):
        path = out / name
        if path.is_file():
            path.unlink()
            removed.append(path)
    rasters = out / RASTER_DIR
    if rasters.is_dir():
        for path in sorted(rasters.iterdir()):
            if path.is_file() and path.name.endswith(_RASTER_SUFFIXES):
                path.unlink()
                removed.append(path)
    if removed:
        logger.info("%s: removed %d files of the previous run", out, len(removed))
    return removed


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text (UTF-8) to a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def describe_input_files(
    paths: Sequence[str | Path | None], *, root: str | Path
) -> list[dict[str, str]]:
    """``[{"path", "sha256"}]`` of the existing files among ``paths`` (for run.json).

    Paths inside ``root`` are written relative to it; duplicates are listed once.
    """
    from cracksurvey.io.survey_files import hash_file

    root = Path(root).resolve()
    seen: set[Path] = set()
    files = []
    for path in paths:
        if path is None or not Path(path).is_file():
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        shown = (
            resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(path)
        )
        files.append({"path": shown, "sha256": hash_file(resolved)})
    return files


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy scalars as Python numbers, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def write_run_json(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``run.json`` (NaN as null, keys in the given order)."""
    return atomic_write_text(path, json.dumps(json_ready(record), indent=2) + "\n")


def write_summary_tables(
    out_dir: str | Path, summary: pd.DataFrame, *, columns: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Write the building summary as ``summary.csv`` and ``summary.json``.

    Parameters
    ----------
    out_dir : Path
    summary : pandas.DataFrame
        One row per building (the same frame as the ``buildings`` layer attributes).
    columns : mapping of str to str, optional
        Column descriptions (with units) for ``summary.json``.

    Returns
    -------
    (csv_path, json_path)
        CSV: UTF-8, comma separated, ``.`` decimals, empty cells for undefined values, full
        float precision. JSON: ``{"columns": {name: description}, "buildings": [row, ...]}``
        with null for undefined values.
    """
    out = Path(out_dir)
    csv_text = summary.to_csv(index=False, lineterminator="\n", float_format="%.10g")
    csv_path = atomic_write_text(out / SUMMARY_CSV, csv_text)
    rows = [
        {column: json_ready(value) for column, value in zip(summary.columns, row)}
        for row in summary.itertuples(index=False, name=None)
    ]
    document = {"columns": dict(columns or {}), "buildings": rows}
    json_path = atomic_write_text(out / SUMMARY_JSON, json.dumps(document, indent=2) + "\n")
    return csv_path, json_path


def read_mask_strips(path: str | Path, *, strip_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Read a one-band raster in full-width strips of ``strip_rows`` rows.

    Yields
    ------
    row0 : int
        First row of the strip.
    strip : ndarray of shape (rows, width)
        The strip (the last one may be shorter).
    """
    if strip_rows < 1:
        raise ValueError(f"strip_rows={strip_rows} must be >= 1")
    # GDAL's default cache (5 % of RAM) would keep every block read: the whole mask
    # (a 40000² mask grew this process by 1.3 GB); one row of blocks is all a strip needs
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES), rasterio.open(path) as ds:
        for row0 in range(0, ds.height, strip_rows):
            rows = min(strip_rows, ds.height - row0)
            yield row0, ds.read(1, window=Window(0, row0, ds.width, rows))


def read_band_window(path: str | Path) -> Callable[[int, int, int, int], np.ndarray]:
    """A reader of windows ``(row0, row1, col0, col1)`` of band 1 of a raster (float32, NaN
    for nodata). Each call opens the file (windows are few and large; no handle is kept).

    Nodata is the band's nodata value (the distance maps' is NaN already); a mask band or alpha
    is not read (a third of the time of a masked read of a distance map).
    """

    def read(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES), rasterio.open(path) as ds:
            window = Window(col0, row0, col1 - col0, row1 - row0)
            band = ds.read(1, window=window, out_dtype="float32")
            nodata = ds.nodata
        if nodata is not None and not np.isnan(nodata):
            band[band == np.float32(nodata)] = np.nan
        return band

    return read
