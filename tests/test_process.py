"""process_survey end to end with an oracle model: layers, CRSs, lengths, join, bad inputs.

The stand-in model is a real TernausNet (unet16, width 1/16, body head) saved with
``save_model``, whose weights make it an oracle: every weight is zero except a path through the
first two encoder convs, the last decoder block and the heads that computes, per pixel,
``distance = relu(20 - 20 * relu(-mean of the normalised RGB))``. A dark pixel (a drawn crack)
gets distance 0, a bright pixel 20, so the mask is exactly the drawn crack and the whole chain
(weights file, card, engine, skeleton, vectorize, join, GeoPackage) runs for real.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine
from conftest import (
    FAST,
    UTM33,
    UTM33_ORIGIN,
    crack_array,
    make_geotiff,
    make_image,
    make_survey,
    write_images_csv,
)

from cracksurvey import __version__
from cracksurvey.config import ProcessConfig
from cracksurvey.errors import ConfigError, CrackSurveyWarning, OutputExistsError
from cracksurvey.io.survey_files import hash_file
from cracksurvey.measure.continuity import cracks_per_patch
from cracksurvey.process import process_survey

X0, Y0 = UTM33_ORIGIN


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory, oracle_weights: Path):
    """The conftest survey (map, façade, façade in the world, pixel units) processed once."""
    torch.set_num_threads(1)
    root = make_survey(tmp_path_factory.mktemp("e2e") / "survey", pixel_image=True)
    with pytest.warns(CrackSurveyWarning) as caught:
        summary = process_survey(root, weights=oracle_weights, overrides=FAST, synchronous=True)
    messages = [str(w.message) for w in caught]
    assert any("images/nothing.png" in m and "pixel units" in m for m in messages)
    assert any("1 of 6 cracks are not assigned to a building" in m for m in messages)
    return summary


def layer(summary, name: str) -> gpd.GeoDataFrame:
    return gpd.read_file(summary.gpkg_path, layer=name, engine="pyogrio")


def attributes(summary, names) -> pd.DataFrame:
    """The attributes (no geometry) of several layers, concatenated."""
    return pd.concat(
        [pd.DataFrame(layer(summary, n).drop(columns="geometry")) for n in names],
        ignore_index=True,
    )


def rows_of(frame: pd.DataFrame, image: str) -> pd.DataFrame:
    return frame[frame["image"] == image]


# --------------------------------------------------------------------------------------------
# End to end on the conftest survey
# --------------------------------------------------------------------------------------------
def test_layers_crs_and_geometry_types(processed) -> None:
    import pyogrio

    layers = dict(pyogrio.list_layers(processed.gpkg_path))
    groups = ("epsg32633", "facade_b1_n", "facade_b2_e", "facade_b2_s", "px")
    expected = {
        f"{base}_{g}": kind
        for g in groups
        for base, kind in (
            ("cracks", "MultiLineString"),
            ("crack_branches", "LineString"),
            ("images", "Polygon"),
        )
    }
    expected |= {"buildings": "MultiPolygon", "cracks_3d": "MultiLineString Z"}
    assert layers == {**expected, "layer_styles": None}  # + QGIS styles table
    assert layer(processed, "cracks_epsg32633").crs.to_epsg() == 32633
    facade = layer(processed, "cracks_facade_b1_n").crs
    assert facade.is_engineering and facade.name == "cracksurvey facade B1-N"
    assert layer(processed, "cracks_px").crs is None
    assert layer(processed, "buildings").crs.to_epsg() == 32633
    cracks_3d = layer(processed, "cracks_3d")
    assert cracks_3d.crs.to_epsg() == 32633 and cracks_3d.has_z.all()
    assert set(processed.layers) == set(expected)
    listing = subprocess.run(
        ["ogrinfo", "-so", str(processed.gpkg_path)], capture_output=True, text=True, check=True
    )
    assert sorted(
        line.split(": ", 1)[1].split(" (")[0]
        for line in listing.stdout.splitlines()
        if line[:1].isdigit()
    ) == sorted([*expected, "layer_styles"])
    assert "Warning" not in listing.stderr, listing.stderr


def test_attribute_columns_carry_units(processed) -> None:
    cracks = layer(processed, "cracks_epsg32633")
    for column in (
        "image",
        "building_id",
        "facade_id",
        "crack_id",
        "length_m",
        "length_px",
        "width_mean_mm",
        "width_max_mm",
        "width_p95_mm",
        "orientation_deg",
        "n_branches",
        "n_junctions",
        "confidence",
        "bridged",
    ):
        assert column in cracks.columns
    branches = layer(processed, "crack_branches_facade_b2_e")
    assert {"crack_id", "branch_id", "kind", "length_m", "width_mean_mm"} <= set(branches)
    buildings = layer(processed, "buildings")
    assert {"total_length_m", "width_max_mm", "crack_density_m_per_m2", "cpp_mean"} <= set(
        buildings
    )
    images = layer(processed, "images_epsg32633")
    assert {"status", "message", "n_cracks", "precision", "seconds", "gsd_mm"} <= set(images)


def test_one_diagonal_crack_per_image_with_its_length(processed) -> None:
    diagonal_px = math.hypot(23, 31)  # conftest crack: corner to corner of 24 x 32 px
    expected_m = {
        "ortho.tif": 0.05,
        "drone.png": 0.05,
        "facade_plane.png": 0.004,
        "facade_world.png": 0.003,
    }
    cracks = attributes(processed, ("cracks_epsg32633", "cracks_facade_b2_e", "cracks_facade_b2_s"))
    for image, gsd_m in expected_m.items():
        rows = rows_of(cracks, image)
        assert len(rows) == 1, image
        assert rows["length_m"].iloc[0] == pytest.approx(diagonal_px * gsd_m, rel=0.02)
        assert rows["length_px"].iloc[0] == pytest.approx(diagonal_px, rel=0.02)
        assert 35 < rows["orientation_deg"].iloc[0] < 55 or 125 < rows["orientation_deg"].iloc[0]
    pixel = layer(processed, "cracks_px")
    assert len(pixel) == 1 and pixel["length_m"].isna().all() and pixel["width_max_mm"].isna().all()
    assert pixel["length_px"].iloc[0] == pytest.approx(diagonal_px, rel=0.02)


def test_map_crack_is_in_map_coordinates(processed) -> None:
    ortho = rows_of(layer(processed, "cracks_epsg32633"), "ortho.tif").geometry.iloc[0]
    xs, ys = np.concatenate([np.asarray(line.coords) for line in ortho.geoms]).T
    # pixel centres from (0, 0) to (23, 31): x0 + 0.025 .. x0 + 1.575, y0 - 0.025 .. y0 - 1.175
    assert xs.min() == pytest.approx(X0 + 0.025, abs=1e-6)
    assert xs.max() == pytest.approx(X0 + 31.5 * 0.05, abs=1e-6)
    assert ys.max() == pytest.approx(Y0 - 0.025, abs=1e-6)
    assert ys.min() == pytest.approx(Y0 - 23.5 * 0.05, abs=1e-6)


def test_facade_in_the_world_gets_3d_cracks(processed) -> None:
    cracks_3d = layer(processed, "cracks_3d")
    assert list(cracks_3d["image"]) == ["facade_plane.png"]
    coords = np.concatenate([np.asarray(g.coords) for g in cracks_3d.geometry.iloc[0].geoms])
    # plane: base line from (x0+10, y0-5) east 0.128 m at z 412.5; 4 mm pixels, 24 rows
    assert np.allclose(coords[:, 1], Y0 - 5)
    assert coords[:, 0].min() >= X0 + 10 and coords[:, 0].max() <= X0 + 10.128
    assert coords[:, 2].min() >= 412.5 and coords[:, 2].max() <= 412.5 + 24 * 0.004
    flat = rows_of(layer(processed, "cracks_facade_b2_e"), "facade_plane.png")
    assert cracks_3d["length_m"].iloc[0] == flat["length_m"].iloc[0]


def test_building_join(processed) -> None:
    cracks = attributes(processed, [n for n in processed.layers if n.startswith("cracks_")])
    building = dict(zip(cracks["image"], cracks["building_id"]))
    assert building["ortho.tif"] == "B1"  # images.csv
    assert building["drone.png"] == "B1"  # no images.csv row: joined by footprint
    assert building["facade_plane.png"] == "B2"
    assert building["facade_world.png"] == "B2"
    assert building["nothing.png"] is None or pd.isna(building["nothing.png"])
    assert processed.n_cracks_unassigned == 1
    branches = layer(processed, "crack_branches_epsg32633")
    assert set(branches["building_id"]) == {"B1"}
    summary = processed.buildings.set_index("building_id")
    assert summary.loc["B1", "n_images"] == 3 and summary.loc["B2", "n_images"] == 2
    assert summary.loc["B1", "n_cracks"] == 3 and summary.loc["B2", "n_cracks"] == 2
    # imaged area: ortho 24 x 32 px at 5 cm (all of it, images.csv), drone clipped to B1,
    # facade_gsd 24 x 32 px at 2 mm
    assert summary.loc["B1", "imaged_area_m2"] == pytest.approx(
        2 * 24 * 32 * 0.05**2 + 24 * 32 * 0.002**2
    )


def test_buildings_layer_summary_csv_and_json_agree(processed) -> None:
    buildings = pd.DataFrame(layer(processed, "buildings").drop(columns="geometry"))
    csv = pd.read_csv(processed.out_dir / "summary.csv", dtype={"building_id": str})
    document = json.loads((processed.out_dir / "summary.json").read_text())
    from_json = pd.DataFrame(document["buildings"]).astype(
        {c: float for c in csv.columns if csv[c].dtype == float}
    )
    assert list(buildings.columns) == list(csv.columns) == list(from_json.columns)
    assert "total_length_m" in document["columns"]
    for column in csv.columns:
        if column in ("building_id", "damage_label", "damage_basis"):  # text columns
            assert list(buildings[column]) == list(csv[column]) == list(from_json[column])
        else:
            values = [frame[column].to_numpy(dtype=float) for frame in (buildings, from_json)]
            for other in values:
                np.testing.assert_allclose(other, csv[column].to_numpy(float), rtol=1e-9)
    geometry = layer(processed, "buildings").set_index("building_id").geometry
    assert geometry["B1"].geom_type == "MultiPolygon"
    assert geometry["B1"].bounds == pytest.approx((X0, Y0 - 2, X0 + 2, Y0))


def test_cpp_from_windowed_mask_equals_whole_mask(processed) -> None:
    images = {o.image: o for o in processed.images}
    for name in ("ortho.tif", "facade_world.png"):
        with rasterio.open(processed.out_dir / "rasters" / f"{Path(name).stem}_mask.tif") as ds:
            mask = ds.read(1)
        counts = cracks_per_patch(mask == 1, patch_px=16, min_area_px=3, valid=mask != 255)
        assert images[name].cpp_patches == counts.size == 4
        assert images[name].cpp_mean == pytest.approx(counts.mean())
        assert images[name].cpp_mean > 0


def test_images_layer_lists_every_image(processed) -> None:
    images = attributes(processed, [n for n in processed.layers if n.startswith("images_")])
    assert sorted(images["image"]) == sorted(o.image for o in processed.images)
    assert set(images["status"]) == {"ok"}
    ortho = images.set_index("image").loc["ortho.tif"]
    footprint = layer(processed, "images_epsg32633").set_index("image").geometry["ortho.tif"]
    assert footprint.bounds == pytest.approx((X0, Y0 - 24 * 0.05, X0 + 32 * 0.05, Y0))
    assert ortho["gsd_mm"] == pytest.approx(50.0) and ortho["n_tiles"] == 1
    nothing = images.set_index("image").loc["nothing.png"]
    assert "pixel units" in nothing["warnings"] and nothing["georef_kind"] == "pixel"
    for stem in ("ortho", "nothing"):
        for kind in ("distance", "mask"):
            assert (processed.out_dir / "rasters" / f"{stem}_{kind}.tif").is_file()


def test_run_json_records_the_run(processed, oracle_weights: Path) -> None:
    record = json.loads(processed.run_json_path.read_text())
    assert record["cracksurvey_version"] == __version__
    assert record["model"]["model_id"] == "oracle-dark-pixels"
    assert record["model"]["sha256"] == hash_file(oracle_weights)
    assert record["model"]["threshold_px"] == 4.0
    assert record["model"]["threshold_source"] == "model card"
    config = ProcessConfig.from_dict(record["config"])
    assert config.tiling.tile_px == 160 and config.cpp.patch_px == 16
    assert config.survey.crs == UTM33 and config.model.weights == str(oracle_weights)
    root = Path(record["survey_dir"])
    for entry in record["inputs"]["images"]:
        assert entry["sha256"] == hash_file(root / entry["image"])
    assert {f["path"] for f in record["inputs"]["files"]} == {
        "survey.yaml",
        "images.csv",
        "buildings.gpkg",
    }
    assert {"discover", "model", "engine", "vectorize", "cpp", "write", "total"} <= set(
        record["timings_s"]
    )
    statuses = {i["image"]: i for i in record["images"]}
    assert set(statuses) == {
        "drone.png",
        "facade_gsd.jpg",
        "facade_plane.png",
        "facade_world.png",
        "nothing.png",
        "ortho.tif",
    }
    assert all(
        i["status"] == "ok" and i["precision"] == "fp32" and i["n_tiles"] == 1
        for i in statuses.values()
    )
    started = pd.Timestamp(record["started_utc"])
    assert started.tzinfo is not None and pd.Timestamp(record["finished_utc"]) >= started
    assert record["n_cracks"] == 6 and record["n_images_failed"] == 0
    assert processed.exit_code == 0


# --------------------------------------------------------------------------------------------
# Cracks across tile borders
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "polyline",
    [[(4, 6), (140, 180)], [(6, 5), (90, 120), (20, 180)]],
    ids=["straight", "bent"],
)
def test_crack_crossing_tile_borders_is_one_feature(
    tmp_path: Path, oracle_weights: Path, polyline
) -> None:
    gsd_m = 0.002
    root = tmp_path / "survey"
    image = crack_array((150, 190), polyline=polyline)
    make_geotiff(root / "wall.tif", image, Affine(gsd_m, 0, 0, 0, -gsd_m, 150 * gsd_m))
    write_images_csv(
        root / "images.csv", [{"image": "wall.tif", "building_id": "W", "facade_id": "W-1"}]
    )
    summary = process_survey(root, weights=oracle_weights, overrides=FAST, synchronous=True)
    assert summary.images[0].n_tiles == 5 * 6  # core 32 px: the crack crosses many borders
    cracks = gpd.read_file(summary.gpkg_path, layer="cracks")
    expected_px = sum(
        math.hypot(r1 - r0, c1 - c0) for (r0, c0), (r1, c1) in zip(polyline, polyline[1:])
    )
    assert len(cracks) == 1
    assert cracks["length_m"].iloc[0] == pytest.approx(expected_px * gsd_m, rel=0.02)
    assert cracks["n_junctions"].iloc[0] == 0


# --------------------------------------------------------------------------------------------
# Bad inputs, output folder
# --------------------------------------------------------------------------------------------
def corrupt_tile(path: Path) -> None:
    """Overwrite the compressed bytes of one TIFF tile: the header stays valid and complete."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(data))


