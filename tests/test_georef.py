"""Georeferencing: façade CRS, world files, façade plane, and the resolution rules."""

from __future__ import annotations

import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import SHAPE, UTM33, crack_array, make_geotiff, make_world_image
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning

from cracksurvey.errors import ConfigError, GeoreferenceError
from cracksurvey.georef import (
    PIXEL_TRANSFORM,
    FacadePlane,
    Georef,
    GeorefSources,
    facade_crs,
    facade_id_from_crs,
    facade_to_world,
    gsd_transform,
    parse_world_file,
    resolve_georef,
    same_crs,
    world_to_facade,
)

UTM = CRS.from_user_input(UTM33)
MAP = Affine(0.05, 0, 368_000, 0, -0.05, 4_685_000)
H, W = SHAPE


def sources(**kw: object) -> GeorefSources:
    return GeorefSources(width=W, height=H, **kw)  # type: ignore[arg-type]


# --- façade CRS -------------------------------------------------------------------------------


def test_facade_crs_is_a_local_engineering_crs_in_metres() -> None:
    crs = facade_crs("B12-N")
    assert crs.is_engineering and not crs.is_projected and not crs.is_geographic
    assert crs.to_epsg() is None  # not a fake EPSG code
    assert [a.unit_name for a in crs.axis_info] == ["metre", "metre"]
    assert [a.direction for a in crs.axis_info] == ["east", "north"]
    assert facade_id_from_crs(crs) == "B12-N"
    assert facade_id_from_crs(UTM) is None
    assert not same_crs(crs, facade_crs("B12-S"))


def test_facade_crs_escapes_quotes_and_control_characters() -> None:
    crs = facade_crs('wall "A"\n2')
    assert facade_id_from_crs(crs) == 'wall "A" 2'


def test_facade_crs_round_trips_through_geotiff(tmp_path: Path) -> None:
    crs = facade_crs("façade-7")
    path = make_geotiff(
        tmp_path / "f.tif",
        np.zeros((4, 5), "uint8"),
        Affine(0.002, 0, 0, 0, -0.002, 0.008),
        crs.to_wkt(),
    )
    with rasterio.open(path) as src:
        back = CRS.from_wkt(src.crs.to_wkt())
    assert back.is_engineering
    assert facade_id_from_crs(back) == "façade-7"
    assert back.axis_info[0].unit_name == "metre"
    assert same_crs(back, crs)


def test_facade_crs_round_trips_through_geopackage(tmp_path: Path) -> None:
    import geopandas as gpd
    from shapely.geometry import LineString

    crs = facade_crs("F1")
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[LineString([(0, 0), (1, 2)])], crs=crs)
    frame.to_file(tmp_path / "c.gpkg", layer="cracks", engine="pyogrio")
    back = gpd.read_file(tmp_path / "c.gpkg", layer="cracks", engine="pyogrio").crs
    assert back.is_engineering and facade_id_from_crs(back) == "F1"


