"""cracks.gpkg writing: version 1.3, CRSs per layer, empty layers with schema, atomicity."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS

from cracksurvey.georef import facade_crs
from cracksurvey.io.vector import (
    CrsGroups,
    LayerSpec,
    concat_layer,
    crs_layer_suffix,
    empty_layer,
    write_geopackage,
)


def lines(n: int, z: bool = False) -> gpd.GeoDataFrame:
    coords = [[(i, 0, 1.0), (i + 1, 1, 2.0)] if z else [(i, 0), (i + 1, 1)] for i in range(n)]
    return gpd.GeoDataFrame(
        {"crack_id": np.arange(1, n + 1), "length_m": np.full(n, np.sqrt(2))},
        geometry=[shapely.MultiLineString([c]) for c in coords],
        crs=None,
    )


def specs() -> list[LayerSpec]:
    schema = empty_layer({"crack_id": "int64", "length_m": "float64", "image": "str"})
    return [
        LayerSpec("cracks", lines(2), "MultiLineString", CRS.from_epsg(32633), "one per crack"),
        LayerSpec("cracks_facade", lines(1), "MultiLineString", facade_crs("B1-N")),
        LayerSpec("cracks_px", lines(1), "MultiLineString", None),
        LayerSpec("empty", schema, "LineString", CRS.from_epsg(32633)),
        LayerSpec("cracks_3d", lines(1, z=True), "MultiLineString Z", CRS.from_epsg(32633)),
    ]


def test_layers_crs_types_and_version(tmp_path: Path) -> None:
    path = write_geopackage(tmp_path / "cracks.gpkg", specs())
    assert dict(pyogrio.list_layers(path)) == {
        "cracks": "MultiLineString",
        "cracks_facade": "MultiLineString",
        "cracks_px": "MultiLineString",
        "empty": "LineString",
        "cracks_3d": "MultiLineString Z",
        "layer_styles": None,  # QGIS default styles (tests/test_styles.py)
    }
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10300  # GeoPackage 1.3
        descriptions = dict(db.execute("SELECT table_name, description FROM gpkg_contents"))
    assert descriptions["cracks"] == "one per crack"
    assert gpd.read_file(path, layer="cracks").crs.to_epsg() == 32633
    facade = gpd.read_file(path, layer="cracks_facade").crs
    assert facade.is_engineering and facade.name == "cracksurvey facade B1-N"
    assert facade.axis_info[0].unit_name == "metre"
    assert gpd.read_file(path, layer="cracks_px").crs is None
    assert gpd.read_file(path, layer="cracks_3d").has_z.all()
    empty = gpd.read_file(path, layer="empty")
    assert len(empty) == 0 and list(empty.columns) == ["crack_id", "length_m", "image", "geometry"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_ogrinfo_reads_it_without_warnings(tmp_path: Path) -> None:
    path = write_geopackage(tmp_path / "cracks.gpkg", specs())
    result = subprocess.run(
        ["ogrinfo", "-so", str(path)], capture_output=True, text=True, check=True
    )
    for name in ("cracks", "cracks_facade", "cracks_px", "empty", "cracks_3d"):
        assert f": {name} (" in result.stdout
    assert "3D Multi Line String" in result.stdout
    assert "Warning" not in result.stderr, result.stderr  # GDAL 3.6 warns on GeoPackage 1.4
    detail = subprocess.run(
        ["ogrinfo", "-so", str(path), "cracks_facade"], capture_output=True, text=True, check=True
    ).stdout
    assert "cracksurvey facade B1-N" in detail and "length_m: Real" in detail


def test_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = write_geopackage(tmp_path / "cracks.gpkg", specs()[:1])
    before = path.read_bytes()
    real_write = pyogrio.write_dataframe
    calls = []

    def fail_on_second_layer(*args, **kwargs):
        calls.append(kwargs["layer"])
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(pyogrio, "write_dataframe", fail_on_second_layer)
    with pytest.raises(OSError, match="disk full"):
        write_geopackage(path, specs())
    assert calls == ["cracks", "cracks_facade"]
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
    assert pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS") is None  # restored


def test_layer_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        write_geopackage(tmp_path / "x.gpkg", [specs()[0], specs()[0]])


def test_crs_groups_and_suffixes() -> None:
    assert crs_layer_suffix(CRS.from_epsg(32633)) == "epsg32633"
    assert crs_layer_suffix(facade_crs("B 12/north")) == "facade_b_12_north"
    assert crs_layer_suffix(None) == "px"
    groups = CrsGroups()
    utm = groups.get(CRS.from_epsg(32633))
    assert groups.name("cracks", utm) == "cracks"  # a single CRS: plain names
    esri = CRS.from_wkt(CRS.from_epsg(32633).to_wkt("WKT1_ESRI"))  # as in a .prj
    assert groups.get(esri) is utm
    facade = groups.get(facade_crs("F"))
    pixel = groups.get(None)
    assert groups.get(None) is pixel and len(groups) == 3
    assert [groups.name("cracks", g) for g in groups] == [
        "cracks_epsg32633",
        "cracks_facade_f",
        "cracks_px",
    ]
    assert facade.suffix == "facade_f"


def test_concat_layer_keeps_schema_when_empty() -> None:
    schema = empty_layer({"a": "int64", "s": "str"})
    assert concat_layer([], schema) is schema
    assert concat_layer([schema.iloc[:0]], schema) is schema
    both = concat_layer([lines(1), lines(2)], schema)
    assert len(both) == 3 and isinstance(both, gpd.GeoDataFrame)
    assert pd.api.types.is_integer_dtype(both["crack_id"])
