"""City-wide merge: two surveys in different local façade frames and projected CRSs, one layer.

Survey ``north`` (EPSG:32633) has a façade georeferenced by a gsd only and one by a world file
whose frame starts 5 m along the façade; survey ``south`` (EPSG:3035, another datum and
projection) has a third façade. All three have a façade plane in images.csv, with base lines
that are not axis-aligned. The merged ``cracks_3d`` layer must hold every crack, in EPSG:32633,
on its façade plane within a centimetre and where it was drawn within half a pixel.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
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
    make_image,
    make_world_image,
    write_images_csv,
    write_survey_yaml,
)
from gis_helpers import drawn_line, process_oracle, run_qgis, save_oracle
from pyproj import CRS, Transformer

from cracksurvey.errors import ConfigError
from cracksurvey.georef import FacadePlane, gsd_transform, world_to_facade
from cracksurvey.merge import merge_outputs, survey_labels

X0, Y0 = UTM33_ORIGIN
LAEA = "EPSG:3035"
TO_LAEA = Transformer.from_crs(UTM33, LAEA, always_xy=True)
TO_UTM = Transformer.from_crs(LAEA, UTM33, always_xy=True)
ROWS = SHAPE[0]

#: image -> survey, crack polyline (row, col), transform of the façade frame, plane, gsd (m)
FACADES: dict[str, dict] = {}


def _plane(
    start: tuple[float, float], azimuth_deg: float, length: float, z: float, crs: str
) -> FacadePlane:
    angle = math.radians(azimuth_deg)
    end = (start[0] + length * math.sin(angle), start[1] + length * math.cos(angle))
    return FacadePlane(start, end, z, CRS.from_user_input(crs))


def _row(image: str, building: str, facade: str, plane: FacadePlane, gsd_mm: float | None):
    return {
        "image": image,
        "building_id": building,
        "facade_id": facade,
        "gsd_mm": gsd_mm,
        "base_x0": plane.start_xy[0],
        "base_y0": plane.start_xy[1],
        "base_x1": plane.end_xy[0],
        "base_y1": plane.end_xy[1],
        "base_z": plane.base_z,
    }


def make_north(root: Path) -> Path:
    """EPSG:32633; façade a1 from gsd_mm=4, façade a2 from a world file starting at x=5 m."""
    images = root / "images"
    images.mkdir(parents=True)
    a1 = dict(
        polyline=[(3, 4), (20, 21)],
        transform=gsd_transform(4, ROWS),
        gsd=0.004,
        plane=_plane((X0 + 10, Y0 - 5), 60, 2.0, 412.5, UTM33),
        survey="north",
    )
    a2 = dict(
        polyline=[(12, 2), (12, 29)],
        gsd=0.003,
        transform=Affine(0.003, 0, 5.0, 0, -0.003, ROWS * 0.003),
        plane=_plane((X0 + 20, Y0 - 5), 330, 8.0, 410.0, UTM33),
        survey="north",
    )
    make_image(images / "a1.png", crack_array(polyline=a1["polyline"]))
    make_world_image(images / "a2.png", crack_array(polyline=a2["polyline"]), a2["transform"])
    FACADES.update({"a1.png": a1, "a2.png": a2})
    write_survey_yaml(root / "survey.yaml", {"survey": {"crs": UTM33}})
    write_images_csv(
        root / "images.csv",
        [
            _row("a1.png", "B1", "B1-W", a1["plane"], 4),
            _row("a2.png", "B2", "B2-N", a2["plane"], None),
        ],
    )
    make_buildings(
        root / "buildings.gpkg",
        {
            "B1": box_ring(X0 + 9, Y0 - 8, X0 + 12, Y0 - 5),
            "B2": box_ring(X0 + 16, Y0 - 5, X0 + 20, Y0 + 2),
        },
    )
    return root


def make_south(root: Path) -> Path:
    """EPSG:3035 (ETRS89 LAEA); façade b1 from gsd_mm=2, and a footprint with the id B1 too."""
    images = root / "images"
    images.mkdir(parents=True)
    start = TO_LAEA.transform(X0 + 50, Y0 - 20)
    b1 = dict(
        polyline=[(2, 10), (21, 10)],
        transform=gsd_transform(2, ROWS),
        gsd=0.002,
        plane=_plane(start, 135, 6.0, 420.0, LAEA),
        survey="south",
    )
    make_image(images / "b1.png", crack_array(polyline=b1["polyline"]))
    FACADES["b1.png"] = b1
    write_survey_yaml(root / "survey.yaml", {"survey": {"crs": LAEA}})
    write_images_csv(root / "images.csv", [_row("b1.png", "B1", "B1-S", b1["plane"], 2)])
    sx, sy = start
    make_buildings(
        root / "buildings.gpkg", {"B1": box_ring(sx - 1, sy - 5, sx + 5, sy + 1)}, crs=LAEA
    )
    return root


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("merge")
    weights = save_oracle(base)
    outs = []
    for make, name in ((make_north, "north"), (make_south, "south")):
        survey = make(base / name)
        outs.append(process_oracle(survey, weights, out_dir=base / f"out_{name}").out_dir)
    return merge_outputs(outs, base / "city" / "city.gpkg"), outs


def _in_utm(plane: FacadePlane) -> FacadePlane:
    """The plane with its base line in EPSG:32633 (what the merge must reproject onto)."""
    if plane.crs.to_epsg() == 32633:
        return plane
    return FacadePlane(
        TO_UTM.transform(*plane.start_xy),
        TO_UTM.transform(*plane.end_xy),
        plane.base_z,
        CRS.from_user_input(UTM33),
    )


def test_one_3d_layer_in_the_projected_crs_with_every_survey(merged) -> None:
    path, _ = merged
    cracks = gpd.read_file(path, layer="cracks_3d")
    assert cracks.crs.to_epsg() == 32633 and cracks.has_z.all()
    assert sorted(zip(cracks["survey"], cracks["image"])) == [
        ("north", "a1.png"),
        ("north", "a2.png"),
        ("south", "b1.png"),
    ]
    assert dict(pyogrio.list_layers(path))["cracks_3d"] == "MultiLineString Z"


def test_merged_cracks_lie_on_their_facade_planes_where_drawn(merged) -> None:
    path, _ = merged
    cracks = gpd.read_file(path, layer="cracks_3d").set_index("image")
    for image, facade in FACADES.items():
        coords = shapely.get_coordinates(cracks.geometry[image], include_z=True)
        x, y, offset = world_to_facade(*coords.T, _in_utm(facade["plane"]))
        assert np.abs(offset).max() < 0.01, image  # on the plane within 1 cm
        found = shapely.LineString(np.column_stack([x, y]))
        expected = drawn_line(facade["polyline"], facade["transform"])
        assert found.hausdorff_distance(expected) <= 0.5 * facade["gsd"], image


def test_merge_keeps_the_2d_layers_and_stacks_the_buildings(merged) -> None:
    path, outs = merged
    layers = dict(pyogrio.list_layers(path))
    assert {
        "north_cracks_facade_b1_w",
        "north_cracks_facade_b2_n",
        "south_cracks",
        "south_crack_branches",
        "south_images",
        "buildings",
    } <= set(layers)
    facade = gpd.read_file(path, layer="north_cracks_facade_b2_n")
    assert facade.crs.is_engineering and facade.crs.name == "cracksurvey facade B2-N"
    original = gpd.read_file(outs[0] / "cracks.gpkg", layer="cracks_facade_b2_n")
    assert facade.geometry.iloc[0].equals_exact(original.geometry.iloc[0], 1e-9)
    buildings = gpd.read_file(path, layer="buildings")
    assert buildings.crs.to_epsg() == 32633
    assert sorted(zip(buildings["survey"], buildings["building_id"])) == [
        ("north", "B1"),
        ("north", "B2"),
        ("south", "B1"),
    ]
    south = buildings.set_index("survey").geometry["south"]
    sx, sy = TO_LAEA.transform(X0 + 50, Y0 - 20)
    expected = shapely.Polygon(
        [TO_UTM.transform(x, y) for x, y in box_ring(sx - 1, sy - 5, sx + 5, sy + 1)]
    )
    assert south.symmetric_difference(expected).area < 1e-4


def test_merged_geopackage_is_styled_and_records_the_surveys(merged) -> None:
    path, _ = merged
    with sqlite3.connect(path) as db:
        styled = {name for (name,) in db.execute("SELECT f_table_name FROM layer_styles")}
    spatial = {name for name, kind in pyogrio.list_layers(path) if kind}
    assert styled == spatial
    info = subprocess.run(
        ["ogrinfo", "-so", "-al", str(path)], capture_output=True, text=True, check=True
    )
    assert "Warning" not in info.stderr, info.stderr
    metadata = pyogrio.read_info(path, layer="cracks_3d")["dataset_metadata"]
    surveys = json.loads(metadata["surveys"])
    assert [s["survey"] for s in surveys] == ["north", "south"]
    assert {s["model_id"] for s in surveys} == {"oracle-dark-pixels"}
    assert metadata["crs"] == "EPSG:32633"


def test_qgis_opens_the_merged_layers(merged) -> None:
    path, _ = merged
    names = [name for name, kind in pyogrio.list_layers(path) if kind]
    seen = run_qgis(path, names)["vectors"]
    assert all(seen[n]["valid"] for n in names)
    assert seen["cracks_3d"]["crs"]["authid"] == "EPSG:32633"
    assert seen["cracks_3d"]["wkb_type"] == "MultiLineStringZ"
    assert seen["cracks_3d"]["features"] == 3
    assert seen["cracks_3d"]["renderer"] == "graduatedSymbol"
    assert "cracksurvey facade B1-W" in seen["north_cracks_facade_b1_w"]["crs"]["wkt"]


def test_labels_and_bad_inputs(tmp_path: Path) -> None:
    assert survey_labels(["a b", "A-B", ""]) == ["a_b", "a_b_2", "survey"]
    with pytest.raises(ConfigError, match="not a finished cracksurvey output folder"):
        merge_outputs([tmp_path], tmp_path / "city.gpkg")