def make_bad_input_survey(root: Path) -> Path:
    images = root / "images"
    gsd = Affine(0.002, 0, 0, 0, -0.002, 64 * 0.002)
    make_geotiff(images / "good.tif", crack_array((64, 64)), gsd)
    truncated = make_geotiff(
        images / "truncated.tif",
        crack_array((64, 64)),
        gsd,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    )
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 2 // 3])
    (images / "empty.png").write_bytes(b"")
    rgba = np.concatenate([crack_array((64, 64)), np.full((1, 64, 64), 255, np.uint8)])
    rgba[3, :, :8] = 0  # a transparent strip: nodata, skipped
    make_image(images / "rgba.png", rgba)
    sixteen = crack_array((64, 64), dtype="uint16", width_px=3)
    sixteen[:, :, 32:] = np.where(sixteen[:, :, 32:] > 0, 60000, 0)
    make_geotiff(images / "sixteen.tif", sixteen, gsd)
    make_image(images / "nogeo.png", crack_array((64, 64)))
    corrupt = make_geotiff(
        images / "corrupt.tif",
        crack_array((64, 64)),
        gsd,
        tiled=True,
        blockxsize=16,
        blockysize=16,
        compress="deflate",
    )
    corrupt_tile(corrupt)
    write_images_csv(
        root / "images.csv",
        [
            {"image": name, "building_id": "B", "gsd_mm": 2}
            for name in (
                "good.tif",
                "truncated.tif",
                "empty.png",
                "rgba.png",
                "sixteen.tif",
                "corrupt.tif",
            )
        ],
    )
    return root


