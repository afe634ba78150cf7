"""The city-wide report: many survey outputs in, one report, one table, one GeoPackage out.

``cracksurvey report OUT_DIR... --out city/`` writes into ``city/``:

- ``report.html``: an overview map of every building (reprojected into one CRS), a
  district-level overview (surveys grouped by ``survey.district`` of their config, else by
  survey folder name), the building table ranked across surveys, per-building sections;
- ``summary.csv`` / ``summary.json``: every survey's building summary with ``survey`` and
  ``district`` columns in front (the same values as each survey's ``summary.csv``);
- ``cracks.gpkg``: the surveys merged by :func:`cracksurvey.merge.merge_outputs` (its
  ``buildings`` layer has the same ``survey`` labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cracksurvey.errors import OutputExistsError
from cracksurvey.io.outputs import (
    GPKG,
    REPORT_HTML,
    atomic_write_text,
    write_summary_tables,
)
from cracksurvey.summary import SUMMARY_COLUMNS

from .build import (
    ReportOptions,
    build_building_views,
    damage_scale_of,
    level_rows,
    map_crs,
    map_geometries,
    overview_items,
    provenance,
    rank_views,
)
from .figures import level_bars_svg, overview_map_svg
from .html import BuildingView, building_section, format_value, ranked_table, render_page
from .load import SurveyOutput, load_survey_output

__all__ = ["CITY_COLUMNS", "CityReport", "city_table", "write_city_report"]

#: Columns the city table puts in front of the building summary.
CITY_COLUMNS = {
    "survey": "survey label (survey folder name, layer-name safe; = the GeoPackage's survey)",
    "district": "district of the survey (survey.district of its config, else the survey name)",
}


@dataclass(frozen=True)
class CityReport:
    """What :func:`write_city_report` wrote (``geopackage`` None when not merged)."""

    report: Path
    summary_csv: Path
    summary_json: Path
    geopackage: Path | None
    n_surveys: int
    n_buildings: int


def _labelled(surveys: Sequence[SurveyOutput]) -> None:
    """Give each survey the unique label :func:`cracksurvey.merge.merge_outputs` uses."""
    from cracksurvey.merge import survey_labels

    for survey, label in zip(surveys, survey_labels([s.name for s in surveys])):
        survey.name = label


def city_table(surveys: Sequence[SurveyOutput]) -> pd.DataFrame:
    """Every survey's building summary with ``survey`` and ``district`` in front."""
    parts = []
    for survey in surveys:
        frame = pd.DataFrame(survey.buildings.drop(columns="geometry"))
        frame.insert(0, "district", survey.district)
        frame.insert(0, "survey", survey.name)
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True)
    columns = ["survey", "district", "building_id", *SUMMARY_COLUMNS]
    return table.reindex(columns=columns)


