"""The run's outputs: cracks.gpkg, summary.csv/json, report.html and run.json (written last).

Outputs in ``out_dir`` (default ``survey_dir/cracksurvey/``)::

    cracks.gpkg                      layers described in cracksurvey.io.vector
    rasters/<image>_distance.tif     distance map (COG), float32, pixels
    rasters/<image>_mask.tif         crack mask (COG), 1 crack, 0 background, 255 nodata
    summary.csv, summary.json        one row per building (= the buildings layer attributes)
    report.html                      self-contained damage report (cracksurvey.report)
    run.json                         version, model, effective config, inputs + hashes,
                                     timings, per-image status; written last
"""

from __future__ import annotations

import platform
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import rasterio
import torch
from pyproj import CRS

from cracksurvey import __version__
from cracksurvey.damage import DamageScale
from cracksurvey.errors import CrackSurveyWarning
from cracksurvey.georef import same_crs
from cracksurvey.io.outputs import describe_input_files, write_run_json, write_summary_tables
from cracksurvey.io.vector import ImageFeatures, LayerSpec, crack_layers, write_geopackage
from cracksurvey.process.images import ImageLayers, image_footprint
from cracksurvey.process.outcome import (
    IMAGE_COLUMNS,
    ImageOutcome,
    RunSummary,
    Timings,
    crs_label,
)
from cracksurvey.report import REPORT_HTML, write_survey_report
from cracksurvey.summary import (
    SUMMARY_COLUMNS,
    building_geometries,
    footprints_in,
    summarize_buildings,
)
from cracksurvey.survey import ImageRecord, Survey
from cracksurvey.vectorize import BRANCH_COLUMNS, CRACK_COLUMNS

__all__ = ["write_outputs"]

#: Columns the process puts in front of the vectorize columns of cracks and branches.
_ID_COLUMNS = {"image": "str", "building_id": "str", "facade_id": "str"}


def _buildings_crs(survey: Survey, crs_groups: Iterable[CRS | None]) -> CRS | None:
    """survey buildings CRS, else survey.crs, else the only projected image CRS, else None."""
    if survey.buildings is not None and survey.buildings.crs is not None:
        return survey.buildings.crs
    if survey.config.survey.crs:
        return CRS.from_user_input(survey.config.survey.crs)
    projected = [c for c in crs_groups if c is not None and c.is_projected]
    return projected[0] if len(projected) == 1 else None


def _layer_specs(
    survey: Survey,
    outcomes: list[ImageOutcome],
    results: list[tuple[ImageRecord, ImageLayers]],
) -> list[Any]:
    """The crack, branch, image and 3-D layers of cracks.gpkg (see cracksurvey.io.vector)."""
    records = {r.name: r for r in survey.images}
    layers = {record.name: image_layers for record, image_layers in results}
    items = []
    for outcome in outcomes:
        record = records[outcome.image]
        georef = record.georef
        image_layers = layers.get(outcome.image)
        footprint = (
            image_footprint(georef, record.width or 0, record.height or 0) if georef else None
        )
        items.append(
            ImageFeatures(
                image_row={**outcome.row(), "geometry": footprint},
                crs=georef.crs if georef else None,
                georeferenced=georef is not None,
                cracks=image_layers.cracks if image_layers else None,
                branches=image_layers.branches if image_layers else None,
                cracks_3d=image_layers.cracks_3d if image_layers else None,
                crs_3d=georef.plane.crs if georef and georef.plane else None,
            )
        )
    return crack_layers(
        items,
        crack_columns={**_ID_COLUMNS, **CRACK_COLUMNS},
        branch_columns={**_ID_COLUMNS, **BRANCH_COLUMNS},
        image_columns=IMAGE_COLUMNS,
        fallback_crs=_buildings_crs(survey, []),
    )


def _attribute_table(frames: list[gpd.GeoDataFrame], columns: Mapping[str, str]) -> pd.DataFrame:
    """Attributes (no geometry) of all images' cracks or branches, typed even when empty."""
    parts = [pd.DataFrame(f.drop(columns="geometry")) for f in frames if len(f)]
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame(
        {c: pd.Series([], dtype=object if d == "str" else d) for c, d in columns.items()}
    )


def _building_layer(
    survey: Survey,
    outcomes: list[ImageOutcome],
    summary: pd.DataFrame,
    crs: CRS | None,
) -> gpd.GeoDataFrame:
    """The summary with each building's footprint (else its map images' union) as geometry."""
    image_footprints: dict[str, list[Any]] = {}
    records = {r.name: r for r in survey.images}
    for outcome in outcomes:
        georef = records[outcome.image].georef
        if (
            outcome.status == "ok"
            and outcome.building_id is not None
            and georef is not None
            and georef.kind == "map"
            and crs is not None
            and georef.crs is not None
            and same_crs(georef.crs, crs)
        ):
            image_footprints.setdefault(outcome.building_id, []).append(
                image_footprint(georef, outcome.width_px or 0, outcome.height_px or 0)
            )
    geometries = building_geometries(
        list(summary["building_id"]), footprints_in(survey.buildings, crs), image_footprints
    )
    return gpd.GeoDataFrame(summary.copy(), geometry=gpd.GeoSeries(geometries), crs=None)


