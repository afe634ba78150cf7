"""City-wide merge: the outputs of several surveys in one GeoPackage.

:func:`merge_outputs` reads the ``cracks.gpkg`` and ``run.json`` of several output folders of
:func:`cracksurvey.process.process_survey` and writes one GeoPackage:

``cracks_3d``
    Every survey's 3-D façade cracks (façades placed in the world with a plane in images.csv),
    reprojected into one projected CRS, with a ``survey`` column: one layer holding every
    placed façade of the city, whatever local façade frames the surveys used.
``buildings``
    Every survey's building summaries, with a ``survey`` column, reprojected into the same
    CRS (buildings of a survey without a CRS keep their attributes, without geometry).
``<survey>_<layer>``
    The 2-D layers of each survey (``cracks``, ``crack_branches``, ``images``, per CRS group)
    copied unchanged, in their own CRS (façade frames, map CRSs, pixel units).

Every layer carries its QGIS default style (:mod:`cracksurvey.io.styles`): the legend classes
are fixed, so a colour means the same crack width in every survey. The GeoPackage metadata
lists the merged surveys with their models.

The 3-D reprojection transforms X, Y (and leaves Z, an elevation, as it is between projected
CRSs of the same vertical reference): a façade plane stays a vertical plane, to the accuracy
of the CRS transformation (well below a millimetre over a façade between UTM zones of one
datum; a datum change adds the transformation's stated accuracy).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from cracksurvey import __version__
from cracksurvey.errors import ConfigError
from cracksurvey.georef import same_crs
from cracksurvey.io.vector import LayerSpec, read_geopackage, write_geopackage

__all__ = ["SURVEY_COLUMN", "merge_outputs", "survey_labels"]

logger = logging.getLogger(__name__)

#: Column naming the survey of each merged feature.
SURVEY_COLUMN = "survey"

_GPKG, _RUN_JSON = "cracks.gpkg", "run.json"


def survey_labels(names: Sequence[str]) -> list[str]:
    """Unique layer-name-safe labels: lower case, ``[a-z0-9_]``, ``_2``... on repeats.

    >>> survey_labels(["Amatrice Nord", "amatrice-nord", "2016"])
    ['amatrice_nord', 'amatrice_nord_2', 's2016']
    """
    labels: list[str] = []
    for name in names:
        base = re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "survey"
        if base[0].isdigit():
            base = "s" + base
        label, n = base, 2
        while label in labels:
            label, n = f"{base}_{n}", n + 1
        labels.append(label)
    return labels


def _read_run(out_dir: Path) -> dict:
    """run.json of an output folder (the proof that it holds a finished run)."""
    run_json, gpkg = out_dir / _RUN_JSON, out_dir / _GPKG
    if not run_json.is_file() or not gpkg.is_file():
        raise ConfigError(
            f"{out_dir}: not a finished cracksurvey output folder (no {_RUN_JSON} or "
            f"{_GPKG}); run `cracksurvey process SURVEY_DIR --out {out_dir}` first"
        )
    return json.loads(run_json.read_text(encoding="utf-8"))


def _target_crs(crs: CRS | str | None, surveys: Sequence[list[LayerSpec]]) -> CRS:
    """``crs``, else the CRS of the first 3-D layer, else of the first projected buildings."""
    if crs is not None:
        target = CRS.from_user_input(crs)
    else:
        candidates = [
            spec.crs
            for kind in ("cracks_3d", "buildings")
            for layers in surveys
            for spec in layers
            if spec.kind == kind and spec.crs is not None and spec.crs.is_projected
        ]
        if not candidates:
            raise ConfigError(
                "no survey has a projected CRS (no façade plane, no map CRS): pass crs= "
                "(e.g. 'EPSG:32633') to merge_outputs"
            )
        target = candidates[0]
    if not target.is_projected:
        raise ConfigError(f"merge CRS {target.name!r} is not a projected CRS; give one in metres")
    return target


def _in_crs(frame: gpd.GeoDataFrame, target: CRS) -> gpd.GeoDataFrame:
    """``frame`` in ``target`` (X, Y transformed, Z kept); unchanged when already in it."""
    if frame.crs is None or same_crs(frame.crs, target):
        return frame.set_crs(target, allow_override=True)
    return frame.to_crs(target)


def _with_survey(frame: gpd.GeoDataFrame, label: str) -> gpd.GeoDataFrame:
    frame = frame.copy()
    frame.insert(0, SURVEY_COLUMN, pd.Series([label] * len(frame), index=frame.index, dtype=object))
    return frame


def _concat(frames: list[gpd.GeoDataFrame], crs: CRS) -> gpd.GeoDataFrame:
    """Concatenate frames (union of columns, first-seen order); typed empty frame if none."""
    non_empty = [f for f in frames if len(f)]
    if non_empty:
        merged = pd.concat(non_empty, ignore_index=True)
    else:
        merged = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame({SURVEY_COLUMN: pd.Series([], dtype=object)})
        )
    columns = list(dict.fromkeys(c for f in frames for c in f.columns if c != "geometry"))
    geometry = merged["geometry"] if "geometry" in merged else gpd.GeoSeries([])
    return gpd.GeoDataFrame(merged.reindex(columns=columns), geometry=geometry.values, crs=crs)


def _merged_buildings(label: str, spec: LayerSpec, target: CRS) -> gpd.GeoDataFrame:
    frame = spec.frame
    if spec.crs is None:
        logger.info("%s: buildings without a CRS are merged without geometry", label)
        frame = frame.set_geometry(gpd.GeoSeries([None] * len(frame), index=frame.index))
    elif not spec.crs.is_projected and not spec.crs.is_geographic:
        logger.info(
            "%s: buildings in %s cannot be placed in %s; merged without geometry",
            label,
            spec.crs.name,
            target.name,
        )
        frame = frame.set_geometry(gpd.GeoSeries([None] * len(frame), index=frame.index))
    else:
        frame = _in_crs(frame, target)
    return _with_survey(frame.set_crs(target, allow_override=True), label)


def merge_outputs(
    out_dirs: Sequence[str | Path],
    dest_gpkg: str | Path,
    *,
    crs: CRS | str | None = None,
    names: Sequence[str] | None = None,
) -> Path:
    """Merge the GeoPackages of several survey output folders into one (city-wide).

    Parameters
    ----------
    out_dirs : sequence of str or Path
        Output folders of :func:`cracksurvey.process.process_survey`, each with
        ``cracks.gpkg`` and ``run.json``.
    dest_gpkg : str or Path
        The merged GeoPackage (replaced atomically if it exists).
    crs : pyproj.CRS or str, optional
        Projected CRS of the merged ``cracks_3d`` and ``buildings`` layers; default: the CRS
        of the first survey's 3-D cracks (else of the first projected buildings layer).
    names : sequence of str, optional
        Survey names (the ``survey`` column and layer-name prefixes); default: the name of
        each survey directory (run.json ``survey_dir``). Made unique and layer-name safe by
        :func:`survey_labels`.

    Returns
    -------
    Path
        ``dest_gpkg``.

    Raises
    ------
    ConfigError
        A folder is not a finished output folder, no projected CRS is known, or ``crs`` is
        not projected.
    """
    folders = [Path(d) for d in out_dirs]
    if not folders:
        raise ConfigError("merge_outputs needs at least one output folder")
    if names is not None and len(names) != len(folders):
        raise ConfigError(f"{len(names)} names for {len(folders)} output folders")
    runs = [_read_run(folder) for folder in folders]
    labels = survey_labels(
        list(names)
        if names is not None
        else [
            Path(run.get("survey_dir") or folder.resolve()).name
            for run, folder in zip(runs, folders)
        ]
    )
    surveys = [read_geopackage(folder / _GPKG) for folder in folders]
    target = _target_crs(crs, surveys)

    cracks_3d, buildings, copies = [], [], []
    for label, layers in zip(labels, surveys):
        for spec in layers:
            if spec.kind == "cracks_3d":
                cracks_3d.append(_with_survey(_in_crs(spec.frame, target), label))
            elif spec.kind == "buildings":
                buildings.append(_merged_buildings(label, spec, target))
            else:
                copies.append(
                    LayerSpec(
                        f"{label}_{spec.name}",
                        spec.frame,
                        spec.geometry_type,
                        spec.crs,
                        f"{label}: {spec.description}" if spec.description else label,
                        kind=spec.kind,
                    )
                )
        if not any(spec.kind == "cracks_3d" for spec in layers):
            logger.info(
                "%s: no façade placed in the world; its cracks are in its 2-D layers only", label
            )
    where = f"{target.name}, EPSG:{target.to_epsg()}" if target.to_epsg() else target.name
    specs = [
        LayerSpec(
            "cracks_3d",
            _concat(cracks_3d, target),
            "MultiLineString Z",
            target,
            f"cracks of every survey's façades placed in the world, 3-D ({where})",
            kind="cracks_3d",
        ),
        LayerSpec(
            "buildings",
            _concat(buildings, target),
            "MultiPolygon",
            target,
            f"per-building crack summaries of every survey ({where})",
            kind="buildings",
        ),
        *copies,
    ]
    surveys_meta = [
        {
            "survey": label,
            "out_dir": str(folder.resolve()),
            "model_id": run.get("model", {}).get("model_id"),
            "model_sha256": run.get("model", {}).get("sha256"),
            "cracksurvey_version": run.get("cracksurvey_version"),
            "finished_utc": run.get("finished_utc"),
        }
        for label, folder, run in zip(labels, folders, runs)
    ]
    metadata = {
        "cracksurvey_version": __version__,
        "merged_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "crs": target.to_string(),
        "surveys": json.dumps(surveys_meta),
    }
    logger.info(
        "merging %d surveys into %s (%d 3-D cracks)",
        len(folders),
        dest_gpkg,
        sum(len(f) for f in cracks_3d),
    )
    return write_geopackage(dest_gpkg, specs, metadata=metadata)