@pytest.mark.skipif(shutil.which("gdalsrsinfo") is None, reason="gdal-bin not installed")
def test_gdal_command_line_accepts_the_facade_wkt(tmp_path: Path) -> None:
    wkt = tmp_path / "f.wkt"
    wkt.write_text(facade_crs("F1").to_wkt())
    out = subprocess.run(["gdalsrsinfo", "-o", "wkt1", str(wkt)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'LOCAL_CS["cracksurvey facade F1"' in out.stdout


# --- transforms -------------------------------------------------------------------------------


def test_gsd_transform_puts_bottom_left_at_origin_and_y_up() -> None:
    t = gsd_transform(2.5, height=40)
    assert t @ (0, 40) == pytest.approx((0.0, 0.0))
    assert t @ (0, 0) == pytest.approx((0.0, 0.1))  # top-left is 0.1 m up
    assert t @ (8, 40) == pytest.approx((0.02, 0.0))


def test_world_file_parsing_matches_gdal(tmp_path: Path) -> None:
    transform = Affine(0.05, 0.01, 368_000.0, 0.02, -0.05, 4_685_000.0)
    path = make_world_image(tmp_path / "a.png", crack_array(), transform)
    parsed = parse_world_file(path.with_suffix(".pgw").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            gdal = src.transform
    assert parsed.almost_equals(gdal, precision=1e-6)
    assert parsed.almost_equals(transform, precision=1e-6)


@pytest.mark.parametrize("text", ["1\n0\n0\n-1\n5\n", "1 0 0 -1 5 x", "0 0 0 0 1 1", ""])
def test_bad_world_files_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_world_file(text)


# --- façade plane -----------------------------------------------------------------------------


def test_facade_to_world_known_points() -> None:
    plane = FacadePlane((100.0, 200.0), (106.0, 208.0), 50.0, UTM)  # 10 m long, 3-4-5
    X, Y, Z = facade_to_world([0.0, 10.0, 5.0], [0.0, 3.0, 1.5], plane)
    np.testing.assert_allclose(X, [100.0, 106.0, 103.0])
    np.testing.assert_allclose(Y, [200.0, 208.0, 204.0])
    np.testing.assert_allclose(Z, [50.0, 53.0, 51.5])


@settings(max_examples=60, deadline=None)
@given(
    x0=st.floats(300_000, 700_000),
    y0=st.floats(4_000_000, 5_000_000),
    angle=st.floats(0, 2 * math.pi),
    length=st.floats(0.5, 200),
    z=st.floats(-100, 3000),
    xs=st.lists(st.floats(-50, 250), min_size=1, max_size=20),
    ys=st.lists(st.floats(-5, 80), min_size=1, max_size=20),
)
def test_facade_points_lie_on_the_plane_and_round_trip(
    x0: float, y0: float, angle: float, length: float, z: float, xs: list[float], ys: list[float]
) -> None:
    end = (x0 + length * math.cos(angle), y0 + length * math.sin(angle))
    plane = FacadePlane((x0, y0), end, z, UTM)
    n = min(len(xs), len(ys))
    x, y = np.array(xs[:n]), np.array(ys[:n])
    X, Y, Z = facade_to_world(x, y, plane)
    # on the vertical plane through the base line: zero horizontal distance to it (< 1 cm)
    dx, dy = end[0] - x0, end[1] - y0
    distance = np.abs(dx * (Y - y0) - dy * (X - x0)) / math.hypot(dx, dy)
    assert np.all(distance < 0.01)
    np.testing.assert_allclose(np.hypot(X - x0, Y - y0), np.abs(x), atol=0.01)
    np.testing.assert_allclose(Z - z, y, atol=0.01)
    back_x, back_y, offset = world_to_facade(X, Y, Z, plane)
    np.testing.assert_allclose(back_x, x, atol=0.01)
    np.testing.assert_allclose(back_y, y, atol=0.01)
    np.testing.assert_allclose(offset, 0, atol=0.01)


def test_world_to_facade_measures_offset_from_plane() -> None:
    plane = FacadePlane((0.0, 0.0), (10.0, 0.0), 0.0, UTM)
    x, y, offset = world_to_facade(3.0, -2.0, 7.0, plane)
    assert (float(x), float(y), float(offset)) == (3.0, 7.0, 2.0)


@pytest.mark.parametrize(
    ("start", "end", "crs", "match"),
    [
        ((1.0, 1.0), (1.0, 1.001), UTM, "give two distinct base corners"),
        ((1.0, 1.0), (5.0, 1.0), CRS.from_epsg(4326), "not a projected CRS in metres"),
        ((1.0, 1.0), (5.0, 1.0), CRS.from_epsg(2263), "not a projected CRS in metres"),
        ((1.0, math.nan), (5.0, 1.0), UTM, "non-finite"),
    ],
)
def test_bad_planes_are_rejected(start, end, crs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GeoreferenceError, match=match):
        FacadePlane(start, end, 0.0, crs)


# --- resolution rules -------------------------------------------------------------------------


def test_map_from_projected_crs() -> None:
    g = resolve_georef(sources(raster_transform=MAP, raster_crs=UTM), name="a.tif")
    assert g.kind == "map" and same_crs(g.crs, UTM)
    assert g.pixel_size_m == pytest.approx(0.05) and g.metres_per_unit == 1.0
    assert g.units == "m" and g.transform == MAP


def test_map_in_us_feet_reports_metres() -> None:
    feet = CRS.from_epsg(2263)
    t = Affine(0.2, 0, 980_000, 0, -0.2, 200_000)
    g = resolve_georef(sources(raster_transform=t, raster_crs=feet), name="ny.tif")
    assert g.kind == "map" and g.units == "crs"
    assert g.metres_per_unit == pytest.approx(0.3048006)
    assert g.pixel_size_m == pytest.approx(0.2 * 0.3048006)


def test_geographic_crs_is_an_image_error_with_the_fix() -> None:
    t = Affine(1e-6, 0, 13.39, 0, -1e-6, 42.35)
    with pytest.raises(GeoreferenceError) as info:
        resolve_georef(sources(raster_transform=t, raster_crs=CRS.from_epsg(4326)), name="l.tif")
    message = str(info.value)
    assert message.startswith("l.tif: CRS EPSG:4326 is geographic")
    assert "reproject" in message and "EPSG:32633" in message  # the local UTM zone


def test_facade_from_gsd_only() -> None:
    g = resolve_georef(sources(), name="images/f.jpg", gsd_mm=2.0, facade_id="F")
    assert g.kind == "facade" and g.pixel_size_m == pytest.approx(0.002)
    assert g.transform == gsd_transform(2.0, H)
    assert facade_id_from_crs(g.crs) == "F"


def test_facade_id_defaults_to_image_stem() -> None:
    g = resolve_georef(sources(), name="images/wall.jpg", gsd_mm=2.0)
    assert facade_id_from_crs(g.crs) == "wall"


def test_survey_gsd_is_the_fallback_but_images_csv_wins() -> None:
    g = resolve_georef(sources(), name="f.jpg", survey_gsd_mm=3.0)
    assert g.kind == "facade" and g.pixel_size_m == pytest.approx(0.003)
    g = resolve_georef(sources(), name="f.jpg", gsd_mm=1.0, survey_gsd_mm=3.0)
    assert g.pixel_size_m == pytest.approx(0.001)


def test_pixel_units_when_nothing_is_known() -> None:
    g = resolve_georef(sources(), name="x.png")
    assert g == Georef(
        kind="pixel", transform=PIXEL_TRANSFORM, crs=None, pixel_size_m=None, source="none"
    )
    assert g.units == "px" and g.transform @ (3, 2) == (3.0, -2.0)


def test_world_file_without_crs_is_a_facade_frame_unless_survey_crs_says_map() -> None:
    t = Affine(0.003, 0, 0, 0, -0.003, 0.072)
    g = resolve_georef(sources(world_transform=t, world_file="f.pgw"), name="f.png")
    assert g.kind == "facade" and g.pixel_size_m == pytest.approx(0.003)
    g = resolve_georef(
        sources(world_transform=MAP, world_file="d.pgw"), name="d.png", survey_crs=UTM
    )
    assert g.kind == "map" and same_crs(g.crs, UTM) and "survey.yaml" in g.source
    g = resolve_georef(
        sources(world_transform=t, world_file="f.pgw"), name="f.png", survey_crs=UTM, facade_id="F"
    )
    assert g.kind == "facade"


def test_engineering_crs_in_millimetres_is_scaled_to_metres() -> None:
    mm = CRS.from_wkt(
        'ENGCRS["wall",EDATUM["wall"],CS[Cartesian,2],'
        'AXIS["x",east,ORDER[1],LENGTHUNIT["millimetre",0.001]],'
        'AXIS["y",north,ORDER[2],LENGTHUNIT["millimetre",0.001]]]'
    )
    t = Affine(2.0, 0, 0, 0, -2.0, 48.0)
    g = resolve_georef(sources(raster_transform=t, raster_crs=mm), name="w.tif")
    assert g.kind == "facade" and g.pixel_size_m == pytest.approx(0.002)
    assert g.transform.almost_equals(Affine(0.002, 0, 0, 0, -0.002, 0.048))


def test_own_facade_crs_keeps_its_id() -> None:
    t = Affine(0.002, 0, 0, 0, -0.002, 0.048)
    g = resolve_georef(sources(raster_transform=t, raster_crs=facade_crs("N-wall")), name="x.tif")
    assert g.kind == "facade" and facade_id_from_crs(g.crs) == "N-wall"


def test_facade_world_needs_a_scale_and_not_a_map() -> None:
    plane = FacadePlane((0.0, 0.0), (0.128, 0.0), 10.0, UTM)
    g = resolve_georef(sources(), name="p.png", gsd_mm=4.0, plane=plane)
    assert g.kind == "facade_world" and g.plane == plane and g.crs.is_engineering
    with pytest.raises(ConfigError, match="add its gsd_mm"):
        resolve_georef(sources(), name="p.png", plane=plane)
    with pytest.raises(
        ConfigError,
        match="p.tif: images.csv gives a façade plane but the image "
        "is map-georeferenced in EPSG:32633",
    ):
        resolve_georef(sources(raster_transform=MAP, raster_crs=UTM), name="p.tif", plane=plane)


@pytest.mark.parametrize(
    ("gsd_mm", "ok"), [(50.0, True), (50.4, True), (50.6, False), (5.0, False)]
)
def test_gsd_must_agree_with_raster_within_one_percent(gsd_mm: float, ok: bool) -> None:
    src = sources(raster_transform=MAP, raster_crs=UTM)
    if ok:
        assert resolve_georef(src, name="a.tif", gsd_mm=gsd_mm).pixel_size_m == pytest.approx(0.05)
    else:
        with pytest.raises(ConfigError, match=r"gsd_mm=.* disagrees with the raster's pixel"):
            resolve_georef(src, name="a.tif", gsd_mm=gsd_mm)


def test_survey_crs_contradicting_the_raster_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match="raster CRS EPSG:32633 contradicts survey.yaml crs EPSG:32632"
    ):
        resolve_georef(
            sources(raster_transform=MAP, raster_crs=UTM),
            name="a.tif",
            survey_crs=CRS.from_epsg(32632),
        )
    same = CRS.from_wkt(UTM.to_wkt("WKT1_ESRI"))
    assert (
        resolve_georef(
            sources(raster_transform=MAP, raster_crs=UTM), name="a.tif", survey_crs=same
        ).kind
        == "map"
    )


def test_sidecars_contradicting_the_raster_are_image_errors() -> None:
    other = MAP @ Affine.translation(10, 0)
    with pytest.raises(GeoreferenceError, match="world file a.tfw .* contradicts"):
        resolve_georef(
            sources(
                raster_transform=MAP, world_transform=other, world_file="a.tfw", raster_crs=UTM
            ),
            name="a.tif",
        )
    with pytest.raises(
        GeoreferenceError, match="a.prj .*EPSG:32632.* contradicts the raster's own CRS"
    ):
        resolve_georef(
            sources(
                raster_transform=MAP, raster_crs=UTM, prj_crs=CRS.from_epsg(32632), prj_file="a.prj"
            ),
            name="a.tif",
        )


def test_gcps_only_and_crs_without_transform_are_image_errors() -> None:
    with pytest.raises(GeoreferenceError, match="ground control points"):
        resolve_georef(sources(has_gcps=True, raster_crs=UTM), name="g.tif")
    with pytest.raises(GeoreferenceError, match="has a CRS .* but no transform"):
        resolve_georef(sources(prj_crs=UTM, prj_file="g.prj"), name="g.png")
