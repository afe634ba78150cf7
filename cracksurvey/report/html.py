"""The report page: HTML and CSS assembled from view objects (pure; no IO, no JavaScript).

Every number is written by :func:`format_value` and carries its exact value and column in
``data-value`` / ``data-column`` attributes, so a test (or a curious reader) can check it
against ``summary.csv`` and the GeoPackage. A Content-Security-Policy forbids every fetch:
the page is complete in one file and works from ``file://``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import pandas as pd

from cracksurvey.summary import SUMMARY_COLUMNS

from .figures import level_colour

__all__ = [
    "CONTINUITY_NOTES",
    "TABLE_COLUMNS",
    "BuildingView",
    "ImageView",
    "format_value",
    "render_page",
]

#: Columns of the ranked building table (after rank, and survey/district city-wide).
TABLE_COLUMNS = (
    "building_id",
    "damage_level",
    "n_cracks",
    "evidence_cracks",
    "total_length_m",
    "longest_crack_m",
    "width_max_mm",
    "width_p95_mm",
    "crack_density_m_per_m2",
    "share_diagonal",
    "cpp_mean",
    "detection_limit_mm",
    "n_images",
)
#: Column headings for people (units in brackets).
HEADINGS = {
    "survey": "survey",
    "district": "district",
    "building_id": "building",
    "damage_level": "level (indicative)",
    "n_cracks": "cracks",
    "total_length_m": "total length [m]",
    "longest_crack_m": "longest [m]",
    "mean_crack_length_m": "mean crack length [m]",
    "width_max_mm": "max width [mm]",
    "width_p95_mm": "p95 width [mm]",
    "imaged_area_m2": "imaged area [m²]",
    "crack_density_m_per_m2": "density [m/m²]",
    "share_vertical": "near-vertical",
    "share_horizontal": "near-horizontal",
    "share_diagonal": "diagonal",
    "cpp_mean": "CPP",
    "cpp_patches": "CPP patches",
    "fragments_per_m": "fragments per m",
    "largest_crack_share": "largest-crack share",
    "n_images": "images",
    "n_images_failed": "images failed",
    "evidence_cracks": "evidence cracks",
    "evidence_length_m": "evidence length [m]",
    "evidence_width_p95_mm": "evidence p95 width [mm]",
    "evidence_density_m_per_m2": "evidence density [m/m²]",
    "detection_limit_mm": "detection limit [mm]",
    "damage_label": "level wording",
    "damage_basis": "why this level",
}
#: One line for each continuity number.
CONTINUITY_NOTES = {
    "cpp_mean": "Cracks Per Patch: the average number of separate crack fragments in one "
    "{patch_px}-pixel image patch (docs/method.md); higher means more cracks or "
    "more broken-up cracks.",
    "fragments_per_m": "Separate cracks per metre of crack: high values mean many short, "
    "disconnected pieces rather than a few continuous cracks.",
    "mean_crack_length_m": "Average length of one connected crack: long continuous cracks "
    "matter more for a wall than scattered short ones.",
    "largest_crack_share": "Share of the total crack length in the single longest crack: "
    "near 100 % means one dominant crack.",
}
_INT_COLUMNS = {
    "n_cracks",
    "evidence_cracks",
    "cpp_patches",
    "n_images",
    "n_images_failed",
    "damage_level",
}
_DECIMALS = {
    "imaged_area_m2": 1,
    "crack_density_m_per_m2": 3,
    "evidence_density_m_per_m2": 3,
    "detection_limit_mm": 1,
}
_PERCENT = {"share_vertical", "share_horizontal", "share_diagonal", "largest_crack_share"}


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def format_value(column: str, value: Any) -> str:
    """How the report shows a summary value (``–`` for an undefined one).

    >>> format_value("total_length_m", 2.345678), format_value("share_diagonal", 0.2613)
    ('2.35', '26 %')
    >>> format_value("width_max_mm", float("nan")), format_value("n_cracks", 3.0)
    ('–', '3')
    """
    if _missing(value):
        return "–"
    if column in _INT_COLUMNS:
        return str(int(value))
    if column in _PERCENT:
        return f"{100 * float(value):.0f} %"
    if isinstance(value, (int, float)):
        return f"{float(value):.{_DECIMALS.get(column, 2)}f}"
    return str(value)


def _exact(value: Any) -> str:
    """The exact value for ``data-value`` (repr of floats; empty when undefined)."""
    if _missing(value):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _attrs(column: str, value: Any) -> str:
    return f'data-column="{column}" data-value="{escape(_exact(value))}"'


def _cell(column: str, value: Any, *, extra: str = "") -> str:
    return f"<td {_attrs(column, value)}{extra}>{escape(format_value(column, value))}</td>"


@dataclass
class ImageView:
    """One image of a building as shown: an overlay SVG and a caption."""

    svg: str
    caption: str


@dataclass
class BuildingView:
    """Everything shown about one building.

    ``values`` is the building's row of the summary (the ``buildings`` layer), ``anchor`` the
    id of its section, ``figures`` the width histogram and orientation rose SVGs.
    """

    anchor: str
    values: Mapping[str, Any]
    survey: str = ""
    district: str = ""
    images: list[ImageView] = field(default_factory=list)
    images_not_shown: int = 0
    figures: Sequence[str] = ()

    @property
    def level(self) -> Any:
        return self.values.get("damage_level")


def _keys(view: BuildingView) -> str:
    """Attributes naming the building (and survey) of a table row or section."""
    return (
        f'data-building="{escape(str(view.values.get("building_id")))}" '
        f'data-survey="{escape(view.survey)}"'
    )


def _level_badge(view: BuildingView) -> str:
    level, label = view.level, view.values.get("damage_label")
    if _missing(level):  # not assessable at its GSD, or imaged by a version without levels
        imaged = (view.values.get("n_images") or 0) > 0
        text = "not imaged" if not imaged else "not assessed" if _missing(label) else str(label)
    else:
        text = f"level {int(level)}: {label}" if not _missing(label) else f"level {int(level)}"
    dark = not _missing(level) and int(level) >= 3
    return (
        f'<span class="badge{" dark" if dark else ""}" '
        f'style="background:{level_colour(None if _missing(level) else int(level))}">'
        f"{escape(text)}</span>"
    )


def ranked_table(views: Sequence[BuildingView], *, city: bool) -> str:
    """The building table, ranked by damage level, then crack density, then total length."""
    head_columns = (("survey", "district") if city else ()) + TABLE_COLUMNS
    head = "".join(f'<th scope="col">{escape(HEADINGS[c])}</th>' for c in head_columns)
    rows = []
    for rank, view in enumerate(views, start=1):
        cells = [f"<td>{rank}</td>"]
        if city:
            cells += [
                f'<td data-column="survey">{escape(view.survey)}</td>',
                f'<td data-column="district">{escape(view.district)}</td>',
            ]
        for column in TABLE_COLUMNS:
            value = view.values.get(column)
            if column == "building_id":
                cells.append(
                    f'<td data-column="building_id" data-value="{escape(str(value))}">'
                    f'<a href="#{view.anchor}">{escape(str(value))}</a></td>'
                )
            elif column == "damage_level":
                level = None if value is None or _missing(value) else int(value)
                colour = level_colour(level)
                ink = ";color:#fff" if level is not None and level >= 3 else ""
                cells.append(_cell(column, value, extra=f' style="background:{colour}{ink}"'))
            else:
                cells.append(_cell(column, value))
        rows.append(f'<tr class="building-row" {_keys(view)}>{"".join(cells)}</tr>')
    return (
        f'<table class="ranked"><thead><tr><th scope="col">rank</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _summary_table(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(HEADINGS.get(c, c))}</th>{_cell(c, values.get(c))}'
        f'<td class="note">{escape(description)}</td></tr>'
        for c, description in SUMMARY_COLUMNS.items()
    )
    return f'<table class="numbers"><tbody>{rows}</tbody></table>'


def _continuity(values: Mapping[str, Any], patch_px: int) -> str:
    items = "".join(
        f'<div class="metric"><div class="label">{escape(HEADINGS[c])}</div>'
        f'<div class="value" {_attrs(c, values.get(c))}>'
        f"{escape(format_value(c, values.get(c)))}</div>"
        f'<div class="note">{escape(note.format(patch_px=patch_px))}</div></div>'
        for c, note in CONTINUITY_NOTES.items()
    )
    return f'<div class="continuity">{items}</div>'


def building_section(view: BuildingView, *, patch_px: int, scale_note: str) -> str:
    """One building: level, numbers, continuity, figures, image overlays."""
    values = view.values
    where = f" — {escape(view.survey)}" if view.survey else ""
    basis = values.get("damage_basis")
    images = "".join(
        f'<figure class="image">{image.svg}<figcaption>{escape(image.caption)}</figcaption>'
        "</figure>"
        for image in view.images
    )
    if view.images_not_shown:
        images += f'<p class="note">{view.images_not_shown} more image(s) not shown.</p>'
    return (
        f'<section class="building" id="{view.anchor}" {_keys(view)}>'
        f"<h2>Building {escape(str(values.get('building_id')))}{where} {_level_badge(view)}</h2>"
        + (
            f'<p class="basis">Why: {escape(str(basis))}. {escape(scale_note)}</p>'
            if not _missing(basis)
            else ""
        )
        + _continuity(values, patch_px)
        + f'<div class="figures">{"".join(view.figures)}</div>'
        + (
            f'<div class="images">{images}</div>'
            if images
            else '<p class="note">No processed image of this building.</p>'
        )
        + f"<details><summary>All numbers</summary>{_summary_table(values)}</details>"
        + "</section>"
    )


def _level_list(levels: Sequence[tuple[int, str, str]]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{level_colour(level)}"></span>'
        f"<b>{level} {escape(label)}</b>: {escape(wording)}</li>"
        for level, label, wording in levels
    )
    return f'<ul class="levels">{items}</ul>'


_CSS = """
:root{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#222;line-height:1.4}
body{max-width:1100px;margin:0 auto;padding:1rem 1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin-top:1.6rem}
.disclaimer{border-left:5px solid #d73027;background:#fff4f0;padding:.5rem .8rem}
table{border-collapse:collapse;font-size:.86rem;margin:.5rem 0}
th,td{border-bottom:1px solid #ddd;padding:.2rem .45rem;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.numbers td.note{text-align:left;color:#555}
table.ranked td[data-column=building_id],table.ranked td[data-column=survey],
table.ranked td[data-column=district]{text-align:left}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.8rem;font-size:.85rem;
 border:1px solid #555;vertical-align:middle}.badge.dark{color:#fff}
.continuity{display:grid;grid-template-columns:repeat(4,1fr);gap:.6rem;margin:.6rem 0}
.metric{border:1px solid #ddd;border-radius:.3rem;padding:.4rem .6rem}
.metric .label{font-size:.8rem;color:#555}.metric .value{font-size:1.3rem;font-weight:600}
.note{color:#555;font-size:.8rem}
.figures{display:flex;gap:1rem;align-items:flex-start;flex-wrap:wrap}
svg.hist{width:360px}svg.rose{width:220px}svg.map{width:100%;height:auto}
svg text{font-size:11px;fill:#222}svg .tick{font-size:10px}svg .end{text-anchor:end}
svg .axis{text-anchor:middle;font-size:10px}svg .maplabel{text-anchor:middle;font-size:11px;
 font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px}
svg polygon.footprint{fill:none;stroke:#00e5ff;stroke-width:2;vector-effect:non-scaling-stroke}
.images{display:flex;flex-wrap:wrap;gap:.8rem}
figure.image{margin:0;max-width:100%}figure.image svg{max-width:520px;width:100%;height:auto;
 border:1px solid #ccc}figcaption{font-size:.8rem;color:#444}
ul.levels{list-style:none;padding-left:0}ul.levels li{margin:.2rem 0}
.swatch{display:inline-block;width:.9rem;height:.9rem;border:1px solid #555;margin-right:.4rem;
 vertical-align:middle}
dl.provenance{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.86rem}
dl.provenance dt{color:#555}dl.provenance dd{margin:0;word-break:break-all}
nav.toc a{margin-right:.8rem}
@media print{body{max-width:none;padding:0;font-size:10pt}nav.toc,details>summary{display:none}
 details{display:block}details>*{display:block}section.building{break-before:page}
 a{color:inherit;text-decoration:none}table,figure,.continuity{break-inside:avoid}
 .badge,td,.swatch,svg{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""

_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)


def render_page(
    *,
    title: str,
    subtitle: str,
    disclaimer: str,
    overview: str,
    table: str,
    levels: Sequence[tuple[int, str, str]],
    buildings: Sequence[str],
    provenance: Sequence[tuple[str, str]],
    extra_sections: Sequence[str] = (),
) -> str:
    """The whole HTML document (UTF-8)."""
    prov = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in provenance)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>"
        f'<p class="disclaimer"><b>Indicative, not a structural assessment.</b> '
        f"{escape(disclaimer)}</p>"
        '<nav class="toc"><a href="#overview">Overview</a><a href="#ranking">Buildings</a>'
        '<a href="#levels">Levels</a><a href="#provenance">Provenance</a></nav></header>'
        f'<section id="overview"><h2>Overview</h2>{overview}</section>'
        + "".join(extra_sections)
        + f'<section id="ranking"><h2>Buildings, most damaged first</h2>{table}</section>'
        + f'<section id="levels"><h2>Damage levels (indicative)</h2>{_level_list(levels)}'
        "</section>"
        + "".join(buildings)
        + f'<section id="provenance"><h2>Provenance</h2><dl class="provenance">{prov}</dl>'
        "</section></body></html>\n"
    )