def test_bad_inputs_fail_alone_with_one_line(tmp_path: Path, oracle_weights: Path) -> None:
    root = make_bad_input_survey(tmp_path / "survey")
    with pytest.warns(CrackSurveyWarning) as caught:
        summary = process_survey(root, weights=oracle_weights, overrides=FAST, synchronous=True)
    assert sorted(str(w.message).split(":")[0] for w in caught) == [
        "1 of 4 cracks are not assigned to a building (building_id empty); give their images "
        "a building_id in images.csv or add their footprints to the buildings layer",
        "images/nogeo.png",
    ]
    outcomes = {o.image: o for o in summary.images}
    expected_errors = {
        "truncated.tif": "images/truncated.tif: truncated",
        "empty.png": "images/empty.png: the file is empty (0 bytes)",
        "corrupt.tif": "corrupt.tif",
    }
    for name, start in expected_errors.items():
        outcome = outcomes[name]
        assert outcome.status == "error", name
        assert start in outcome.message and "\n" not in outcome.message
        assert outcome.line().startswith("error ")
    assert "cannot be decoded" in outcomes["corrupt.tif"].message
    for name in ("good.tif", "rgba.png", "sixteen.tif", "nogeo.png"):
        assert outcomes[name].status == "ok", (name, outcomes[name].message)
        assert outcomes[name].n_cracks == 1, name
    assert outcomes["rgba.png"].valid_px == 64 * 56  # the transparent strip is nodata
    assert math.isnan(outcomes["nogeo.png"].total_length_m)
    assert summary.exit_code == 1
    # failed images leave no rasters; the others keep theirs and their layers
    rasters = sorted(p.name for p in (summary.out_dir / "rasters").iterdir())
    assert rasters == sorted(
        f"{s}_{k}.tif"
        for s in ("good", "rgba", "sixteen", "nogeo")
        for k in ("distance", "mask", "semantics")
    )
    record = json.loads(summary.run_json_path.read_text())
    assert record["n_images_failed"] == 3 and record["status"] == "some images failed"
    assert {i["image"]: i["status"] for i in record["images"]}["corrupt.tif"] == "error"
    building = summary.buildings.set_index("building_id").loc["B"]
    assert building["n_images_failed"] == 3 and building["n_images"] == 3


