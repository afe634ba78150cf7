"""The report tools: survey outputs in, ``report.html`` (and city-wide tables) out.

:func:`write_survey_report` writes ``report.html`` into a survey output folder (called by
``cracksurvey process`` after the GeoPackage and summary tables); :func:`write_city_report`
merges many survey outputs into one report (``cracksurvey report OUT_DIR... --out city/``).
Both read the outputs back from disk (:mod:`cracksurvey.report.load`), so every number shown
is the GeoPackage's and ``summary.csv``'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from affine import Affine

from cracksurvey.damage import DamageScale, load_damage_scale, parse_damage_scale
from cracksurvey.io.outputs import REPORT_HTML, atomic_write_text

from .figures import (
    image_overlay_svg,
    overview_map_svg,
    png_data_uri,
    rose_svg,
    semantics_tint_uri,
    width_histogram_svg,
)
from .html import BuildingView, ImageView, building_section, ranked_table, render_page
from .load import SurveyOutput, load_survey_output, read_thumbnail

__all__ = ["ReportOptions", "build_building_views", "rank_views", "write_survey_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    """Size knobs of a report.

    Parameters
    ----------
    thumbnail_px : int
        Longest side of each image thumbnail (the HTML grows with its square).
    max_images : int
        Images shown per building (the others are counted, not shown).
    """

    thumbnail_px: int = 640
    max_images: int = 6


# --------------------------------------------------------------------------------------------
# Image overlays
# --------------------------------------------------------------------------------------------
def pixel_transform(footprint: Any, width_px: int, height_px: int) -> Affine:
    """Pixel (col, row) to CRS transform of an image, from its footprint polygon.

    The ``images`` layer footprint is ``transform @ (0, 0), (w, 0), (w, h), (0, h)``.
    """
    p = np.asarray(footprint.exterior.coords)
    return Affine(
        (p[1, 0] - p[0, 0]) / width_px,
        (p[3, 0] - p[0, 0]) / height_px,
        p[0, 0],
        (p[1, 1] - p[0, 1]) / width_px,
        (p[3, 1] - p[0, 1]) / height_px,
        p[0, 1],
    )


def _apply(transform: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``transform @ (x, y)`` on arrays (affine's type hints cover scalars only)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * x + b * y + c, d * x + e * y + f


def _window(
    inverse: Affine, geometry: Any, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Pixel window (row0, row1, col0, col1) around ``geometry``; None: (nearly) whole image."""
    x0, y0, x1, y1 = geometry.bounds
    cols, rows = _apply(inverse, np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
    pad = 0.05 * max(cols.max() - cols.min(), rows.max() - rows.min())
    row0, row1 = max(0, int(rows.min() - pad)), min(height, math.ceil(rows.max() + pad))
    col0, col1 = max(0, int(cols.min() - pad)), min(width, math.ceil(cols.max() + pad))
    if row1 <= row0 or col1 <= col0 or (row1 - row0) * (col1 - col0) > 0.8 * width * height:
        return None
    return row0, row1, col0, col1


def _to_view(
    coords: np.ndarray,
    inverse: Affine,
    window: tuple[int, int, int, int],
    scale: tuple[float, float],
) -> np.ndarray:
    """CRS coordinates (n, 2) to thumbnail (x, y) pixels."""
    cols, rows = _apply(inverse, coords[:, 0], coords[:, 1])
    return np.column_stack([(cols - window[2]) * scale[1], (rows - window[0]) * scale[0]])


def _lines(geometry: Any) -> list[np.ndarray]:
    if geometry is None or geometry.is_empty:
        return []
    return [np.asarray(g.coords)[:, :2] for g in getattr(geometry, "geoms", [geometry])]


def _image_view(
    survey: SurveyOutput,
    image: pd.Series,
    cracks: pd.DataFrame,
    building_geometry: Any,
    options: ReportOptions,
) -> ImageView | None:
    """One image of a building: thumbnail (cropped to the building for a map image covering
    more than it), the building's cracks in it and its footprint outline."""
    width, height = int(image["width_px"] or 0), int(image["height_px"] or 0)
    if image["geometry"] is None or not width or not height:
        return None
    inverse = ~pixel_transform(image["geometry"], width, height)
    window = (
        _window(inverse, building_geometry, width, height)
        if building_geometry is not None
        else None
    )
    full = window or (0, height, 0, width)
    path = survey.survey_dir / str(image["path"]) if survey.survey_dir else None
    thumb = read_thumbnail(path, window, max_side_px=options.thumbnail_px) if path else None
    if thumb is None:
        side = options.thumbnail_px / max(full[1] - full[0], full[3] - full[2])
        data_uri, scale = None, (side, side)
        size = (
            max(1, round((full[1] - full[0]) * side)),
            max(1, round((full[3] - full[2]) * side)),
        )
    else:
        rgb, sr, sc = thumb
        data_uri, scale, size = png_data_uri(rgb), (sr, sc), rgb.shape[:2]
    polylines = []
    for geometry in cracks["geometry"]:
        for line in _lines(geometry):
            view = shapely.simplify(shapely.LineString(_to_view(line, inverse, full, scale)), 0.5)
            polylines.append(np.asarray(view.coords))
    outline = None
    if window is not None:
        ring = max(getattr(building_geometry, "geoms", [building_geometry]), key=lambda g: g.area)
        outline = _to_view(np.asarray(ring.exterior.coords), inverse, full, scale)
    where = image.get("facade_id") or image.get("georef_kind") or ""
    tint = _semantics_tint(survey, image, full, size)
    caption = (
        f"{image['image']} ({where}): {len(cracks)} crack(s) of this building drawn"
        + (", cropped to the building" if window else "")
        + ("; image file not found, cracks only" if thumb is None else "")
        + (
            "; façade semantics: openings blue, background green, no data dark (cracks are "
            "kept on wall)"
            if tint
            else ""
        )
    )
    svg = image_overlay_svg(
        data_uri,
        size,
        polylines,
        outline=outline,
        label=f"{image['image']} with detected cracks",
        tint_uri=tint,
    )
    return ImageView(svg, caption)


def _semantics_tint(
    survey: SurveyOutput, image: pd.Series, window: tuple[int, int, int, int], size: tuple[int, int]
) -> str | None:
    """The image's façade-semantics classes over ``window``, as a tint the thumbnail's size."""
    name = image.get("semantics_raster")
    if not isinstance(name, str) or not name:
        return None
    path = survey.out_dir / name
    if not path.is_file():
        return None
    import rasterio

    with rasterio.open(path) as ds:
        classes = ds.read(1)
    height, width = int(image["height_px"]), int(image["width_px"])
    rows = ((np.arange(size[0]) + 0.5) / size[0] * (window[1] - window[0]) + window[0]) * (
        classes.shape[0] / height
    )
    cols = ((np.arange(size[1]) + 0.5) / size[1] * (window[3] - window[2]) + window[2]) * (
        classes.shape[1] / width
    )
    r = np.clip(rows.astype(int), 0, classes.shape[0] - 1)
    c = np.clip(cols.astype(int), 0, classes.shape[1] - 1)
    return semantics_tint_uri(classes[np.ix_(r, c)])


# --------------------------------------------------------------------------------------------
# Building views
# --------------------------------------------------------------------------------------------
def _same_crs(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a.equals(b)


def _images_of(
    survey: SurveyOutput, building_id: str, geometry: Any, cracks: pd.DataFrame
) -> pd.DataFrame:
    """The processed images showing a building: its images.csv rows, images holding its
    ``cracks``, and map images whose footprint meets its footprint (same CRS)."""
    images = survey.images[survey.images["status"].astype(str) == "ok"]
    with_cracks = set(cracks["image"])
    crs = survey.buildings.crs
    meets = np.array(
        [
            geometry is not None
            and row.georef_kind == "map"
            and _same_crs(row.crs, crs)
            and row.geometry is not None
            and row.geometry.intersects(geometry)
            for row in images.itertuples()
        ],
        dtype=bool,
    )
    keep = (
        (images["building_id"] == building_id).to_numpy(dtype=bool)
        | images["image"].isin(with_cracks).to_numpy(dtype=bool)
        | meets
    )
    return images[keep].sort_values("image")


def build_building_views(
    survey: SurveyOutput,
    options: ReportOptions,
    *,
    anchor_prefix: str = "b",
    with_survey: bool = False,
) -> list[BuildingView]:
    """A :class:`BuildingView` for every row of the survey's ``buildings`` layer."""
    views = []
    buildings = survey.buildings
    cracks_of = dict(list(survey.cracks.groupby("building_id", sort=False)))
    branches_of = dict(list(survey.branches.groupby("building_id", sort=False)))
    for index, row in enumerate(buildings.itertuples(index=False)):
        values = {c: getattr(row, c) for c in buildings.columns if c != "geometry"}
        building_id = values["building_id"]
        geometry = row.geometry if row.geometry is not None and not row.geometry.is_empty else None
        cracks = cracks_of.get(building_id, survey.cracks.iloc[:0])
        branches = branches_of.get(building_id, survey.branches.iloc[:0])
        images = _images_of(survey, building_id, geometry, cracks)
        shown = []
        for image in images.itertuples(index=False):
            image_row = pd.Series(image._asdict())
            in_image = cracks[cracks["image"] == image_row["image"]]
            crop = (
                geometry
                if (
                    image_row["georef_kind"] == "map" and _same_crs(image_row["crs"], buildings.crs)
                )
                else None
            )
            view = _image_view(survey, image_row, in_image, crop, options)
            if view is not None:
                shown.append(view)
            if len(shown) == options.max_images:
                break
        views.append(
            BuildingView(
                anchor=f"{anchor_prefix}-{index}",
                values=values,
                survey=survey.name if with_survey else "",
                district=survey.district if with_survey else "",
                images=shown,
                images_not_shown=max(0, len(images) - len(shown)),
                figures=(
                    width_histogram_svg(branches["width_mean_mm"], branches["length_m"]),
                    rose_svg(cracks["orientation_deg"], cracks["length_m"]),
                ),
            )
        )
    return views


def _sort_key(view: BuildingView) -> tuple[float, float, float, str, str]:
    def number(column: str) -> float:
        value = view.values.get(column)
        if value is None:
            return -math.inf
        try:
            value = float(value)
        except (TypeError, ValueError):
            return -math.inf
        return value if math.isfinite(value) else -math.inf

    return (
        -number("damage_level"),
        -number("crack_density_m_per_m2"),
        -number("total_length_m"),
        view.survey,
        str(view.values.get("building_id")),
    )


def rank_views(views: Sequence[BuildingView]) -> list[BuildingView]:
    """Most damaged first: damage level, then crack density, then total crack length."""
    return sorted(views, key=_sort_key)


def overview_items(
    views: Sequence[BuildingView], geometries: Sequence[Any], *, with_survey: bool = False
) -> list[dict[str, Any]]:
    """The overview map entries of the buildings (geometry None: drawn schematically)."""
    items = []
    for view, geometry in zip(views, geometries):
        v = view.values
        level = v.get("damage_level")
        level = None if level is None or pd.isna(level) else int(level)
        name = f"{view.survey} {v['building_id']}" if with_survey else str(v["building_id"])
        items.append(
            {
                "label": str(v["building_id"]),
                "anchor": view.anchor,
                "level": level,
                "geometry": geometry,
                "title": f"{name}: "
                + (
                    "not imaged"
                    if level is None
                    else f"level {level} ({v.get('damage_label')}), "
                    f"{int(v.get('n_cracks') or 0)} cracks"
                ),
            }
        )
    return items


def map_geometries(survey: SurveyOutput, crs: Any) -> list[Any]:
    """The survey's footprints in ``crs`` (a geographic CRS: in its UTM zone); None where a
    building has no footprint, or the survey cannot be placed in ``crs``."""
    frame = survey.buildings
    if frame.crs is not None and crs is not None and not frame.crs.equals(crs):
        frame = frame.to_crs(crs)
    elif frame.crs is None and crs is not None:
        return [None] * len(frame)
    return [g if g is not None and not g.is_empty else None for g in frame.geometry]


def map_crs(surveys: Sequence[SurveyOutput]) -> Any:
    """The overview map CRS: the first projected buildings CRS, else a UTM zone, else None."""
    with_crs = [s.buildings for s in surveys if s.buildings.crs is not None]
    for frame in with_crs:
        if frame.crs.is_projected:
            return frame.crs
    if with_crs and with_crs[0].geometry.notna().any():
        return with_crs[0].estimate_utm_crs()
    return None


# --------------------------------------------------------------------------------------------
# Provenance and levels
# --------------------------------------------------------------------------------------------
def damage_scale_of(run: dict[str, Any]) -> DamageScale:
    """The damage scale a run used (recorded in run.json; the default for older runs)."""
    record = dict(run.get("damage_scale") or {})
    source = str(record.pop("source", "run.json"))
    if record.get("levels"):
        return parse_damage_scale(record, source=source)
    return load_damage_scale()


def level_rows(scale: DamageScale) -> list[tuple[int, str, str]]:
    """``(level, label, EMS-98 wording)`` of each level, for the legend and level list."""
    return [(v.level, v.label, v.ems98) for v in scale.levels]


def provenance(run: dict[str, Any]) -> list[tuple[str, str]]:
    """Who computed what, with what: model, threshold, version, dates, parameters."""
    model = run.get("model") or {}
    cpp = (run.get("config") or {}).get("cpp") or {}
    scale = run.get("damage_scale") or {}
    return [
        ("survey", str(run.get("survey_dir", ""))),
        ("processed (UTC)", f"{run.get('started_utc', '?')} to {run.get('finished_utc', '?')}"),
        ("cracksurvey version", str(run.get("cracksurvey_version", "?"))),
        (
            "model",
            f"{model.get('model_id', '?')} ({model.get('architecture', '?')}, width "
            f"{model.get('width', '?')}), sha256 {model.get('sha256') or '?'}",
        ),
        (
            "threshold",
            f"{model.get('threshold_px', '?')} px on the distance map (from the "
            f"{model.get('threshold_source', '?')})",
        ),
        (
            "CPP",
            f"{cpp.get('patch_px', '?')}-px patches, fragments of at least "
            f"{cpp.get('min_area_px', '?')} px (area)",
        ),
        ("damage scale", f"{scale.get('name', 'default')} ({scale.get('source', '?')})"),
        (
            "images",
            f"{run.get('n_images', '?')} ({run.get('n_images_failed', 0)} failed), "
            f"{run.get('n_cracks', '?')} cracks "
            f"({run.get('n_cracks_unassigned', 0)} without a building)",
        ),
        ("report written (UTC)", datetime.now(timezone.utc).isoformat(timespec="seconds")),
    ]


# --------------------------------------------------------------------------------------------
# The survey tool
# --------------------------------------------------------------------------------------------
def survey_report_html(survey: SurveyOutput, options: ReportOptions) -> str:
    """The report page of one survey."""
    scale = damage_scale_of(survey.run)
    views = build_building_views(survey, options)
    overview = overview_map_svg(
        overview_items(views, map_geometries(survey, map_crs([survey]))),
        {level: label for level, label, _ in level_rows(scale)},
    )
    ranked = rank_views(views)
    patch_px = int(((survey.run.get("config") or {}).get("cpp") or {}).get("patch_px", 256))
    return render_page(
        title=f"Crack survey report: {survey.name}",
        subtitle=f"{len(views)} buildings, {survey.run.get('n_images', '?')} images, "
        f"processed {str(survey.run.get('finished_utc', '?'))[:10]}",
        disclaimer=scale.disclaimer,
        overview=overview,
        table=ranked_table(ranked, city=False),
        levels=level_rows(scale),
        buildings=[
            building_section(v, patch_px=patch_px, scale_note=f"Scale: {scale.name}.")
            for v in ranked
        ],
        provenance=provenance(survey.run),
    )


def write_survey_report(
    out_dir: str | Path,
    *,
    run_record: dict[str, Any] | None = None,
    options: ReportOptions | None = None,
) -> Path:
    """Write ``out_dir/report.html`` from the outputs of a process run.

    Parameters
    ----------
    out_dir : str or Path
        The output folder of ``cracksurvey process`` (cracks.gpkg written).
    run_record : dict, optional
        The run.json content (process calls this before writing run.json, which marks the
        end of a run); default: read ``out_dir/run.json``.
    options : ReportOptions, optional

    Returns
    -------
    Path
        The report (written atomically).
    """
    survey = load_survey_output(out_dir, run_record=run_record)
    html = survey_report_html(survey, options or ReportOptions())
    return atomic_write_text(Path(out_dir) / REPORT_HTML, html)
