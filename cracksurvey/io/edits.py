"""Read a processed survey whose ``cracks.gpkg`` was edited in QGIS; write fine-tuning targets.

The IO layer of :mod:`cracksurvey.train.edits` and :mod:`cracksurvey.train.survey_samples`: it opens run.json, the GeoPackage, the
survey directory (rediscovered with the run's own effective config, so every image gets the
georeferencing it was processed with) and the image pixels, and hands plain values over.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS

from ..errors import CrackSurveyWarning, DatasetError
from .raster import RasterSource, describe_raster
from .survey_files import discover_survey

if TYPE_CHECKING:
    import geopandas as gpd

    from ..survey import ImageRecord

__all__ = ["EditedSurvey", "read_image_window", "read_survey_edits", "write_target_raster"]

GEOPACKAGE = "cracks.gpkg"
RUN_JSON = "run.json"
#: Layers the field loop reads: image footprints, cracks (not cracks_3d), reviewed areas.
_EDIT_LAYERS = re.compile(r"images(_.*)?|cracks(?!_3d)(_.*)?|reviewed(_.*)?")


@dataclass
class EditedSurvey:
    """A processed survey and its edited GeoPackage, as read.

    Attributes
    ----------
    out_dir, survey_dir, gpkg : Path
        The output folder, the survey folder its images are in now, the GeoPackage.
    gpkg_sha256 : str
        Checksum of the edited GeoPackage (the lineage names the exact edits).
    run : dict
        run.json.
    records : dict of str to ImageRecord
        The processed images, by name, with their georeferencing.
    layers : dict of str to GeoDataFrame
        The ``images*``, ``cracks*`` and ``reviewed*`` layers, each with its CRS.
    processed_cracks : dict of str to int
        Cracks each image had when processed.
    """

    out_dir: Path
    survey_dir: Path
    gpkg: Path
    gpkg_sha256: str
    run: dict[str, Any]
    records: dict[str, ImageRecord]
    layers: dict[str, gpd.GeoDataFrame]
    processed_cracks: dict[str, int]


def _read_run(out_dir: Path) -> dict[str, Any]:
    path = out_dir / RUN_JSON
    if not (out_dir / GEOPACKAGE).is_file() or not path.is_file():
        missing = GEOPACKAGE if not (out_dir / GEOPACKAGE).is_file() else RUN_JSON
        raise DatasetError(
            f"{out_dir}: no {missing}; give the output folder of a finished "
            "`cracksurvey process` run (it holds cracks.gpkg and run.json)"
        )
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{path}: not readable as JSON ({exc}); process the survey again"
        ) from exc


def _locate_survey(out_dir: Path, run: Mapping[str, Any], survey_dir: Path | None) -> Path:
    """The survey folder that holds the run's processed images now."""
    images = [row["path"] for row in run.get("images", []) if row.get("status") == "ok"]
    recorded = Path(run.get("survey_dir", ""))
    candidates = [survey_dir] if survey_dir is not None else [recorded, out_dir.resolve().parent]
    for candidate in candidates:
        if candidate.is_dir() and all((candidate / p).is_file() for p in images):
            return candidate
    first = candidates[0]
    missing = next((p for p in images if not (first / p).is_file()), None)
    what = f"{first / missing}" if missing else f"{first}"
    fix = (
        f"check --survey-dir {out_dir}={survey_dir}"
        if survey_dir is not None
        else f"if the survey folder has moved, pass --survey-dir {out_dir}=NEW_SURVEY_DIR"
    )
    raise DatasetError(
        f"{out_dir}: the processed images are not where the run found them: expected {what} "
        f"(run.json survey_dir {recorded}); {fix}"
    )


def read_survey_edits(out_dir: str | Path, *, survey_dir: str | Path | None = None) -> EditedSurvey:
    """Read a processed survey's edited GeoPackage, run.json and its images' georeferencing.

    Parameters
    ----------
    out_dir : str or Path
        Output folder of ``cracksurvey process`` (cracks.gpkg, run.json).
    survey_dir : str or Path, optional
        Where the survey folder is now, if it moved since it was processed. Default: the
        run's ``survey_dir``, else the output folder's parent (the default output folder is
        ``SURVEY/cracksurvey``).

    Raises
    ------
    DatasetError
        Not a processed output folder, images not found (the message names the path expected
        and the ``--survey-dir`` fix), or an image changed since it was processed.
    """
    import pyogrio

    from ..io.survey_files import hash_file

    out = Path(out_dir)
    run = _read_run(out)
    root = _locate_survey(out, run, Path(survey_dir) if survey_dir is not None else None)
    with warnings.catch_warnings():  # reported when the survey was processed
        warnings.simplefilter("ignore", CrackSurveyWarning)
        survey = discover_survey(root, overrides=run.get("config") or {})
    rows = {row["image"]: row for row in run.get("images", []) if row.get("status") == "ok"}
    records = {r.name: r for r in survey.images if r.name in rows}
    for name, row in rows.items():
        record = records.get(name)
        if record is None or record.georef is None:
            raise DatasetError(
                f"{root / row['path']}: processed in {out} but not usable now "
                f"({record.message if record else 'not found'}); restore the image"
            )
        if row.get("sha256") and record.sha256 != row["sha256"]:
            raise DatasetError(
                f"{record.path}: the image changed since it was processed (sha256 "
                f"{record.sha256[:12]}… now, {row['sha256'][:12]}… in run.json); the edits were "
                "drawn on the processed image: restore it, or process the survey again and "
                "redo the edits"
            )
    gpkg = out / GEOPACKAGE
    layers = {
        str(name): pyogrio.read_dataframe(gpkg, layer=name)
        for name, kind in pyogrio.list_layers(gpkg)
        if kind is not None and _EDIT_LAYERS.fullmatch(str(name))
    }
    return EditedSurvey(
        out_dir=out,
        survey_dir=root,
        gpkg=gpkg,
        gpkg_sha256=hash_file(gpkg),
        run=run,
        records=records,
        layers=layers,
        processed_cracks={name: int(row.get("n_cracks") or 0) for name, row in rows.items()},
    )


def read_image_window(
    record: ImageRecord, window: tuple[int, int, int, int]
) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """A window of an image as the model sees it: RGB uint8 and its valid (not nodata) mask.

    The bands are prepared as in processing (:func:`cracksurvey.predict.prepare_bands`;
    non-uint8 imagery scaled from the percentiles of the whole image's overview).
    """
    from ..predict import percentile_scale, prepare_bands, valid_pixels

    row0, row1, col0, col1 = window
    info = describe_raster(record.path)
    with RasterSource(record.path) as source:
        raw = source.read(row0, row1, col0, col1)
        scale = None
        if raw.dtype != np.uint8:
            overview = source.read_overview()
            scale = percentile_scale(
                overview,
                valid=valid_pixels(overview, nodata=info.nodata, alpha_band=info.alpha_band),
            )
    return prepare_bands(raw, nodata=info.nodata, alpha_band=info.alpha_band, scale=scale)


def write_target_raster(
    path: str | Path, classes: NDArray[np.uint8], transform: Affine, crs: CRS | None
) -> Path:
    """Write a sample's target classes as a GeoTIFF over its image (nodata 255)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rio_crs = rasterio.crs.CRS.from_wkt(crs.to_wkt()) if crs is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=classes.shape[1],
            height=classes.shape[0],
            count=1,
            dtype="uint8",
            crs=rio_crs,
            transform=transform,
            nodata=255,
            compress="deflate",
        ) as dst:
            dst.write(classes, 1)
    return path
