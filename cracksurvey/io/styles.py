"""QGIS styles embedded in the GeoPackage, so every layer opens styled in QGIS.

QGIS reads a layer's default style from the ``layer_styles`` table of its GeoPackage (the row
whose ``f_table_name`` is the layer and ``useAsDefault`` is true). :func:`write_layer_styles`
creates that table exactly as QGIS does when it saves a style (through OGR: an attributes table
registered in ``gpkg_contents``) and stores one style per layer: QML (what QGIS applies) and
SLD 1.1 (for other clients, e.g. GeoServer). :func:`default_style` chooses the style of a layer
from its kind (:func:`layer_kind`) and columns:

==================  ============================================================================
``cracks``          graduated by ``width_max_mm`` in the crack-width classes of BRE Digest 251
``cracks_3d``       (:data:`WIDTH_CLASSES_MM`, legend labels in mm); a single symbol for layers
                    in pixel units, whose widths are unknown
``crack_branches``  graduated by ``width_mean_mm``, same classes, thinner lines
``buildings``       choropleth of the damage indicator: categories of ``damage_level`` when the
                    layer has it, else classes of ``crack_density_m_per_m2`` (m/m²); buildings
                    without a processed image are drawn as "not assessed", never as undamaged
``images``          footprint outlines by processing status
==================  ============================================================================

Fixed classes (not quantiles of the data) keep the legend of every survey, and of a city-wide
merge, the same: a colour means the same width everywhere.

Functions that build styles are pure (strings in, strings out); only
:func:`write_layer_styles` touches a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cracksurvey.io.style_xml import STYLE_NAME, LayerStyle, StyleClass, render_style

__all__ = [
    "DENSITY_CLASSES",
    "LAYER_KINDS",
    "LEVEL_COLOURS",
    "WIDTH_CLASSES_MM",
    "LayerKind",
    "LayerStyle",
    "StyleClass",
    "buildings_style",
    "crack_style",
    "default_style",
    "images_style",
    "layer_kind",
    "write_layer_styles",
]

LayerKind = Literal["cracks", "crack_branches", "cracks_3d", "images", "buildings"]

#: Layer kinds, most specific first (``cracks_3d`` before ``cracks``).
LAYER_KINDS: tuple[LayerKind, ...] = (
    "crack_branches",
    "cracks_3d",
    "cracks",
    "images",
    "buildings",
)


def _ylorrd(n: int) -> list[tuple[int, int, int]]:
    """ColorBrewer YlOrRd without its palest colours (visible on bright façade images)."""
    ramp = [
        (254, 217, 118),
        (254, 178, 76),
        (253, 141, 60),
        (252, 78, 42),
        (227, 26, 28),
        (177, 0, 38),
    ]
    return ramp[len(ramp) - n :]


#: Crack width classes of BRE Digest 251 (damage categories 0-5), millimetres.
WIDTH_CLASSES_MM: tuple[StyleClass, ...] = tuple(
    StyleClass(label, colour, lower, upper, size_mm=size)
    for (label, lower, upper, size), colour in zip(
        [
            ("≤ 0.1 mm (hairline)", 0.0, 0.1, 0.3),
            ("0.1 – 1 mm (very slight)", 0.1, 1.0, 0.45),
            ("1 – 5 mm (slight)", 1.0, 5.0, 0.6),
            ("5 – 15 mm (moderate)", 5.0, 15.0, 0.8),
            ("15 – 25 mm (severe)", 15.0, 25.0, 1.0),
            ("> 25 mm (very severe)", 25.0, 1e6, 1.3),
        ],
        _ylorrd(6),
    )
)

#: Crack density classes of the buildings choropleth, metres of crack per square metre imaged.
DENSITY_CLASSES: tuple[StyleClass, ...] = tuple(
    StyleClass(label, colour, lower, upper, size_mm=0.26)
    for (label, lower, upper), colour in zip(
        [
            ("0 m/m² (no crack found)", 0.0, 0.0),
            ("0 – 0.1 m/m²", 0.0, 0.1),
            ("0.1 – 0.25 m/m²", 0.1, 0.25),
            ("0.25 – 0.5 m/m²", 0.25, 0.5),
            ("0.5 – 1 m/m²", 0.5, 1.0),
            ("> 1 m/m²", 1.0, 1e6),
        ],
        [(26, 152, 80), *_ylorrd(5)],
    )
)

_NOT_ASSESSED = StyleClass("not assessed (no processed image)", (200, 200, 200), size_mm=0.26)


def layer_kind(name: str) -> LayerKind | None:
    """The kind of a layer from its name (``cracks_epsg32633`` is a ``cracks`` layer).

    >>> layer_kind("cracks_facade_b1_n"), layer_kind("cracks_3d"), layer_kind("summary")
    ('cracks', 'cracks_3d', None)
    """
    for kind in LAYER_KINDS:
        if re.fullmatch(rf"{kind}(_.*)?", name):
            return kind
    return None


# --------------------------------------------------------------------------------------------
# Styles per layer kind
# --------------------------------------------------------------------------------------------
def crack_style(
    layer: str, *, column: str = "width_max_mm", scale: float = 1.0, pixel_units: bool = False
) -> LayerStyle:
    """Cracks or branches graduated by a width column in :data:`WIDTH_CLASSES_MM`.

    Parameters
    ----------
    layer : str
        Layer name (SLD ``NamedLayer``).
    column : str
        Width column, millimetres.
    scale : float
        Factor on the line widths (branches are drawn thinner).
    pixel_units : bool
        The layer is in pixel units (widths unknown): one symbol, labelled so.
    """
    if pixel_units:
        cls = StyleClass(
            "crack (pixel units: width not measured)", (227, 26, 28), size_mm=0.5 * scale
        )
        return render_style(
            layer,
            "single",
            column,
            [cls],
            "line",
            "cracks in pixel units (no georeferencing): one symbol",
        )
    classes = [
        StyleClass(c.label, c.colour, c.lower, c.upper, size_mm=c.size_mm * scale)
        for c in WIDTH_CLASSES_MM
    ]
    return render_style(
        layer,
        "graduated",
        column,
        classes,
        "line",
        f"graduated by {column} (mm), crack width classes of BRE Digest 251",
    )


def buildings_style(
    layer: str,
    *,
    column: str = "crack_density_m_per_m2",
    categories: Mapping[str, str] | None = None,
) -> LayerStyle:
    """Choropleth of the buildings' damage indicator.

    Parameters
    ----------
    layer : str
        Layer name.
    column : str
        The indicator column.
    categories : mapping of str to str, optional
        Category value to legend label, in legend order (a damage level): a categorized
        renderer; integer levels 0-5 get fixed colours (0 green, then yellow to dark red) so
        a level has one colour in every survey. None: ``column`` is a crack density in m/m²,
        classed by :data:`DENSITY_CLASSES`.

    Buildings whose indicator is NULL (no processed image) are drawn grey, "not assessed".
    """
    if categories:
        classes = [
            StyleClass(label, _level_colour(value, i), value=value, size_mm=0.26)
            for i, (value, label) in enumerate(categories.items())
        ]
        return render_style(
            layer,
            "categorized",
            column,
            [*classes, _NOT_ASSESSED],
            "fill",
            f"buildings by {column} (indicative, not a structural assessment)",
            fill_alpha=190,
        )
    return render_style(
        layer,
        "rules",
        column,
        [*DENSITY_CLASSES, _NOT_ASSESSED],
        "fill",
        f"buildings by {column} (metres of crack per square metre imaged)",
        fill_alpha=190,
    )


#: Colours of damage levels 0-5 (0: no crack detected).
LEVEL_COLOURS: tuple[tuple[int, int, int], ...] = ((26, 152, 80), *_ylorrd(5))


def _level_colour(value: str, position: int) -> tuple[int, int, int]:
    """The colour of level ``value`` (0-5), else of its position in the legend."""
    level = int(value) if value.isdigit() else position
    return LEVEL_COLOURS[min(level, len(LEVEL_COLOURS) - 1)]


def images_style(layer: str) -> LayerStyle:
    """Image footprints as outlines: processed (blue), failed (red)."""
    classes = [
        StyleClass("image processed", (31, 120, 180), value="ok", size_mm=0.4),
        StyleClass("image failed (see message)", (227, 26, 28), value="error", size_mm=0.6),
        StyleClass("other status", (120, 120, 120), size_mm=0.3),
    ]
    return render_style(
        layer, "categorized", "status", classes, "fill", "image footprints by processing status"
    )


def _damage_categories(columns: pd.DataFrame, column: str) -> dict[str, str]:
    """Level value to legend label, from the values present (with ``damage_label`` text when
    the layer has it); levels 0-5 when no building has a level."""
    present = columns[[column, *(["damage_label"] if "damage_label" in columns else [])]]
    present = present.dropna(subset=[column]).drop_duplicates(column)
    if not len(present):
        return {str(level): f"damage level {level}" for level in range(len(LEVEL_COLOURS))}
    values = present[column]
    order = (
        values.argsort() if pd.api.types.is_numeric_dtype(values) else values.astype(str).argsort()
    )
    categories = {}
    for _, row in present.iloc[np.asarray(order)].iterrows():
        value = row[column]
        text = f"{value:g}" if isinstance(value, float) else str(value)
        label = row.get("damage_label")
        categories[text] = f"damage level {text}" + (f": {label}" if isinstance(label, str) else "")
    return categories


def default_style(
    name: str,
    columns: pd.DataFrame,
    *,
    kind: LayerKind | None = None,
    pixel_units: bool = False,
    damage_column: str = "damage_level",
) -> LayerStyle | None:
    """The default style of a cracks.gpkg layer, or None for a layer of no known kind.

    Parameters
    ----------
    name : str
        Layer name.
    columns : pandas.DataFrame
        The layer's attributes (columns decide the buildings indicator, values its categories).
    kind : LayerKind, optional
        Default: :func:`layer_kind` of ``name``.
    pixel_units : bool
        The layer has no CRS (pixel units).
    damage_column : str
        Buildings indicator used when present, else ``crack_density_m_per_m2``.
    """
    kind = kind or layer_kind(name)
    if kind in ("cracks", "cracks_3d"):
        return crack_style(name, pixel_units=pixel_units)
    if kind == "crack_branches":
        return crack_style(name, column="width_mean_mm", scale=0.8, pixel_units=pixel_units)
    if kind == "images":
        return images_style(name)
    if kind == "buildings":
        if damage_column in columns:
            return buildings_style(
                name, column=damage_column, categories=_damage_categories(columns, damage_column)
            )
        return buildings_style(name)
    return None


# --------------------------------------------------------------------------------------------
# The layer_styles table
# --------------------------------------------------------------------------------------------
def write_layer_styles(
    path: str | Path, styles: Mapping[str, LayerStyle], *, geometry_column: str = "geom"
) -> None:
    """Store ``styles`` as the default styles of their layers in the GeoPackage ``path``.

    Writes the ``layer_styles`` table with the columns QGIS reads and writes (through OGR, as
    QGIS does, so it is registered in ``gpkg_contents`` as an attributes table). Replaces an
    existing table.

    Parameters
    ----------
    path : str or Path
        An existing GeoPackage.
    styles : mapping of str to LayerStyle
        Layer name to its default style.
    geometry_column : str
        Geometry column of the layers (``geom`` for layers written by GDAL).
    """
    import pyogrio

    if not styles:
        return
    now = pd.Timestamp(datetime.now(timezone.utc)).floor("ms")  # GeoPackage: ...SS.SSSZ
    table = pd.DataFrame(
        {
            "f_table_catalog": "",
            "f_table_schema": "",
            "f_table_name": list(styles),
            "f_geometry_column": geometry_column,
            "styleName": STYLE_NAME,
            "styleQML": [s.qml for s in styles.values()],
            "styleSLD": [s.sld for s in styles.values()],
            "useAsDefault": True,
            "description": [s.description for s in styles.values()],
            "owner": "",
            "ui": None,
            "update_time": now,
        }
    )
    pyogrio.write_dataframe(
        table,
        path,
        layer="layer_styles",
        driver="GPKG",
        layer_options={"FID": "id", "OVERWRITE": "YES"},
    )
