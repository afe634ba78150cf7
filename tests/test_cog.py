"""Distance and mask rasters are valid Cloud-Optimized GeoTIFFs, checked with GDAL's own tools.

A map GeoTIFF larger than one 512-px COG block (so the COG has overviews), with a nodata
band along its left edge, and a PNG georeferenced by a world file and a .prj are processed
with the oracle model. Each output must pass ``rio_cogeo.cogeo.cog_validate`` without
warnings, and ``gdalinfo`` must report: COG layout, overviews, the nodata value (NaN for
distances, 255 for masks), and the input's size, transform and CRS. Nodata input pixels must
stay nodata in the outputs (and in their overviews), and yield no crack.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from conftest import UTM33, UTM33_ORIGIN, crack_array, make_geotiff, make_world_image
from gis_helpers import process_oracle, save_oracle
from rio_cogeo.cogeo import cog_validate

X0, Y0 = UTM33_ORIGIN
BIG = (700, 640)  # rows, cols: > 512 px, so GDAL's COG driver builds an overview
NODATA_COLS = 100  # left band of the big image that is nodata
BIG_TRANSFORM = Affine(0.02, 0, X0, 0, -0.02, Y0)
SMALL_TRANSFORM = Affine(0.05, 0, X0 + 20, 0, -0.05, Y0)
INPUT_NODATA = 255


@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("cog")
    images = base / "survey" / "images"
    # a crack from the nodata band (where it is not visible: nodata) across the valid part
    big = crack_array(BIG, polyline=[(50, 20), (650, 620)], width_px=3)
    big[:, :, :NODATA_COLS] = INPUT_NODATA
    make_geotiff(
        images / "big.tif",
        big,
        BIG_TRANSFORM,
        UTM33,
        nodata=INPUT_NODATA,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    make_world_image(images / "small.png", crack_array(), SMALL_TRANSFORM, UTM33)
    summary = process_oracle(
        base / "survey",
        save_oracle(base),
        expect_warnings=True,
        overrides={"tiling": {"tile_px": 448, "halo_px": 64}},
    )
    return summary


def gdalinfo(path) -> dict:
    result = subprocess.run(
        ["gdalinfo", "-json", str(path)], capture_output=True, text=True, check=True
    )
    assert "Warning" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("image", ["big", "small"])
@pytest.mark.parametrize("kind", ["distance", "mask"])
def test_outputs_are_valid_cogs_georeferenced_like_the_input(processed, image, kind) -> None:
    path = processed.out_dir / "rasters" / f"{image}_{kind}.tif"
    valid, errors, warnings = cog_validate(str(path), strict=True)
    assert valid and not errors and not warnings, (errors, warnings)
    info = gdalinfo(path)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    band = info["bands"][0]
    assert band["type"] == ("Float32" if kind == "distance" else "Byte")
    if kind == "distance":
        assert str(band["noDataValue"]).lower() == "nan"  # gdalinfo -json writes "NaN"
    else:
        assert band["noDataValue"] == 255
    rows, cols = BIG if image == "big" else (24, 32)
    transform = BIG_TRANSFORM if image == "big" else SMALL_TRANSFORM
    assert info["size"] == [cols, rows]
    assert info["geoTransform"] == pytest.approx(list(transform.to_gdal()), abs=1e-9)
    assert info["coordinateSystem"]["wkt"].startswith('PROJCRS["WGS 84 / UTM zone 33N"')
    assert info["stac"]["proj:epsg"] == 32633
    if image == "big":  # larger than one block: overviews, as a COG must have
        assert [o["size"] for o in band["overviews"]] == [[cols // 2, rows // 2]]


def test_nodata_input_stays_nodata_and_yields_no_crack(processed) -> None:
    rasters = processed.out_dir / "rasters"
    with rasterio.open(rasters / "big_distance.tif") as ds:
        distance = ds.read(1)
        overview = ds.read(1, out_shape=(BIG[0] // 2, BIG[1] // 2))
    with rasterio.open(rasters / "big_mask.tif") as ds:
        mask = ds.read(1)
        mask_overview = ds.read(1, out_shape=(BIG[0] // 2, BIG[1] // 2))
    assert np.isnan(distance[:, :NODATA_COLS]).all()
    assert not np.isnan(distance[:, NODATA_COLS:]).any()
    assert (mask[:, :NODATA_COLS] == 255).all() and (mask[:, NODATA_COLS:] != 255).all()
    assert np.isnan(overview[:, : NODATA_COLS // 2]).all()
    assert set(np.unique(mask_overview)) <= {0, 1, 255}  # nearest: no blended classes
    assert (mask_overview[:, : NODATA_COLS // 2] == 255).all()
    big = {o.image: o for o in processed.images}["big.tif"]
    assert big.valid_px == BIG[0] * (BIG[1] - NODATA_COLS)
    cracks = pyogrio.read_dataframe(processed.gpkg_path, layer="cracks")
    xmin = cracks[cracks["image"] == "big.tif"].total_bounds[0]
    assert xmin >= X0 + NODATA_COLS * 0.02  # nothing in the nodata band


def test_window_reader_gives_nan_for_nodata(processed, tmp_path) -> None:
    """The gap bridging's window reader: the distance COG's NaN nodata stays NaN, and a
    raster with a numeric nodata value reads NaN there too (float32 either way)."""
    from cracksurvey.io.outputs import read_band_window

    window = read_band_window(processed.out_dir / "rasters" / "big_distance.tif")(0, 700, 90, 110)
    assert window.dtype == np.float32 and window.shape == (700, 20)
    assert np.isnan(window[:, :10]).all() and not np.isnan(window[:, 10:]).any()
    path = tmp_path / "numeric.tif"
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=3,
        width=4,
        count=1,
        dtype="int16",
        nodata=5,
        transform=SMALL_TRANSFORM,
        crs=UTM33,
    ) as ds:
        ds.write(data, 1)
    got = read_band_window(path)(1, 3, 0, 4)
    expected = data[1:3].astype(np.float32)
    expected[expected == 5] = np.nan
    np.testing.assert_array_equal(got, expected)
