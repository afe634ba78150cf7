"""QGIS styles and run metadata in the GeoPackage: content, table layout, and QGIS applying them.

End-to-end checks on a processed survey are in test_qgis.py; here the styles themselves: well
formed QML and SLD, classes with units, the ``layer_styles`` table as QGIS writes it, the
buildings choropleth on ``damage_level`` when present, and the ``gpkg_metadata`` record.
"""

from __future__ import annotations

import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from gis_helpers import run_qgis
from pyproj import CRS

from cracksurvey.georef import facade_crs
from cracksurvey.io.styles import (
    DENSITY_CLASSES,
    LEVEL_COLOURS,
    WIDTH_CLASSES_MM,
    default_style,
    layer_kind,
)
from cracksurvey.io.vector import LayerSpec, write_geopackage

UTM = CRS.from_epsg(32633)
#: columns of layer_styles as QGIS creates it (QgsOgrProvider saveStyle)
QGIS_STYLE_COLUMNS = [
    "id",
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
]


def lines(widths: list[float], z: bool = False) -> gpd.GeoDataFrame:
    geometries = [
        shapely.MultiLineString([[(i, 0, 1.0), (i + 1, 1, 2.0)] if z else [(i, 0), (i + 1, 1)]])
        for i in range(len(widths))
    ]
    return gpd.GeoDataFrame(
        {"width_max_mm": widths, "width_mean_mm": widths}, geometry=geometries, crs=None
    )


def buildings(levels: list[int | None] | None) -> gpd.GeoDataFrame:
    n = 3
    data = {
        "building_id": [f"B{i}" for i in range(n)],
        "crack_density_m_per_m2": [0.0, 0.3, np.nan],
    }
    if levels is not None:
        data["damage_level"] = pd.array(levels, dtype="Int64")
        data["damage_label"] = [None if v is None else f"label {v}" for v in levels]
    return gpd.GeoDataFrame(
        data,
        geometry=[shapely.MultiPolygon([shapely.box(i, 0, i + 1, 1)]) for i in range(n)],
        crs=None,
    )


def specs(levels: list[int | None] | None = None) -> list[LayerSpec]:
    return [
        LayerSpec("cracks_epsg32633", lines([0.05, 0.5, 3, 30]), "MultiLineString", UTM),
        LayerSpec("crack_branches_facade_f1", lines([2.0]), "MultiLineString", facade_crs("F1")),
        LayerSpec("cracks_px", lines([np.nan]), "MultiLineString", None),
        LayerSpec("cracks_3d", lines([1.0], z=True), "MultiLineString Z", UTM),
        LayerSpec("buildings", buildings(levels), "MultiPolygon", UTM),
        LayerSpec("other", lines([1.0]), "MultiLineString", UTM),
    ]


def test_layer_kinds_from_names() -> None:
    assert [
        layer_kind(n)
        for n in (
            "cracks",
            "cracks_epsg32633",
            "cracks_3d",
            "cracks_3d_x",
            "crack_branches_px",
            "images_facade_b1",
            "buildings",
            "north_cracks",
            "crack",
        )
    ] == [
        "cracks",
        "cracks",
        "cracks_3d",
        "cracks_3d",
        "crack_branches",
        "images",
        "buildings",
        None,
        None,
    ]


def test_classes_are_contiguous_and_state_units() -> None:
    for classes, unit in ((WIDTH_CLASSES_MM, "mm"), (DENSITY_CLASSES[1:], "m/m²")):
        assert all(a.upper == b.lower for a, b in zip(classes, classes[1:]))
        assert all(unit in c.label for c in classes)
        assert len({c.colour for c in classes}) == len(classes)
    assert WIDTH_CLASSES_MM[0].lower == 0 and WIDTH_CLASSES_MM[-1].upper >= 1e6


@pytest.mark.parametrize("levels", [None, [0, 2, None], [None, None, None]])
def test_every_style_is_well_formed_qml_and_sld(levels) -> None:
    for spec in specs(levels):
        style = default_style(spec.name, spec.frame, pixel_units=spec.crs is None)
        if spec.name == "other":
            assert style is None
            continue
        qml = ET.fromstring(style.qml.split("\n", 1)[1])  # after the DOCTYPE line
        assert qml.tag == "qgis" and qml.find("renderer-v2") is not None
        sld = ET.fromstring(style.sld.split("\n", 1)[1])
        rules = sld.findall(".//{http://www.opengis.net/se}Rule")
        assert rules and all(r.find("{http://www.opengis.net/se}Name").text for r in rules)