def write_outputs(
    survey: Survey,
    out: Path,
    outcomes: list[ImageOutcome],
    results: list[tuple[ImageRecord, ImageLayers]],
    *,
    model_info: dict[str, Any],
    timings: Timings,
    started: datetime,
    t0: float,
    damage_scale: DamageScale,
    cache_info: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Summarise the buildings and write every output of the run; run.json last."""
    with timings("summary"):
        specs = _layer_specs(survey, outcomes, results)
        cracks_table = _attribute_table(
            [r.cracks for _, r in results], {**_ID_COLUMNS, **CRACK_COLUMNS}
        )
        branches_table = _attribute_table(
            [r.branches for _, r in results], {**_ID_COLUMNS, **BRANCH_COLUMNS}
        )
        coverage = pd.DataFrame(
            [row for _, layers in results for row in layers.coverage],
            columns=["image", "building_id", "area_m2", "cpp_fragments", "cpp_patches"],
        )
        images_table = pd.DataFrame(
            [(o.image, o.building_id, o.status, o.detection_limit_mm) for o in outcomes],
            columns=["image", "building_id", "status", "detection_limit_mm"],
        )
        footprint_ids = (
            list(survey.buildings["building_id"]) if survey.buildings is not None else []
        )
        summary = summarize_buildings(
            cracks_table,
            branches_table,
            coverage,
            images_table,
            building_ids=footprint_ids,
            damage_scale=damage_scale,
        )
        crs = _buildings_crs(survey, [s.crs for s in specs if not s.name.startswith("cracks_3d")])
        specs.insert(
            len(specs) - sum(s.name.startswith("cracks_3d") for s in specs),
            LayerSpec(
                "buildings",
                _building_layer(survey, outcomes, summary, crs),
                "MultiPolygon",
                crs,
                "per-building crack summary",
            ),
        )
    with timings("write"):
        write_geopackage(
            out / "cracks.gpkg", specs, metadata=_gpkg_metadata(survey, model_info, started)
        )
        write_summary_tables(
            out, summary, columns={"building_id": "building id", **SUMMARY_COLUMNS}
        )

    n_cracks = len(cracks_table)
    unassigned = int(cracks_table["building_id"].isna().sum())
    if unassigned:
        warnings.warn(
            f"{unassigned} of {n_cracks} cracks are not assigned to a building (building_id "
            "empty); give their images a building_id in images.csv or add their footprints "
            "to the buildings layer",
            CrackSurveyWarning,
            stacklevel=3,
        )
    layer_info = {
        spec.name: {
            "crs": crs_label(spec.crs),
            "geometry_type": spec.geometry_type,
            "features": len(spec.frame),
        }
        for spec in specs
    }
    failed = sum(o.status == "error" for o in outcomes)
    timings.seconds["total"] = time.perf_counter() - t0
    record = {
        "cracksurvey_version": __version__,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "ok" if not failed else "some images failed",
        "survey_dir": str(survey.root.resolve()),
        "out_dir": str(out.resolve()),
        "model": model_info,
        "damage_scale": {**damage_scale.to_dict(), "source": damage_scale.source},
        "config": survey.config.to_dict(),
        "config_sources": list(survey.config_sources),
        "inputs": {
            "images": [
                {"image": r.path.relative_to(survey.root).as_posix(), "sha256": r.sha256}
                for r in survey.images
            ],
            "files": describe_input_files(
                [
                    survey.survey_yaml_path,
                    survey.images_csv_path,
                    survey.buildings_path,
                    *(Path(s) for s in survey.config_sources if s != "command line"),
                ],
                root=survey.root,
            ),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.seconds.items()},
        "cache": dict(cache_info or {}),
        "n_images": len(outcomes),
        "n_images_failed": failed,
        "n_cracks": n_cracks,
        "n_cracks_unassigned": unassigned,
        "images": [o.row() for o in outcomes],
        "layers": layer_info,
        "outputs": {
            "geopackage": "cracks.gpkg",
            "summary_csv": "summary.csv",
            "summary_json": "summary.json",
            "report": REPORT_HTML,
            "rasters": sorted(
                p
                for o in outcomes
                if o.status == "ok"
                for p in (o.distance_raster, o.mask_raster)
                if p
            ),
        },
        "environment": _environment(),
    }
    with timings("report"):  # reads back the GeoPackage just written: one source of truth
        write_survey_report(out, run_record=record)
    write_run_json(out / "run.json", record)  # last: its presence marks a finished run
    return RunSummary(
        out_dir=out,
        images=tuple(outcomes),
        buildings=summary,
        layers=layer_info,
        n_cracks=n_cracks,
        n_cracks_unassigned=unassigned,
        record=record,
    )


def _gpkg_metadata(
    survey: Survey, model_info: Mapping[str, Any], started: datetime
) -> dict[str, str]:
    """The run as GeoPackage metadata: what made these layers (run.json has the rest)."""
    return {
        "cracksurvey_version": __version__,
        "model_id": str(model_info["model_id"]),
        "model_sha256": str(model_info["sha256"]),
        "model_threshold_px": f"{model_info['threshold_px']:g}",
        "started_utc": started.isoformat(timespec="seconds"),
        "written_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "survey": survey.root.resolve().name,
        "run_record": "run.json",
    }


def _environment() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gdal": rasterio.__gdal_version__,
    }
