"""Every georeferencing case puts a drawn crack where it was drawn; building association rules.

Coordinate checks (one survey, processed once with the oracle model): a crack is drawn through
known pixels of each image, so its centreline is known in map / façade / pixel coordinates
(:func:`gis_helpers.drawn_line`). The vectorized crack must lie within half a pixel of it
(symmetric Hausdorff distance), in the layer of the image's CRS:

- map: a GeoTIFF in EPSG:32633, and a PNG whose world file is rotated by 30 degrees with a .prj;
- façade frame: a GeoTIFF in the façade's engineering CRS (origin at 2 m, 3 m), a PNG with a
  world file and no .prj (origin 5 m along the façade), a PNG with only a gsd in images.csv;
- façade placed in the world: 2-D in its frame as above, and 3-D (``cracks_3d``) on the plane
  of an oblique base line within 1 cm and within half a pixel of the drawn points;
- pixel units: x = col, y = -row, no CRS.

Building association (test_process covers images.csv and a footprint in the image CRS): the
footprints here are in EPSG:4326 while the image is in EPSG:32633 (reprojected for the join),
an images.csv building_id overrides the footprints, and a crack outside every footprint is
left without a building, with a warning that says how to fix it.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from conftest import (
    SHAPE,
    UTM33,
    UTM33_ORIGIN,
    box_ring,
    crack_array,
    make_buildings,
    make_geotiff,
    make_image,
    make_world_image,
    write_images_csv,
    write_survey_yaml,
)
from gis_helpers import drawn_line, process_oracle, save_oracle
from pyproj import CRS, Transformer

from cracksurvey.errors import CrackSurveyWarning
from cracksurvey.georef import (
    PIXEL_TRANSFORM,
    FacadePlane,
    facade_crs,
    facade_to_world,
    gsd_transform,
    world_to_facade,
)
from cracksurvey.io.styles import layer_kind

X0, Y0 = UTM33_ORIGIN
ROWS = SHAPE[0]
#: a horizontal run then a 45-degree run: both rasterize exactly, the bend is a real vertex
POLYLINE = [(4, 3), (4, 12), (18, 26)]
ROTATED = Affine.translation(X0 + 40, Y0) @ Affine.rotation(30) @ Affine.scale(0.05, -0.05)
PLANE = FacadePlane(
    (X0 + 10, Y0 - 5),
    (X0 + 10 + 3 * math.sin(math.radians(60)), Y0 - 5 + 3 * math.cos(math.radians(60))),
    412.5,
    CRS.from_user_input(UTM33),
)

#: image -> (transform of its crack layer, pixel size in layer units, expected layer suffix)
CASES: dict[str, tuple[Affine, float, str]] = {
    "map_tif.tif": (Affine(0.05, 0, X0, 0, -0.05, Y0), 0.05, "epsg32633"),
    "map_rotated.png": (ROTATED, 0.05, "epsg32633"),
    "facade_tif.tif": (Affine(0.001, 0, 2.0, 0, -0.001, 3.0), 0.001, "facade_f_tif"),
    "facade_world.png": (Affine(0.003, 0, 5.0, 0, -0.003, ROWS * 0.003), 0.003, "facade_f_world"),
    "facade_gsd.png": (gsd_transform(2, ROWS), 0.002, "facade_f_gsd"),
    "facade_plane.png": (gsd_transform(4, ROWS), 0.004, "facade_f_plane"),
    "pixel.png": (PIXEL_TRANSFORM, 1.0, "px"),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_oracle(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, weights: Path):
    root = tmp_path_factory.mktemp("cases") / "survey"
    images = root / "images"
    array = crack_array(polyline=POLYLINE)
    make_geotiff(images / "map_tif.tif", array, CASES["map_tif.tif"][0], UTM33)
    make_world_image(images / "map_rotated.png", array, ROTATED, UTM33)
    make_geotiff(
        images / "facade_tif.tif", array, CASES["facade_tif.tif"][0], facade_crs("F-TIF").to_wkt()
    )
    make_world_image(images / "facade_world.png", array, CASES["facade_world.png"][0])
    for name in ("facade_gsd.png", "facade_plane.png", "pixel.png"):
        make_image(images / name, array)
    write_survey_yaml(root / "survey.yaml", {"survey": {"crs": UTM33}})
    write_images_csv(
        root / "images.csv",
        [
            {"image": "facade_world.png", "building_id": "B1", "facade_id": "F-WORLD"},
            {"image": "facade_gsd.png", "building_id": "B1", "facade_id": "F-GSD", "gsd_mm": 2},
            {
                "image": "facade_plane.png",
                "building_id": "B1",
                "facade_id": "F-PLANE",
                "gsd_mm": 4,
                "base_x0": PLANE.start_xy[0],
                "base_y0": PLANE.start_xy[1],
                "base_x1": PLANE.end_xy[0],
                "base_y1": PLANE.end_xy[1],
                "base_z": PLANE.base_z,
            },
        ],
    )
    with pytest.warns(CrackSurveyWarning) as caught:  # pixel units; no building for maps
        summary = process_oracle(root, weights)
    assert any("pixel.png" in str(w.message) and "pixel units" in str(w.message) for w in caught)
    return summary


def cracks_by_image(summary) -> dict[str, tuple[str, shapely.Geometry]]:
    """image -> (layer name, crack geometry) over every 2-D cracks layer."""
    found = {}
    for name in summary.layers:
        if layer_kind(name) == "cracks":
            frame = pyogrio.read_dataframe(summary.gpkg_path, layer=name)
            for image, geometry in zip(frame["image"], frame.geometry):
                assert image not in found, f"{image}: more than one crack"
                found[image] = (name, geometry)
    return found


@pytest.mark.parametrize("image", list(CASES))
def test_crack_comes_out_where_it_was_drawn(cases, image: str) -> None:
    transform, pixel, suffix = CASES[image]
    layer, crack = cracks_by_image(cases)[image]
    assert layer == f"cracks_{suffix}"
    expected = drawn_line(POLYLINE, transform)
    assert crack.hausdorff_distance(expected) <= 0.5 * pixel


def test_3d_facade_crack_lies_on_the_plane_where_drawn(cases) -> None:
    frame = pyogrio.read_dataframe(cases.gpkg_path, layer="cracks_3d")
    assert list(frame["image"]) == ["facade_plane.png"] and frame.crs.to_epsg() == 32633
    coords = shapely.get_coordinates(frame.geometry.iloc[0], include_z=True)
    x, y, offset = world_to_facade(*coords.T, PLANE)
    assert np.abs(offset).max() < 0.01  # on the façade plane within a centimetre
    transform, pixel, _ = CASES["facade_plane.png"]
    expected_2d = drawn_line(POLYLINE, transform)
    assert (
        shapely.LineString(np.column_stack([x, y])).hausdorff_distance(expected_2d) <= 0.5 * pixel
    )
    # and each drawn vertex has a 3-D crack point within half a pixel
    ex, ey = np.asarray(expected_2d.coords).T
    drawn = np.column_stack(facade_to_world(ex, ey, PLANE))
    gaps = np.linalg.norm(drawn[:, None, :] - coords[None, :, :], axis=2).min(axis=1)
    assert gaps.max() <= 0.5 * pixel


def test_image_footprints_follow_their_georeferencing(cases) -> None:
    footprints = {}
    for name in cases.layers:
        if layer_kind(name) == "images":
            frame = pyogrio.read_dataframe(cases.gpkg_path, layer=name)
            footprints.update(zip(frame["image"], frame.geometry))
    rows, cols = SHAPE
    for image, (transform, _, _) in CASES.items():
        corners = [transform @ c for c in [(0, 0), (cols, 0), (cols, rows), (0, rows)]]
        assert footprints[image].symmetric_difference(
            shapely.Polygon(corners)
        ).area == pytest.approx(0, abs=1e-6), image


# --------------------------------------------------------------------------------------------
# Building association
# --------------------------------------------------------------------------------------------
def to_lonlat(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    transformer = Transformer.from_crs(UTM33, "EPSG:4326", always_xy=True)
    return [transformer.transform(x, y) for x, y in ring]


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory, weights: Path):
    """A map image with two cracks: one in footprint B1, one outside every footprint; a map
    image inside B1 that images.csv gives to B2; a façade of B3 (images.csv; footprints far
    away)."""
    root = tmp_path_factory.mktemp("join") / "survey"
    images = root / "images"
    transform = Affine(0.05, 0, X0, 0, -0.05, Y0)
    two_cracks = np.minimum(
        crack_array(polyline=[(1, 1), (14, 14)]), crack_array(polyline=[(21, 8), (21, 30)])
    )
    make_geotiff(images / "ortho.tif", two_cracks, transform, UTM33)
    make_geotiff(images / "given.tif", crack_array(polyline=[(1, 1), (14, 14)]), transform, UTM33)
    make_image(images / "facade.png", crack_array())
    write_images_csv(
        root / "images.csv",
        [
            {"image": "given.tif", "building_id": "B2"},
            {"image": "facade.png", "building_id": "B3", "facade_id": "B3-N", "gsd_mm": 2},
        ],
    )
    # B1 covers the first crack of ortho.tif (x0..x0+0.75, y0-0.75..y0), not the second
    # (at y0-1.075); B2 and B3 lie elsewhere
    make_buildings(
        root / "buildings.gpkg",
        {
            "B1": to_lonlat(box_ring(X0 - 1, Y0 - 0.8, X0 + 0.8, Y0 + 1)),
            "B2": to_lonlat(box_ring(X0 + 30, Y0 - 30, X0 + 40, Y0 - 20)),
            "B3": to_lonlat(box_ring(X0 + 60, Y0 - 30, X0 + 70, Y0 - 20)),
        },
        crs="EPSG:4326",
    )
    with pytest.warns(CrackSurveyWarning) as caught:
        summary = process_oracle(root, weights)
    return summary, [str(w.message) for w in caught]


def test_map_cracks_join_footprints_in_another_crs(joined) -> None:
    summary, _ = joined
    cracks = pyogrio.read_dataframe(summary.gpkg_path, layer="cracks_epsg32633")
    ortho = cracks[cracks["image"] == "ortho.tif"].sort_values("crack_id")
    by_x = ortho.assign(x=ortho.geometry.bounds["minx"]).sort_values("x")
    assert list(by_x["building_id"].fillna("none")) == ["B1", "none"]
    given = cracks[cracks["image"] == "given.tif"]
    assert list(given["building_id"]) == ["B2"]  # images.csv wins over the footprint (B1)
    facade = pyogrio.read_dataframe(summary.gpkg_path, layer="cracks_facade_b3_n")
    assert list(facade["building_id"]) == ["B3"]
    buildings = gpd.read_file(summary.gpkg_path, layer="buildings").set_index("building_id")
    assert buildings.crs.to_epsg() == 4326  # the footprints' own CRS
    assert buildings.loc["B1", "n_cracks"] == 1 and buildings.loc["B2", "n_cracks"] == 1
    assert buildings.loc["B3", "n_cracks"] == 1


def test_unassigned_cracks_are_counted_and_warned_about(joined) -> None:
    summary, messages = joined
    assert summary.n_cracks_unassigned == 1
    warning = next(m for m in messages if "not assigned to a building" in m)
    assert warning.startswith("1 of 4 cracks") and "images.csv" in warning
    assert summary.record["n_cracks_unassigned"] == 1