def test_malformed_images_csv_refuses_the_run(tmp_path: Path, oracle_weights: Path) -> None:
    root = tmp_path / "survey"
    make_geotiff(root / "images" / "a.tif", crack_array(), None)
    (root / "images.csv").write_text("image,building_id\na.tif,B1,extra\n")
    with pytest.raises(ConfigError) as error:
        process_survey(root, weights=oracle_weights, overrides=FAST, synchronous=True)
    assert "images.csv line 2: 3 fields but the header has 2" in str(error.value)
    assert "\n" not in str(error.value)
    assert not (root / "cracksurvey").exists()


@pytest.mark.filterwarnings("ignore:.*not assigned to a building:UserWarning")
def test_previous_run_is_refused_unless_overwrite(tmp_path: Path, oracle_weights: Path) -> None:
    root = tmp_path / "survey"
    make_geotiff(root / "a.tif", crack_array(), Affine(0.05, 0, X0, 0, -0.05, Y0), UTM33)
    out = tmp_path / "out"
    process_survey(root, out_dir=out, weights=oracle_weights, overrides=FAST, synchronous=True)
    stale = out / "rasters" / "gone_mask.tif"
    stale.write_bytes(b"from an image that is no longer in the survey")
    notes = out / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(OutputExistsError, match=r"out already holds a previous run .*--overwrite"):
        process_survey(root, out_dir=out, weights=oracle_weights, overrides=FAST, synchronous=True)
    summary = process_survey(
        root, out_dir=out, weights=oracle_weights, overrides=FAST, synchronous=True, overwrite=True
    )
    assert summary.exit_code == 0 and not stale.exists() and notes.read_text() == "mine"
    assert summary.images[0].n_cracks == 1