def _district_rows(table: pd.DataFrame, levels: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for district, part in table.groupby("district", sort=True):
        level = pd.to_numeric(part["damage_level"], errors="coerce")
        counts: dict[int | None, int] = {v: int((level == v).sum()) for v in levels}
        counts[None] = int(level.isna().sum())
        length = part["total_length_m"].to_numpy(dtype=np.float64)
        width = part["width_max_mm"].to_numpy(dtype=np.float64)
        density = part["crack_density_m_per_m2"].to_numpy(dtype=np.float64)
        rows.append(
            {
                "district": str(district),
                "surveys": part["survey"].nunique(),
                "buildings": len(part),
                "counts": counts,
                "total_length_m": float(np.nansum(length))
                if np.isfinite(length).any()
                else math.nan,
                "width_max_mm": float(np.nanmax(width)) if np.isfinite(width).any() else math.nan,
                "median_density": (
                    float(np.nanmedian(density)) if np.isfinite(density).any() else math.nan
                ),
            }
        )
    return rows


def district_section(table: pd.DataFrame, levels: Sequence[tuple[int, str, str]]) -> str:
    """District-level overview: buildings per damage level, crack totals."""
    numbers = [level for level, _, _ in levels]
    head = "".join(f"<th>{level}</th>" for level in numbers)
    body = []
    for row in _district_rows(table, numbers):
        counts = row["counts"]
        body.append(
            f'<tr class="district-row"><td>{escape(row["district"])}</td>'
            f"<td>{row['surveys']}</td><td>{row['buildings']}</td>"
            + "".join(f"<td>{counts[v]}</td>" for v in numbers)
            + f"<td>{counts[None]}</td><td>{level_bars_svg(counts, width_px=200)}</td>"
            f"<td>{format_value('total_length_m', row['total_length_m'])}</td>"
            f"<td>{format_value('width_max_mm', row['width_max_mm'])}</td>"
            f"<td>{format_value('crack_density_m_per_m2', row['median_density'])}</td></tr>"
        )
    return (
        '<section id="districts"><h2>Districts</h2><table class="districts"><thead><tr>'
        '<th rowspan="2">district</th><th rowspan="2">surveys</th><th rowspan="2">buildings'
        f'</th><th colspan="{len(numbers) + 1}">buildings per level (indicative)</th>'
        '<th rowspan="2"></th><th rowspan="2">crack length [m]</th><th rowspan="2">max width '
        '[mm]</th><th rowspan="2">median density [m/m²]</th></tr>'
        f"<tr>{head}<th>not imaged</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        "</section>"
    )


def _surveys_section(surveys: Sequence[SurveyOutput]) -> str:
    rows = "".join(
        f"<tr><td>{escape(s.name)}</td><td>{escape(s.district)}</td>"
        + "".join(
            f"<td>{escape(value)}</td>"
            for key, value in provenance(s.run)
            if key in ("processed (UTC)", "model", "threshold", "cracksurvey version")
        )
        + "</tr>"
        for s in surveys
    )
    return (
        '<section id="surveys"><h2>Surveys</h2><table class="surveys"><thead><tr>'
        "<th>survey</th><th>district</th><th>processed (UTC)</th><th>version</th>"
        f"<th>model</th><th>threshold</th></tr></thead><tbody>{rows}</tbody></table>"
        "</section>"
    )


def city_report_html(surveys: Sequence[SurveyOutput], options: ReportOptions) -> str:
    """The city-wide report page."""
    scale = damage_scale_of(surveys[0].run)
    crs = map_crs(surveys)
    views: list[BuildingView] = []
    items = []
    for index, survey in enumerate(surveys):
        survey_views = build_building_views(
            survey, options, anchor_prefix=f"s{index}", with_survey=True
        )
        items += overview_items(survey_views, map_geometries(survey, crs), with_survey=True)
        views += survey_views
    table = city_table(surveys)
    levels = level_rows(scale)
    ranked = rank_views(views)
    names = sorted({(s.run.get("model") or {}).get("model_id", "?") for s in surveys})
    return render_page(
        title="City-wide crack survey report",
        subtitle=f"{len(surveys)} surveys, {table['district'].nunique()} districts, "
        f"{len(views)} buildings",
        disclaimer=scale.disclaimer,
        overview=overview_map_svg(items, {level: label for level, label, _ in levels}),
        table=ranked_table(ranked, city=True),
        levels=levels,
        buildings=[
            building_section(v, patch_px=_patch_px(surveys, v), scale_note=f"Scale: {scale.name}.")
            for v in ranked
        ],
        provenance=[
            ("surveys", ", ".join(s.name for s in surveys)),
            ("models", ", ".join(names)),
            (
                "damage scale",
                f"{scale.name} (of {surveys[0].name}; every survey's "
                "own levels are in its table rows)",
            ),
        ],
        extra_sections=[district_section(table, levels), _surveys_section(surveys)],
    )


def _patch_px(surveys: Sequence[SurveyOutput], view: BuildingView) -> int:
    survey = next(s for s in surveys if s.name == view.survey)
    return int(((survey.run.get("config") or {}).get("cpp") or {}).get("patch_px", 256))


def write_city_report(
    out_dirs: Sequence[str | Path],
    dest: str | Path,
    *,
    overwrite: bool = False,
    merge: bool = True,
    crs: str | None = None,
    options: ReportOptions | None = None,
) -> CityReport:
    """Merge several survey outputs into one report, one table and one GeoPackage.

    Parameters
    ----------
    out_dirs : sequence of str or Path
        Output folders of ``cracksurvey process``.
    dest : str or Path
        The city folder (created).
    overwrite : bool
        Replace a previous city report in ``dest``.
    merge : bool
        Also write ``dest/cracks.gpkg`` (:func:`cracksurvey.merge.merge_outputs`).
    crs : str, optional
        Projected CRS of the merged GeoPackage (default: chosen by ``merge_outputs``).
    options : ReportOptions, optional
        Default: 360-px thumbnails, two images per building (a city report holds many).

    Raises
    ------
    OutputExistsError
        ``dest`` holds a report and ``overwrite`` is False.
    ConfigError
        A folder is not a finished output folder; no CRS to merge into (pass ``crs``).
    """
    dest = Path(dest)
    if (dest / REPORT_HTML).exists() and not overwrite:
        raise OutputExistsError(
            f"{dest} already holds a report ({REPORT_HTML}); pass "
            "--overwrite to replace it or choose another --out"
        )
    surveys = [load_survey_output(d) for d in out_dirs]
    _labelled(surveys)
    options = options or ReportOptions(thumbnail_px=360, max_images=2)
    table = city_table(surveys)
    csv_path, json_path = write_summary_tables(
        dest, table, columns={**CITY_COLUMNS, "building_id": "building id", **SUMMARY_COLUMNS}
    )
    report = atomic_write_text(dest / REPORT_HTML, city_report_html(surveys, options))
    gpkg = None
    if merge:
        from cracksurvey.merge import merge_outputs

        gpkg = merge_outputs(out_dirs, dest / GPKG, crs=crs, names=[s.name for s in surveys])
    return CityReport(report, csv_path, json_path, gpkg, len(surveys), len(table))
