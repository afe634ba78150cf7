"""Reading a survey output folder back for the report (the IO edge of :mod:`cracksurvey.report`).

The report reads what ``cracksurvey process`` wrote, never its in-memory state, so the numbers
it shows are those of the GeoPackage and ``summary.csv`` (one source of truth):

- ``cracks.gpkg``: the ``buildings`` layer (the summary with footprints), every ``cracks*`` and
  ``crack_branches*`` layer (one per CRS group; ``cracks_3d*`` are skipped) and every
  ``images*`` layer (image footprints, from which each image's pixel-to-CRS transform is
  recovered for the crack overlays);
- ``run.json``: provenance (model, threshold, version, dates), the survey folder and the
  images' paths;
- the input images, for thumbnails (decimated reads, :func:`read_thumbnail`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cracksurvey.errors import ConfigError, InputRasterError
from cracksurvey.io.outputs import GPKG, RUN_JSON

__all__ = ["SurveyOutput", "load_survey_output", "read_thumbnail", "survey_names"]

logger = logging.getLogger(__name__)

#: Crack and branch columns the report uses.
_CRACK_COLUMNS = ["image", "building_id", "length_m", "width_max_mm", "orientation_deg"]
_BRANCH_COLUMNS = ["image", "building_id", "length_m", "width_mean_mm"]
_IMAGE_COLUMNS = [
    "image",
    "path",
    "status",
    "building_id",
    "facade_id",
    "georef_kind",
    "width_px",
    "height_px",
    "n_cracks",
    "semantics_raster",  # absent in outputs of earlier versions: read as missing
]
#: Largest window (pixels) read at full resolution for a cropped thumbnail; larger crops are
#: cut from a decimated read of the whole image.
_MAX_WINDOW_PX = 4096 * 4096


@dataclass
class SurveyOutput:
    """One survey's outputs, as the report needs them.

    Attributes
    ----------
    out_dir : Path
    name : str
        The survey folder name (``run.json`` ``survey_dir``), else the output folder name.
    district : str
        ``survey.district`` of the effective config, else ``name``.
    run : dict
        The content of run.json.
    buildings : geopandas.GeoDataFrame
        The ``buildings`` layer: summary columns and footprints (may lack a CRS).
    cracks : pandas.DataFrame
        Every 2-D crack: ``image``, ``building_id``, ``length_m``, ``width_max_mm``,
        ``orientation_deg`` and ``geometry`` (shapely, in the CRS of its image).
    branches : pandas.DataFrame
        Every branch: ``image``, ``building_id``, ``length_m``, ``width_mean_mm``.
    images : pandas.DataFrame
        One row per image (the ``images`` layers), with ``geometry`` (its footprint in its CRS
        or None) and ``crs`` (pyproj CRS or None).
    """

    out_dir: Path
    name: str
    district: str
    run: dict[str, Any]
    buildings: Any
    cracks: pd.DataFrame
    branches: pd.DataFrame
    images: pd.DataFrame = field(repr=False)

    @property
    def survey_dir(self) -> Path | None:
        text = self.run.get("survey_dir")
        return Path(text) if text else None


def survey_names(run: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    """``(name, district)`` of a survey from its run.json (see :class:`SurveyOutput`)."""
    survey_dir = run.get("survey_dir")
    name = Path(survey_dir).name if survey_dir else Path(out_dir).resolve().name
    district = ((run.get("config") or {}).get("survey") or {}).get("district") or name
    return name, str(district)


@contextmanager
def _no_sidecar_files() -> Iterator[None]:
    """GDAL writes a ``.aux.xml`` beside a GeoPackage with dataset metadata when it closes it
    after reading; the report only reads, so it must leave the output folder as it was."""
    import pyogrio

    previous = pyogrio.get_gdal_config_option("GDAL_PAM_ENABLED")
    pyogrio.set_gdal_config_options({"GDAL_PAM_ENABLED": "NO"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"GDAL_PAM_ENABLED": previous})


def _layers(gpkg: Path) -> list[str]:
    import pyogrio

    return [str(name) for name, _ in pyogrio.list_layers(gpkg)]


def _of_kind(names: list[str], base: str) -> list[str]:
    """Layers named ``base`` or ``base_<crs group>`` (``cracks_3d*`` is not a crack group)."""
    return [
        n
        for n in names
        if (n == base or n.startswith(base + "_")) and not n.startswith("cracks_3d")
    ]


def _read_layers(
    gpkg: Path, names: list[str], columns: list[str], *, geometry: bool
) -> pd.DataFrame:
    import pyogrio

    parts = []
    for name in names:
        present = set(pyogrio.read_info(gpkg, layer=name)["fields"])
        frame = pyogrio.read_dataframe(
            gpkg, layer=name, columns=[c for c in columns if c in present], read_geometry=geometry
        )
        table = pd.DataFrame(
            {
                c: (
                    pd.Series([None] * len(frame), dtype=object, index=frame.index)
                    if c not in present
                    else frame[c].astype(object)
                    if frame[c].dtype == object or str(frame[c].dtype) == "str"
                    else frame[c]
                )
                for c in columns
            }
        )
        if geometry:
            table["geometry"] = np.asarray(frame.geometry.values, dtype=object)
            table["crs"] = [frame.crs] * len(frame)
        parts.append(table)
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns=columns + (["geometry", "crs"] if geometry else []))


def load_survey_output(
    out_dir: str | Path, *, run_record: dict[str, Any] | None = None
) -> SurveyOutput:
    """Read the outputs of one ``cracksurvey process`` run.

    Parameters
    ----------
    out_dir : str or Path
        The output folder (with ``cracks.gpkg`` and, unless ``run_record`` is given, run.json).
    run_record : dict, optional
        The run.json content, when the caller holds it (process writes run.json last).

    Raises
    ------
    ConfigError
        The folder holds no finished run (no cracks.gpkg or run.json).
    """
    import pyogrio

    out = Path(out_dir)
    gpkg = out / GPKG
    if run_record is None:
        if not (out / RUN_JSON).is_file():
            raise ConfigError(
                f"{out}: no {RUN_JSON}; not the output folder of a finished cracksurvey process run"
            )
        run_record = json.loads((out / RUN_JSON).read_text(encoding="utf-8"))
    if not gpkg.is_file():
        raise ConfigError(f"{out}: no {GPKG}; run cracksurvey process first")
    with _no_sidecar_files():
        names = _layers(gpkg)
        buildings = pyogrio.read_dataframe(gpkg, layer="buildings")
        cracks = _read_layers(gpkg, _of_kind(names, "cracks"), _CRACK_COLUMNS, geometry=True)
        branches = _read_layers(
            gpkg, _of_kind(names, "crack_branches"), _BRANCH_COLUMNS, geometry=False
        )
        images = _read_layers(gpkg, _of_kind(names, "images"), _IMAGE_COLUMNS, geometry=True)
    buildings["building_id"] = buildings["building_id"].astype(object)
    name, district = survey_names(run_record, out)
    return SurveyOutput(
        out_dir=out,
        name=name,
        district=district,
        run=run_record,
        buildings=buildings,
        cracks=cracks,
        branches=branches,
        images=images,
    )


def _to_rgb8(array: np.ndarray) -> np.ndarray:
    """``(bands, rows, cols)`` of any dtype to ``(rows, cols, 3)`` uint8 for display.

    One or two bands (grey, grey + alpha) are shown grey; otherwise the first three bands.
    Non-8-bit data is stretched between its 1st and 99th percentiles.
    """
    bands = array[:3] if array.shape[0] >= 3 else np.repeat(array[:1], 3, axis=0)
    if bands.dtype != np.uint8:
        data = bands.astype(np.float64)
        finite = data[np.isfinite(data)]
        low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
        scale = 255.0 / (high - low) if high > low else 1.0
        bands = np.clip((np.nan_to_num(data, nan=low) - low) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(bands, 0, -1))


def read_thumbnail(
    path: str | Path,
    window: tuple[int, int, int, int] | None = None,
    *,
    max_side_px: int = 640,
) -> tuple[np.ndarray, float, float] | None:
    """A small RGB view of an input image (or of a window of it), for display.

    Parameters
    ----------
    path : str or Path
        The input image.
    window : (row0, row1, col0, col1), optional
        In-image pixel window; default the whole image.
    max_side_px : int
        Longest side of the thumbnail.

    Returns
    -------
    (rgb, scale_rows, scale_cols) or None
        ``rgb`` of shape (rows, cols, 3), uint8; the scales are thumbnail pixels per image
        pixel. None when the image cannot be read (moved or corrupt; logged).
    """
    from cracksurvey.io.raster import describe_raster, open_raster

    try:
        info = describe_raster(path)
        height, width = info.height, info.width
        row0, row1, col0, col1 = window or (0, height, 0, width)
        with open_raster(path) as src:
            if window is None or (row1 - row0) * (col1 - col0) > _MAX_WINDOW_PX:
                ratio = max(height / max(row1 - row0, 1), width / max(col1 - col0, 1))
                whole = src.read_overview(max_side_px=int(max_side_px * ratio))
                sr, sc = whole.shape[1] / height, whole.shape[2] / width
                array = whole[
                    :, int(row0 * sr) : math.ceil(row1 * sr), int(col0 * sc) : math.ceil(col1 * sc)
                ]
            else:
                step = max(1, math.ceil(max(row1 - row0, col1 - col0) / max_side_px))
                array = src.read(row0, row1, col0, col1)[:, ::step, ::step]
    except (InputRasterError, OSError) as exc:
        logger.warning("%s: no thumbnail (%s)", path, exc)
        return None
    return _to_rgb8(array), array.shape[1] / (row1 - row0), array.shape[2] / (col1 - col0)