def test_buildings_choropleth_uses_damage_level_when_present() -> None:
    frame = buildings([0, 2, None])
    renderer = ET.fromstring(default_style("buildings", frame).qml.split("\n", 1)[1]).find(
        "renderer-v2"
    )
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "damage_level"
    categories = [(c.get("value"), c.get("label")) for c in renderer.iter("category")]
    assert categories == [
        ("0", "damage level 0: label 0"),
        ("2", "damage level 2: label 2"),
        ("", "not assessed (no processed image)"),
    ]
    colours = [o.get("value") for o in renderer.iter("Option") if o.get("name") == "color"]
    assert colours[1].startswith("{},{},{}".format(*LEVEL_COLOURS[2]))  # same colour everywhere
    density = ET.fromstring(default_style("buildings", buildings(None)).qml.split("\n", 1)[1])
    renderer = density.find("renderer-v2")
    assert renderer.get("type") == "RuleRenderer"
    filters = [r.get("filter") for r in renderer.iter("rule")]
    assert filters[0] == '"crack_density_m_per_m2" = 0.0' and filters[-1] == "ELSE"


def test_layer_styles_table_is_the_one_qgis_writes(tmp_path: Path) -> None:
    path = write_geopackage(tmp_path / "cracks.gpkg", specs())
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(layer_styles)")]
        contents = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
        geometry_columns = dict(
            db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns")
        )
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, "
            "update_time FROM layer_styles"
        ).fetchall()
    assert columns == QGIS_STYLE_COLUMNS
    assert contents["layer_styles"] == "attributes"
    assert sorted(r[0] for r in rows) == sorted(
        n for n in contents if n not in ("layer_styles", "other")
    )
    for name, geometry_column, style_name, default, updated in rows:
        assert geometry_column == geometry_columns[name] and default == 1
        assert style_name == "cracksurvey" and updated.endswith("Z")
    without = write_geopackage(tmp_path / "plain.gpkg", specs(), styles=False)
    with sqlite3.connect(without) as db:
        assert not db.execute(
            "SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchall()


def test_run_metadata_is_geopackage_metadata(tmp_path: Path) -> None:
    metadata = {"model_id": "m-1", "model_sha256": "ab" * 32, "cracksurvey_version": "9.9"}
    path = write_geopackage(tmp_path / "cracks.gpkg", specs(), metadata=metadata)
    with sqlite3.connect(path) as db:
        documents = db.execute("SELECT md_scope, mime_type, metadata FROM gpkg_metadata").fetchall()
        references = db.execute(
            "SELECT reference_scope, table_name FROM gpkg_metadata_reference"
        ).fetchall()
        extensions = {row[0] for row in db.execute("SELECT extension_name FROM gpkg_extensions")}
    assert ("geopackage", None) in references and "gpkg_metadata" in extensions
    assert any("m-1" in text and "ab" * 32 in text for _, _, text in documents)
    info = subprocess.run(
        ["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, check=True
    )
    assert "model_id=m-1" in info.stdout and "Warning" not in info.stderr, info.stderr


def test_qgis_applies_the_damage_level_and_pixel_unit_styles(tmp_path: Path) -> None:
    path = write_geopackage(tmp_path / "cracks.gpkg", specs([0, 2, None]))
    seen = run_qgis(path, ["buildings", "cracks_px", "crack_branches_facade_f1"])["vectors"]
    assert seen["buildings"]["renderer"] == "categorizedSymbol"
    assert seen["buildings"]["attribute"] == "damage_level"
    assert seen["buildings"]["legend"] == [
        "damage level 0: label 0",
        "damage level 2: label 2",
        "not assessed (no processed image)",
    ]
    assert seen["cracks_px"]["renderer"] == "singleSymbol"
    assert seen["crack_branches_facade_f1"]["attribute"] == "width_mean_mm"
