"""QGIS itself (headless, Debian's bindings) opens every output of a processed survey right.

The conftest survey (map GeoTIFF and PNG, façade frames from a gsd and a world file, a façade
placed in the world, an image in pixel units) is processed with the oracle model; QGIS then
opens every layer of cracks.gpkg and every COG. For each layer: valid, the CRS that was
written (an EPSG code, the façade's local engineering CRS in metres, or no CRS for pixel
units), the feature count and geometry type GDAL reports, and the embedded default style
applied (renderer, classified column, legend labels with units). Skipped, saying why, when
``/usr/bin/python3`` cannot import ``qgis.core`` (``make system-deps`` installs it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyogrio
import pytest
from conftest import make_survey
from gis_helpers import process_oracle, run_qgis, save_oracle

from cracksurvey.io.styles import WIDTH_CLASSES_MM, layer_kind

#: QgsUnitTypes.DistanceMeters
QGIS_METRES = 0
#: QGIS geometry type names of GDAL's
QGIS_WKB = {
    "MultiLineString": "MultiLineString",
    "LineString": "LineString",
    "Polygon": "Polygon",
    "MultiPolygon": "MultiPolygon",
    "MultiLineString Z": "MultiLineStringZ",
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory):
    """(run summary, what GDAL says of each layer, what QGIS says, seconds QGIS took)."""
    base = tmp_path_factory.mktemp("qgis")
    survey = make_survey(base / "survey", pixel_image=True)
    summary = process_oracle(survey, save_oracle(base), expect_warnings=True)
    gpkg = summary.gpkg_path
    gdal = {
        name: pyogrio.read_info(gpkg, layer=name)
        for name, kind in pyogrio.list_layers(gpkg)
        if kind
    }
    rasters = sorted((summary.out_dir / "rasters").glob("*.tif"))
    start = time.perf_counter()
    seen = run_qgis(gpkg, list(gdal), rasters)
    return summary, gdal, seen, time.perf_counter() - start


def test_every_layer_is_valid_with_its_crs_count_and_geometry_type(outputs) -> None:
    summary, gdal, seen, _ = outputs
    vectors = seen["vectors"]
    assert set(vectors) == set(summary.layers) == set(gdal)
    for name, info in gdal.items():
        qgis = vectors[name]
        assert qgis["valid"], name
        assert qgis["features"] == info["features"] == summary.layers[name]["features"], name
        assert qgis["wkb_type"] == QGIS_WKB[info["geometry_type"]], name
        assert qgis["has_z"] == (name == "cracks_3d"), name
        crs = qgis["crs"]
        if name.endswith("_px"):  # pixel units: no CRS, never a metric one
            assert info["crs"] is None and crs["authid"] == "" and not crs["geographic"]
            assert "Undefined" in crs["description"], crs
        elif "_facade_" in name:  # local engineering CRS in metres, not a fake EPSG code
            facade = name.rsplit("_facade_", 1)[1].upper().replace("_", "-")
            assert crs["valid"] and crs["authid"] == "" and not crs["geographic"], crs
            assert crs["description"] == f"cracksurvey facade {facade}", crs
            assert crs["map_units"] == QGIS_METRES and 'UNIT["metre",1]' in crs["wkt"], crs
        else:
            assert crs["authid"] == "EPSG:32633", (name, crs)


def test_every_layer_opens_with_its_embedded_style(outputs) -> None:
    _, gdal, seen, _ = outputs
    width_labels = [c.label for c in WIDTH_CLASSES_MM]
    for name in gdal:
        qgis = seen["vectors"][name]
        kind = layer_kind(name)
        if kind in ("cracks", "cracks_3d", "crack_branches") and name.endswith("_px"):
            assert qgis["renderer"] == "singleSymbol", name
            assert "pixel units" in qgis["legend"][0] or qgis["legend"] == [""], name
        elif kind in ("cracks", "cracks_3d", "crack_branches"):
            assert qgis["renderer"] == "graduatedSymbol", name
            assert qgis["attribute"] == (
                "width_mean_mm" if kind == "crack_branches" else "width_max_mm"
            )
            assert qgis["legend"] == width_labels and all("mm" in t for t in qgis["legend"])
            assert len(set(qgis["colours"])) == len(width_labels)  # not QGIS's default grey
        elif kind == "images":
            assert qgis["renderer"] == "categorizedSymbol" and qgis["attribute"] == "status"
        else:
            assert kind == "buildings", name
            assert qgis["renderer"] in ("RuleRenderer", "categorizedSymbol"), name
            assert any("m/m²" in t or "damage" in t for t in qgis["legend"]), qgis["legend"]
            assert "not assessed (no processed image)" in qgis["legend"]


def test_rasters_open_on_top_of_their_cracks(outputs) -> None:
    summary, _, seen, _ = outputs
    rasters = seen["rasters"]
    assert len(rasters) == 3 * len(summary.images)  # distance, mask, semantics
    footprints = {}
    for name in summary.layers:
        if layer_kind(name) == "images":
            frame = pyogrio.read_dataframe(summary.gpkg_path, layer=name)
            footprints.update(zip(frame["image"], frame.geometry.bounds.to_numpy().tolist()))
    for outcome in summary.images:
        for raster in (outcome.distance_raster, outcome.mask_raster, outcome.semantics_raster):
            qgis = rasters[str(summary.out_dir / raster)]
            assert qgis["valid"] and qgis["has_nodata"], raster
            assert qgis["nodata"] == ("nan" if "distance" in raster else "255.0")
            assert qgis["extent"] == pytest.approx(footprints[outcome.image], abs=1e-9), raster
            if outcome.georef_kind == "pixel":
                assert qgis["crs"]["authid"] == "" and "facade" not in qgis["crs"]["wkt"]
            elif outcome.georef_kind == "map":
                assert qgis["crs"]["authid"] == "EPSG:32633"
            else:
                facade = outcome.facade_id or Path(outcome.image).stem
                assert qgis["crs"]["description"] == f"cracksurvey facade {facade}", raster


def test_qgis_check_is_fast(outputs) -> None:
    *_, seconds = outputs
    assert seconds < 60, f"QGIS took {seconds:.1f} s to open the outputs"
