"""Survey discovery from real files in tmp_path: georeferencing, bad inputs, contradictions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from affine import Affine
from conftest import (
    SHAPE,
    UTM33,
    UTM33_ORIGIN,
    crack_array,
    make_buildings,
    make_geotiff,
    make_image,
    make_survey,
    make_world_image,
    write_images_csv,
    write_survey_yaml,
)
from pyproj import CRS

from cracksurvey.errors import ConfigError, CrackSurveyWarning
from cracksurvey.georef import facade_id_from_crs, gsd_transform, same_crs
from cracksurvey.io.survey_files import discover_survey, hash_file, read_image_file
from cracksurvey.survey import IMAGES_CSV_COLUMNS

H, W = SHAPE
X0, Y0 = UTM33_ORIGIN
MAP = Affine(0.05, 0, X0, 0, -0.05, Y0)
UTM = CRS.from_user_input(UTM33)


def by_name(survey):  # type: ignore[no-untyped-def]
    return {r.name: r for r in survey.images}


# --- the georeferencing cases, from files -----------------------------------------------------


def test_all_georeferencing_cases(tmp_path: Path) -> None:
    root = make_survey(tmp_path / "s", pixel_image=True)
    with pytest.warns(CrackSurveyWarning, match=r"images/nothing.png: .*processed in pixel units"):
        survey = discover_survey(root)
    images = by_name(survey)
    assert list(images) == sorted(images)
    assert all(r.status == "ok" for r in survey.images) and not survey.failed_images

    ortho = images["ortho.tif"]
    assert ortho.georef.kind == "map" and same_crs(ortho.georef.crs, UTM)
    assert ortho.georef.transform.almost_equals(MAP)
    assert ortho.georef.pixel_size_m == pytest.approx(0.05)
    assert (ortho.width, ortho.height, ortho.band_count, ortho.dtype) == (W, H, 3, "uint8")
    assert ortho.building_id == "B1" and ortho.facade_id is None

    drone = images["drone.png"]  # PNG + .pgw + .prj
    assert drone.georef.kind == "map" and same_crs(drone.georef.crs, UTM)
    assert drone.georef.transform.almost_equals(MAP, precision=1e-6)
    assert "drone.pgw" in drone.georef.source and "drone.prj" in drone.georef.source

    jpg = images["facade_gsd.jpg"]  # JPG + gsd in images.csv
    assert jpg.georef.kind == "facade" and jpg.georef.crs.is_engineering
    assert jpg.georef.transform == gsd_transform(2.0, H)
    assert facade_id_from_crs(jpg.georef.crs) == "B1-N" and jpg.building_id == "B1"

    plane = images["facade_plane.png"]  # PNG + gsd + façade plane
    assert plane.georef.kind == "facade_world" and plane.georef.pixel_size_m == pytest.approx(0.004)
    assert plane.georef.plane.start_xy == (X0 + 10, Y0 - 5)
    assert plane.georef.plane.base_z == 412.5 and same_crs(plane.georef.plane.crs, UTM)

    world = images["facade_world.png"]  # world file, no .prj, declared façade -> local frame
    assert world.georef.kind == "facade" and world.georef.pixel_size_m == pytest.approx(0.003)

    nothing = images["nothing.png"]
    assert nothing.georef.kind == "pixel" and nothing.georef.crs is None
    assert nothing.georef.pixel_size_m is None and "pixel units" in nothing.warnings[0]

    assert survey.image_dir == root / "images"
    assert set(survey.buildings["building_id"]) == {"B1", "B2"}
    assert survey.config.survey.crs == UTM33
    assert survey.config_sources == (str(root / "survey.yaml"),)
    assert ortho.sha256 == hashlib.sha256((root / "images/ortho.tif").read_bytes()).hexdigest()


def test_images_in_the_survey_dir_itself_and_no_optional_files(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.TIF", crack_array(), MAP, UTM33)
    make_image(tmp_path / ".hidden.png", crack_array())
    (tmp_path / "notes.txt").write_text("x")
    survey = discover_survey(tmp_path)
    assert [r.name for r in survey.images] == ["a.TIF"]
    assert survey.image_dir == tmp_path and survey.buildings is None
    assert survey.images_csv_path is None and survey.survey_yaml_path is None
    assert survey.config_sources == ()


def test_aux_xml_crs_with_world_file(tmp_path: Path) -> None:
    path = make_world_image(tmp_path / "images" / "a.jpg", crack_array(), MAP)
    (tmp_path / "images" / "a.jpg.aux.xml").write_text(
        f"<PAMDataset><SRS>{UTM.to_wkt('WKT1_GDAL')}</SRS></PAMDataset>"
    )
    record = discover_survey(tmp_path).images[0]
    assert record.name == path.name and record.georef.kind == "map"
    assert same_crs(record.georef.crs, UTM)


def test_world_file_without_prj_uses_survey_crs_for_undeclared_images(tmp_path: Path) -> None:
    make_world_image(tmp_path / "images" / "d.jpg", crack_array(), MAP)
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"crs": UTM33}})
    record = discover_survey(tmp_path).images[0]
    assert record.georef.kind == "map" and "survey.yaml" in record.georef.source


def test_survey_gsd_applies_to_unreferenced_images(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", crack_array())
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"gsd_mm": 1.5}})
    record = discover_survey(tmp_path).images[0]
    assert record.georef.kind == "facade" and record.georef.pixel_size_m == pytest.approx(0.0015)


def test_images_csv_accepts_image_dir_prefix_semicolons_and_bom(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", crack_array())
    (tmp_path / "images.csv").write_text("\ufeffimage;gsd_mm\nimages/a.png;2.5\n\n", "utf-8")
    record = discover_survey(tmp_path).images[0]
    assert record.georef.pixel_size_m == pytest.approx(0.0025)


def test_hash_file_streams(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "f.bin").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert hash_file(tmp_path / "f.bin") == expected
    assert hash_file(tmp_path / "f.bin", chunk_bytes=7) == expected


# --- bad images: one record fails, the others run ---------------------------------------------


def _truncate(path: Path, fraction: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(
    ("name", "damage", "expected"),
    [
        (
            "empty.tif",
            lambda p: p.write_bytes(b""),
            "images/empty.tif: the file is empty (0 bytes)",
        ),
        ("trunc.tif", _truncate, "images/trunc.tif: truncated: its TIFF data blocks need"),
        (
            "junk.tif",
            lambda p: p.write_bytes(b"definitely not a TIFF" * 10),
            "images/junk.tif: cannot read the raster header",
        ),
        ("trunc.png", _truncate, "images/trunc.png: truncated: no PNG end chunk"),
        (
            "trunc.jpg",
            lambda p: _truncate(p, 0.8),
            "images/trunc.jpg: truncated: no JPEG end marker",
        ),
    ],
)
def test_unreadable_images_become_error_records(
    tmp_path: Path, name: str, damage: Callable[[Path], object], expected: str
) -> None:
    make_geotiff(tmp_path / "images" / "good.tif", crack_array(), MAP, UTM33)
    path = tmp_path / "images" / name
    if name.endswith(".tif"):
        make_geotiff(
            path, crack_array((64, 64)), MAP, UTM33, tiled=True, blockxsize=16, blockysize=16
        )
    else:
        make_image(path, crack_array((64, 64)))
    damage(path)
    survey = discover_survey(tmp_path)
    bad = by_name(survey)[name]
    assert bad.status == "error" and bad.georef is None
    assert bad.message.startswith(expected)
    assert "\n" not in bad.message
    assert any(word in bad.message for word in ("copy it again", "export"))
    assert bad.sha256 == hash_file(path)
    assert by_name(survey)["good.tif"].status == "ok"
    assert survey.failed_images == (bad,)


def test_geographic_raster_is_an_error_record_with_the_fix(tmp_path: Path) -> None:
    make_geotiff(
        tmp_path / "ll.tif", crack_array(), Affine(1e-6, 0, 13.39, 0, -1e-6, 42.35), "EPSG:4326"
    )
    make_geotiff(tmp_path / "ok.tif", crack_array(), MAP, UTM33)
    images = by_name(discover_survey(tmp_path))
    assert images["ll.tif"].status == "error"
    assert "reproject it to a projected CRS" in images["ll.tif"].message
    assert "EPSG:32633" in images["ll.tif"].message
    assert images["ok.tif"].status == "ok"


def test_malformed_sidecars_are_error_records(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png", crack_array())
    (tmp_path / "a.pgw").write_text("0.5\n0\n0\n")
    make_world_image(tmp_path / "b.png", crack_array(), MAP)
    (tmp_path / "b.prj").write_text("this is not a CRS")
    images = by_name(discover_survey(tmp_path))
    assert images["a.png"].message.startswith("a.pgw: not a valid world file")
    assert images["b.png"].message.startswith("b.prj: not a CRS definition")


def test_read_image_file_reports_header_fields(tmp_path: Path) -> None:
    path = make_geotiff(
        tmp_path / "a.tif", crack_array(bands=1, dtype="uint16"), MAP, UTM33, nodata=0
    )
    image_file = read_image_file(path)
    header = image_file.header
    assert (header.width, header.height, header.band_count, header.dtype) == (W, H, 1, "uint16")
    assert header.nodata == 0 and image_file.error is None
    assert image_file.sources.raster_transform == MAP
    assert same_crs(image_file.sources.raster_crs, UTM)


# --- malformed images.csv ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file,gsd_mm\na.png,2\n", "missing column 'image'"),
        (
            "image,gsd\na.png,2\n",
            "unknown column 'gsd' (did you mean 'gsd_mm'?); allowed columns: "
            + ", ".join(IMAGES_CSV_COLUMNS),
        ),
        ("image,gsd_mm\na.png,two\n", "line 2: gsd_mm='two' is not a number"),
        ('image,gsd_mm\na.png,"2,5"\n', "not a number (use a dot as decimal separator)"),
        ("image,gsd_mm\na.png,-2\n", "line 2: gsd_mm=-2 must be > 0"),
        (
            "image,gsd_mm\na.png,2\na.png,2\n",
            "line 3: image 'a.png' is already described on line 2",
        ),
        ("image,gsd_mm\na.png,2,3\n", "line 2: 3 fields but the header has 2"),
        ("image,gsd_mm,gsd_mm\na.png,2,2\n", "column 'gsd_mm' appears twice"),
        ("image,base_x0,base_y0\na.png,1,2\n", "façade plane columns incomplete"),
        (
            "image,gsd_mm," + ",".join(IMAGES_CSV_COLUMNS[4:]) + "\na.png,2,1,2,,4,5\n",
            "line 2: façade plane incomplete, empty base_x1",
        ),
        ("", "empty"),
    ],
)
def test_malformed_images_csv(tmp_path: Path, text: str, expected: str) -> None:
    make_image(tmp_path / "images" / "a.png", crack_array())
    (tmp_path / "images.csv").write_text(text)
    with pytest.raises(ConfigError) as info:
        discover_survey(tmp_path)
    assert str(tmp_path / "images.csv") in str(info.value)
    assert expected in str(info.value)


def test_images_csv_naming_a_missing_image(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "wall_north.png", crack_array())
    write_images_csv(tmp_path / "images.csv", [{"image": "wall_nrth.png", "gsd_mm": 2}])
    with pytest.raises(
        ConfigError,
        match=r"image 'wall_nrth.png' does not exist in images/ "
        r"\(did you mean 'wall_north.png'\?\)",
    ):
        discover_survey(tmp_path)


def test_images_csv_naming_an_image_twice_via_different_spellings(tmp_path: Path) -> None:
    make_image(tmp_path / "images" / "a.png", crack_array())
    write_images_csv(tmp_path / "images.csv", [{"image": "a.png"}, {"image": "images/a.png"}])
    with pytest.raises(ConfigError, match="'a.png' is already described on line 2"):
        discover_survey(tmp_path)


# --- contradictions: errors before any work ---------------------------------------------------


def test_gsd_contradicting_the_geotiff(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.tif", crack_array(), MAP, UTM33)
    write_images_csv(tmp_path / "images.csv", [{"image": "a.tif", "gsd_mm": 52}])
    with pytest.raises(
        ConfigError,
        match=r"a.tif: images.csv gsd_mm=52 disagrees with the "
        r"raster's pixel size 50 mm by more than 1%",
    ):
        discover_survey(tmp_path)


def test_plane_for_a_map_image(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.tif", crack_array(), MAP, UTM33)
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"crs": UTM33}})
    write_images_csv(
        tmp_path / "images.csv",
        [
            {
                "image": "a.tif",
                "base_x0": X0,
                "base_y0": Y0,
                "base_x1": X0 + 5,
                "base_y1": Y0,
                "base_z": 10,
            }
        ],
    )
    with pytest.raises(ConfigError, match="façade plane but the image is map-georeferenced"):
        discover_survey(tmp_path)


def test_plane_without_survey_crs(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png", crack_array())
    write_images_csv(
        tmp_path / "images.csv",
        [
            {
                "image": "a.png",
                "gsd_mm": 2,
                "base_x0": X0,
                "base_y0": Y0,
                "base_x1": X0 + 5,
                "base_y1": Y0,
                "base_z": 10,
            }
        ],
    )
    with pytest.raises(ConfigError, match="survey.yaml has no survey.crs"):
        discover_survey(tmp_path)


def test_survey_crs_contradicting_raster_crs(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.tif", crack_array(), MAP, UTM33)
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"crs": "EPSG:32632"}})
    with pytest.raises(ConfigError, match="contradicts survey.yaml crs EPSG:32632"):
        discover_survey(tmp_path)


def test_all_contradictions_are_listed_at_once(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "images" / "a.tif", crack_array(), MAP, UTM33)
    make_image(tmp_path / "images" / "b.png", crack_array())
    make_buildings(tmp_path / "buildings.geojson", {"B1": [(0, 0), (1, 0), (1, 1)]})
    write_images_csv(
        tmp_path / "images.csv",
        [
            {"image": "a.tif", "gsd_mm": 10, "building_id": "B1"},
            {"image": "b.png", "gsd_mm": 2, "building_id": "B11"},
            {"image": "c.png", "gsd_mm": 2},
        ],
    )
    with pytest.raises(ConfigError) as info:
        discover_survey(tmp_path)
    message = str(info.value)
    assert message.startswith("survey inputs are contradictory (3 problems), nothing was processed")
    assert "image 'c.png' does not exist" in message
    assert "building_id 'B11' is not in" in message and "(did you mean 'B1'?)" in message
    assert "images/a.tif: images.csv gsd_mm=10 disagrees" in message


def test_one_facade_with_two_planes(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        make_image(tmp_path / name, crack_array())
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"crs": UTM33}})
    plane = {"base_x0": X0, "base_y0": Y0, "base_x1": X0 + 5, "base_y1": Y0, "base_z": 10}
    write_images_csv(
        tmp_path / "images.csv",
        [
            {"image": "a.png", "facade_id": "F", "gsd_mm": 2, **plane},
            {"image": "b.png", "facade_id": "F", "gsd_mm": 2, **plane, "base_z": 11},
        ],
    )
    with pytest.raises(ConfigError, match="facade_id 'F' has a different façade plane"):
        discover_survey(tmp_path)


def test_same_stem_images_collide(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png", crack_array())
    make_image(tmp_path / "a.jpg", crack_array())
    with pytest.raises(ConfigError, match="same name without"):
        discover_survey(tmp_path)


def test_buildings_without_building_id_column(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.tif", crack_array(), MAP, UTM33)
    make_buildings(
        tmp_path / "buildings.gpkg", {"B1": [(0, 0), (1, 0), (1, 1)]}, id_column="bldg_id"
    )
    with pytest.raises(
        ConfigError,
        match=r"buildings.gpkg: no 'building_id' column \(did you "
        r"mean 'bldg_id'\?\)",
    ):
        discover_survey(tmp_path)


def test_unknown_key_in_survey_yaml(tmp_path: Path) -> None:
    make_geotiff(tmp_path / "a.tif", crack_array(), MAP, UTM33)
    write_survey_yaml(tmp_path / "survey.yaml", {"survey": {"crs": UTM33, "gsd": 2}})
    with pytest.raises(
        ConfigError,
        match=r"survey.yaml: unknown key 'survey.gsd' \(did you mean "
        r"'gsd_mm'\?\)",
    ):
        discover_survey(tmp_path)


def test_no_images_and_ambiguous_image_dirs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no images found"):
        discover_survey(tmp_path)
    make_image(tmp_path / "images" / "a.png", crack_array())
    make_image(tmp_path / "b.png", crack_array())
    with pytest.raises(ConfigError, match="images both in images/ and in the survey directory"):
        discover_survey(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        discover_survey(tmp_path / "nope")