@pytest.mark.filterwarnings("ignore:.*not assigned to a building:UserWarning")
def test_threshold_override_reaches_the_engine(tmp_path: Path, oracle_weights: Path) -> None:
    root = tmp_path / "survey"
    make_geotiff(root / "a.tif", crack_array(), Affine(0.05, 0, X0, 0, -0.05, Y0), UTM33)
    overrides = {**FAST, "model": {"precision": "fp32", "threshold_px": 25.0}}
    summary = process_survey(root, weights=oracle_weights, overrides=overrides, synchronous=True)
    assert summary.record["model"]["threshold_px"] == 25.0
    assert summary.record["model"]["threshold_source"] == "config"
    with rasterio.open(summary.out_dir / "rasters" / "a_mask.tif") as ds:
        assert (ds.read(1) == 1).all()  # the oracle's distance is <= 20 px everywhere


def test_no_crack_anywhere_still_writes_every_layer(tmp_path: Path, oracle_weights: Path) -> None:
    root = tmp_path / "survey"
    blank = np.full((3, 24, 32), 200, np.uint8)
    make_image(root / "images" / "wall.png", blank)
    (root / "survey.yaml").write_text(f"survey: {{crs: '{UTM33}'}}\n")
    write_images_csv(
        root / "images.csv",
        [
            {
                "image": "wall.png",
                "building_id": "B",
                "facade_id": "B-N",
                "gsd_mm": 4,
                "base_x0": X0,
                "base_y0": Y0,
                "base_x1": X0 + 1,
                "base_y1": Y0,
                "base_z": 10,
            }
        ],
    )
    summary = process_survey(root, weights=oracle_weights, overrides=FAST, synchronous=True)
    assert summary.exit_code == 0 and summary.n_cracks == 0
    assert {n: i["features"] for n, i in summary.layers.items()} == {
        "cracks": 0,
        "crack_branches": 0,
        "images": 1,
        "buildings": 1,
        "cracks_3d": 0,
    }
    cracks = gpd.read_file(summary.gpkg_path, layer="cracks")
    assert {"length_m", "width_max_mm", "building_id"} <= set(cracks.columns)
    assert cracks.crs.name == "cracksurvey facade B-N"
    building = summary.buildings.iloc[0]
    assert building["n_cracks"] == 0 and building["total_length_m"] == 0.0
    assert building["imaged_area_m2"] == pytest.approx(24 * 32 * 0.004**2)
    assert building["crack_density_m_per_m2"] == 0.0
