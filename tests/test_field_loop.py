"""The field loop: process, correct the cracks in QGIS, fine-tune on the corrections.

A façade image (façade frame from a gsd, 2 mm per pixel) has two dark lines: crack A (kept)
and a false crack B (deleted in QGIS). The oracle stand-in model finds both. In QGIS itself
(headless, Debian's bindings; skipped, saying why, without them) B is deleted, a missed crack
C is drawn with a width, and a ``reviewed`` layer gets one polygon. ``cracksurvey finetune``
then trains two steps and writes the targets it trained on; they must equal the edits pixel
for pixel. The other tests edit the GeoPackage with pyogrio (fast) for the bad inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from conftest import crack_array, make_image, run_cli, save_oracle, write_images_csv
from gis_helpers import process_oracle, run_qgis_script

from cracksurvey.errors import CrackSurveyWarning, DatasetError
from cracksurvey.georef import PIXEL_TRANSFORM, Georef, facade_crs
from cracksurvey.model import ModelCard, read_card, sha256_file
from cracksurvey.train.edits import crack_widths_mm, place_edits
from cracksurvey.train.survey_samples import (
    SurveySample,
    SurveySource,
    build_sample,
    rasterize_centrelines,
    rasterize_crack_body,
)

ROWS, COLS, GSD_MM = 96, 128, 2.0
CRACK_A = [(20, 10), (20, 100)]  # (row, col): kept
CRACK_B = [(10, 110), (80, 110)]  # a false crack: deleted
CRACK_C = ((60, 20), (60, 90))  # missed: drawn in QGIS
WIDTH_C_PX = 2.6
REVIEWED = (8, 88, 4, 124)  # rows 8-87, cols 4-123 (pixel edges)
EDIT_SCRIPT = Path(__file__).with_name("qgis_edit.py")


def facade_xy(col: float, row: float) -> tuple[float, float]:
    """Façade-frame x, y (metres) of a pixel position (gsd_transform: y up from the bottom)."""
    return col * GSD_MM / 1000, (ROWS - row) * GSD_MM / 1000


def centre_line(p0: tuple[int, int], p1: tuple[int, int]) -> shapely.LineString:
    """The line through the centres of pixels (row, col) p0 and p1, in the façade frame."""
    return shapely.LineString([facade_xy(c + 0.5, r + 0.5) for r, c in (p0, p1)])


def reviewed_box() -> shapely.Polygon:
    row0, row1, col0, col1 = REVIEWED
    return shapely.box(*facade_xy(col0, row1), *facade_xy(col1, row0))


def expected_classes() -> np.ndarray:
    """The target raster the edits must give, computed without the package's rasterisers."""
    classes = np.full((ROWS, COLS), 255, np.uint8)
    row0, row1, col0, col1 = REVIEWED
    classes[row0:row1, col0:col1] = 0
    rows, cols = np.mgrid[0:ROWS, 0:COLS] + 0.5
    (r0, c0), (r1, c1) = CRACK_C
    t = np.clip((cols - (c0 + 0.5)) / (c1 - c0), 0, 1)  # horizontal segment
    near = np.hypot(cols - (c0 + 0.5 + t * (c1 - c0)), rows - (r0 + 0.5)) <= WIDTH_C_PX / 2
    classes[near & (classes == 0)] = 1
    classes[r0, c0 : c1 + 1] = 2
    (ra, ca0), (_, ca1) = CRACK_A
    classes[ra, ca0 : ca1 + 1] = 2  # a 1 px wide dark line: 2 mm, body = centreline
    return classes


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(survey folder, its processed output folder, oracle weights), processed once."""
    base = tmp_path_factory.mktemp("field")
    survey = base / "wall"
    image = np.minimum(
        crack_array((ROWS, COLS), polyline=CRACK_A), crack_array((ROWS, COLS), polyline=CRACK_B)
    )
    make_image(survey / "images" / "facade.png", image)
    write_images_csv(
        survey / "images.csv",
        [{"image": "facade.png", "building_id": None, "facade_id": "F1", "gsd_mm": GSD_MM}],
    )
    weights = save_oracle(base)
    with pytest.warns(CrackSurveyWarning, match="not assigned to a building"):
        summary = process_oracle(survey, weights)
    assert summary.layers["cracks"]["features"] == 2
    return survey, summary.out_dir, weights


@pytest.fixture
def out(processed, tmp_path: Path) -> Path:
    """A fresh copy of the processed output folder (each test edits its own)."""
    return Path(shutil.copytree(processed[1], tmp_path / "wall-out"))


def crack_ids(gpkg: Path) -> dict[str, int]:
    """crack_id of crack A ('a', horizontal) and B ('b', vertical)."""
    cracks = pyogrio.read_dataframe(gpkg, layer="cracks")
    bounds = cracks.geometry.bounds
    horizontal = (bounds.maxx - bounds.minx) > (bounds.maxy - bounds.miny)
    return {
        "a": int(cracks.crack_id[horizontal].iloc[0]),
        "b": int(cracks.crack_id[~horizontal].iloc[0]),
    }


def edit(
    gpkg: Path,
    *,
    delete: tuple[int, ...] = (),
    add: list[dict] | None = None,
    reviewed: list[shapely.Geometry] | None = None,
    reviewed_crs: object = "layer",
    cracks_crs: object = "layer",
) -> None:
    """Edit cracks.gpkg with pyogrio as QGIS would (the fast way, for the bad-input tests)."""
    cracks = pyogrio.read_dataframe(gpkg, layer="cracks")
    layer_crs = cracks.crs
    cracks = cracks[~cracks.crack_id.isin(delete)]
    if add:
        drawn = gpd.GeoDataFrame(
            [{k: v for k, v in a.items() if k != "geometry"} for a in add],
            geometry=[shapely.MultiLineString([a["geometry"]]) for a in add],
            crs=layer_crs,
        )
        cracks = pd.concat([cracks, drawn], ignore_index=True)
    if cracks_crs != "layer":
        cracks = cracks.set_crs(cracks_crs, allow_override=True)
    pyogrio.write_dataframe(cracks, gpkg, layer="cracks", layer_options={"OVERWRITE": "YES"})
    if reviewed is not None:
        crs = layer_crs if reviewed_crs == "layer" else reviewed_crs
        frame = gpd.GeoDataFrame({"note": ["checked"] * len(reviewed)}, geometry=reviewed, crs=crs)
        pyogrio.write_dataframe(
            frame,
            gpkg,
            layer="reviewed",
            geometry_type="Polygon",
            layer_options={"OVERWRITE": "YES"},
        )


def finetune(out: Path, run: Path, weights: Path, *extra: str):
    return run_cli(
        "finetune",
        out,
        "--run",
        run,
        "--weights",
        weights,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--crop-px",
        "32",
        "--threads",
        "1",
        *extra,
    )


def read_target(run: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(run / "samples" / "wall" / "facade_target.tif") as ds:
        return ds.read(1), ds.transform


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------------------------
# In QGIS itself


def test_edits_made_in_qgis_give_the_samples_pixel_for_pixel(processed, out, tmp_path) -> None:
    _, _, weights = processed
    gpkg = out / "cracks.gpkg"
    ids = crack_ids(gpkg)
    spec = {
        "gpkg": str(gpkg),
        "layer": "cracks",
        "delete": {"crack_id": [ids["b"]]},
        "add": [
            {"wkt": centre_line(*CRACK_C).wkt, "attributes": {"width_mean_mm": WIDTH_C_PX * GSD_MM}}
        ],
        "reviewed": {"layer": "reviewed", "crs": "layer", "polygons": [reviewed_box().wkt]},
    }
    (tmp_path / "edits.json").write_text(json.dumps(spec))
    qgis = run_qgis_script(EDIT_SCRIPT, tmp_path / "edits.json")
    assert qgis["cracks"] == {
        "deleted": 1,
        "added": 1,
        "features": 2,
        "crs": "cracksurvey facade F1",
    }
    assert qgis["reviewed"]["features"] == 1

    run = tmp_path / "run"
    result = finetune(out, run, weights, "--json")
    assert result.exit_code == 0, result.output
    classes, transform = read_target(run)
    assert transform == Affine(0.002, 0, 0, 0, -0.002, ROWS * 0.002)  # the whole image
    expected = expected_classes()
    assert (classes[CRACK_B[0][0] : CRACK_B[1][0] + 1, CRACK_B[0][1]] == 0).all()  # deleted
    assert (classes[CRACK_C[0][0], CRACK_C[0][1] : CRACK_C[1][1] + 1] == 2).all()  # drawn
    np.testing.assert_array_equal(classes, expected)

    card = read_card(run / "model.safetensors")
    lineage = card.lineage
    assert lineage["parent"]["sha256"] == sha256_file(weights)
    assert lineage["parent"]["model_id"] == "oracle-dark-pixels"
    (survey,) = lineage["surveys"]
    assert survey["survey"] == "wall" and survey["images"] == ["facade.png"]
    assert survey["geopackage_sha256"] == sha256_file(gpkg)
    assert {k: survey["edits"][k] for k in ("kept", "drawn", "deleted")} == {
        "kept": 1,
        "drawn": 1,
        "deleted": 1,
    }
    samples = lineage["samples"]
    assert samples["reviewed_px"] == int((expected != 255).sum())
    assert samples["centreline_px"] == int((expected == 2).sum())
    assert samples["body_px"] == int(np.isin(expected, (1, 2)).sum())
    assert samples["crops_trained"] == 4
    threshold = lineage["threshold"]  # the oracle: exact on the image, not on drawn crack C
    assert threshold["parent_px"] == 4.0 and card.threshold_px == threshold["threshold_px"]
    assert 0 < threshold["reviewed_quality_parent"] < 1 and threshold["reviewed_quality"] > 0
    assert json.loads(result.stdout)["sha256"] == card.sha256 != lineage["parent"]["sha256"]


# --------------------------------------------------------------------------------------------
# Bad inputs: one clear line each


def test_a_reviewed_layer_in_another_crs_is_refused(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[shapely.box(0, 0, 100, 100)], reviewed_crs="EPSG:3857")
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "layer reviewed is in EPSG:3857" in line and "'cracksurvey facade F1'" in line
    assert "CRS of the crack layer" in line


def test_a_crack_layer_saved_in_another_crs_is_refused(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()], cracks_crs=facade_crs("other"))
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "layer cracks is in 'cracksurvey facade other'" in line
    assert "images are in 'cracksurvey facade F1'" in line


def test_an_empty_or_missing_reviewed_layer_is_refused(processed, out, tmp_path) -> None:
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "no 'reviewed' layer" in line and "create a polygon layer named reviewed" in line
    edit(out / "cracks.gpkg", reviewed=[])
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "layer reviewed has no polygons" in line


def test_a_drawn_line_without_width_gets_the_default_with_a_warning(
    processed, out, tmp_path
) -> None:
    edit(out / "cracks.gpkg", add=[{"geometry": centre_line(*CRACK_C)}], reviewed=[reviewed_box()])
    result = finetune(out, tmp_path / "run", processed[2], "--default-width-mm", "5.2")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "1 crack(s) have no width" in warning[0]
    assert "5.2 mm" in warning[0] and "width_mean_mm" in warning[0]
    classes, _ = read_target(tmp_path / "run")
    expected = expected_classes()
    expected[CRACK_B[0][0] : CRACK_B[1][0] + 1, CRACK_B[0][1]] = 2  # B kept this time
    np.testing.assert_array_equal(classes, expected)


def test_moved_images_name_the_expected_path_and_the_fix(processed, out, tmp_path) -> None:
    survey, _, weights = processed
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    record = json.loads((out / "run.json").read_text())
    record["survey_dir"] = str(tmp_path / "moved-away")
    (out / "run.json").write_text(json.dumps(record))
    line = one_error_line(finetune(out, tmp_path / "run", weights))
    assert f"expected {tmp_path / 'moved-away' / 'images' / 'facade.png'}" in line
    assert f"--survey-dir {out}=NEW_SURVEY_DIR" in line
    result = finetune(out, tmp_path / "run", weights, "--survey-dir", f"{out}={survey}")
    assert result.exit_code == 0, result.output


def test_a_survey_moved_with_its_output_folder_is_found(processed, tmp_path) -> None:
    survey, out, weights = processed
    moved = Path(shutil.copytree(survey, tmp_path / "elsewhere" / "wall"))
    out = moved / out.name  # SURVEY/cracksurvey, moved along
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    record = json.loads((out / "run.json").read_text())
    record["survey_dir"] = str(tmp_path / "gone")
    (out / "run.json").write_text(json.dumps(record))
    assert finetune(out, tmp_path / "run", weights).exit_code == 0
    lineage = read_card(tmp_path / "run" / "model.safetensors").lineage
    assert lineage["surveys"][0]["survey_dir"] == str(moved.resolve())


def test_a_changed_image_is_refused(processed, out, tmp_path) -> None:
    survey, _, weights = processed
    copy = Path(
        shutil.copytree(survey, tmp_path / "wall", ignore=shutil.ignore_patterns("cracksurvey"))
    )
    image = crack_array((ROWS, COLS), polyline=CRACK_A)
    make_image(copy / "images" / "facade.png", image)
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    line = one_error_line(finetune(out, tmp_path / "run", weights, "--survey-dir", str(copy)))
    assert "the image changed since it was processed" in line


def test_reviewed_areas_smaller_than_a_crop_are_refused(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[shapely.box(*facade_xy(10, 40), *facade_xy(30, 20))])
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "no reviewed area holds a 32 x 32 pixel crop (the largest holds 20 x 20)" in line


def test_the_parent_threshold_can_be_kept(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    assert finetune(out, tmp_path / "run", processed[2], "--threshold", "keep").exit_code == 0
    threshold = read_card(tmp_path / "run" / "model.safetensors").lineage["threshold"]
    assert threshold["threshold_px"] == threshold["parent_px"] == 4.0
    assert threshold["chosen"] == "the parent's, kept"


def test_a_run_folder_is_not_overwritten(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    assert finetune(out, tmp_path / "run", processed[2]).exit_code == 0
    line = one_error_line(finetune(out, tmp_path / "run", processed[2]))
    assert "already holds a fine-tuned model; pass --overwrite" in line


def test_a_second_generation_keeps_the_whole_lineage(processed, out, tmp_path) -> None:
    edit(out / "cracks.gpkg", reviewed=[reviewed_box()])
    assert finetune(out, tmp_path / "one", processed[2]).exit_code == 0
    first = read_card(tmp_path / "one" / "model.safetensors")
    assert finetune(out, tmp_path / "two", tmp_path / "one" / "model.safetensors").exit_code == 0
    second = read_card(tmp_path / "two" / "model.safetensors").lineage
    assert second["parent"]["sha256"] == first.sha256
    assert second["parent"]["lineage"]["parent"]["model_id"] == "oracle-dark-pixels"


def test_cards_without_lineage_still_load() -> None:
    from cracksurvey.model import default_weights_path

    assert "lineage" not in json.loads(default_weights_path().with_suffix(".json").read_text())
    assert read_card(default_weights_path()).lineage == {}
    assert ModelCard("t", "unet16", 1.0, False).lineage == {}


# --------------------------------------------------------------------------------------------
# The pure parts


def test_centrelines_are_one_pixel_wide_and_8_connected() -> None:
    from scipy import ndimage

    line = shapely.LineString([(0.5, 0.5), (30.2, 11.7), (31.5, 40.5)])
    burnt = rasterize_centrelines([line], (48, 40))
    labels, n = ndimage.label(burnt, structure=np.ones((3, 3)))
    assert n == 1
    # one pixel per row or per column of each segment: no 2x2 block anywhere
    blocks = burnt[:-1, :-1] & burnt[1:, :-1] & burnt[:-1, 1:] & burnt[1:, 1:]
    assert not blocks.any()
    assert burnt[0, 0] and burnt[11, 30] and burnt[40, 31]
    # parts outside the raster are clipped, never wrapped
    assert rasterize_centrelines([shapely.LineString([(-5, 2.5), (3.5, 2.5)])], (4, 4))[
        2
    ].tolist() == [True, True, True, True]


def test_crack_body_is_the_line_buffered_by_half_its_width() -> None:
    line = shapely.LineString([(5.5, 5.5), (5.5, 15.5)])
    body = rasterize_crack_body([line], [4.2], (20, 12))
    assert body[10].tolist() == [False] * 3 + [True] * 5 + [False] * 4  # cols 3-7: |d| <= 2.1
    assert rasterize_crack_body([line], [float("nan")], (20, 12)).sum() == 11  # centreline


def test_widths_come_from_width_mm_then_width_mean_mm_then_the_default() -> None:
    frame = pd.DataFrame(
        {"width_mean_mm": [1.5, np.nan, 2.0, None, 0.0], "width_mm": [None, 3.0, 4.0, None, None]}
    )
    widths, missing = crack_widths_mm(frame, default_width_mm=0.7)
    assert widths.tolist() == [1.5, 3.0, 4.0, 0.7, 0.7]
    assert missing.tolist() == [False, False, False, True, True]


@pytest.mark.parametrize("kind", ["map", "pixel"])
def test_edits_land_on_the_same_pixels_in_every_frame(kind: str) -> None:
    from pyproj import CRS

    if kind == "map":
        transform = Affine(0.05, 0, 368_000.0, 0, -0.05, 4_685_000.0)
        georef = Georef("map", transform, CRS.from_epsg(32633), 0.05, 1.0)
    else:
        transform = PIXEL_TRANSFORM
        georef = Georef("pixel", transform, None, None)
    to_map = lambda col, row: transform @ (col, row)  # noqa: E731
    line = shapely.LineString([to_map(10.5, 30.5), to_map(50.5, 30.5)])
    area = shapely.Polygon([to_map(c, r) for c, r in ((5, 20), (60, 20), (60, 40), (5, 40))])
    edits = place_edits("s", "a.tif", georef, 100, 80, [line], [150.0], [area], margin_px=3)
    assert edits is not None and edits.window == (17, 43, 2, 63)
    sample = build_sample(np.zeros((3, 26, 61), np.uint8), np.ones((26, 61), bool), edits)
    rows, cols = np.nonzero(sample.centreline)
    assert set(rows + 17) == {30} and (cols + 2).min() == 10 and (cols + 2).max() == 50
    reviewed_rows, reviewed_cols = np.nonzero(sample.reviewed)
    assert (reviewed_rows + 17).min() == 20 and (reviewed_rows + 17).max() == 39
    assert (reviewed_cols + 2).min() == 5 and (reviewed_cols + 2).max() == 59
    body_rows = set(np.nonzero(sample.body)[0] + 17)
    assert body_rows == ({29, 30, 31} if kind == "map" else {30})  # 3 px wide; no mm in px


def test_crops_lie_inside_reviewed_areas_and_find_the_cracks() -> None:
    rows, cols = 60, 80
    image = np.zeros((3, rows, cols), np.uint8)
    image[0] = np.arange(rows)[:, None]
    image[1] = np.arange(cols)[None, :]
    reviewed = np.zeros((rows, cols), bool)
    reviewed[5:30, 10:70] = True
    reviewed[30:50, 30:46] = True  # an L shape
    centreline = np.zeros((rows, cols), bool)
    centreline[12, 40:60] = True
    sample = SurveySample(
        "s/a",
        (0, rows, 0, cols),
        image,
        np.zeros((rows, cols), np.float32),
        centreline,
        centreline,
        reviewed,
    )
    rng = np.random.default_rng(0)
    for share in (0.0, 1.0):
        source = SurveySource([sample], crack_share=share)
        assert source.check(16) > 0
        for _ in range(200):
            crop, _, body = source.crop(16, rng)
            r0, c0 = int(crop[0, 0, 0]), int(crop[1, 0, 0])
            assert reviewed[r0 : r0 + 16, c0 : c0 + 16].all()
            if share == 1.0:
                assert body.any()
    with pytest.raises(DatasetError, match="the largest holds 25 x 25"):
        SurveySource([sample]).check(32)
