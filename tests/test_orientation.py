"""Photos stored rotated or mirrored (EXIF orientation) are read upright, as viewers show them."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from PIL import Image, ImageOps

from cracksurvey.io.raster import RasterSource, describe_raster, stored_window

REPO = Path(__file__).resolve().parents[1]


def _save_jpeg(path: Path, image: Image.Image, orientation: int | None) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    # quality 100 without chroma subsampling: nearly lossless, so GDAL's and PIL's decodes agree
    image.save(path, quality=100, subsampling=0, exif=exif)
    return path


def _pattern(rows: int = 48, cols: int = 80) -> Image.Image:
    """An image that looks different under each of the eight orientations."""
    r, c = np.mgrid[0:rows, 0:cols]
    array = np.stack([r * 255 // rows, c * 255 // cols, np.zeros_like(r)]).astype(np.uint8)
    array[:, 4:12, 6:30] = 255  # a white bar near the top-left corner
    return Image.fromarray(array.transpose(1, 2, 0))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reads_are_upright_for_every_exif_orientation(tmp_path, orientation):
    path = _save_jpeg(tmp_path / "photo.jpg", _pattern(), orientation)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im)).transpose(2, 0, 1).astype(int)
    header = describe_raster(path)
    assert header.orientation == orientation
    assert (header.height, header.width) == expected.shape[1:]
    with RasterSource(path) as source:
        assert (source.height, source.width) == expected.shape[1:]
        whole = source.read(0, header.height, 0, header.width).astype(int)
        assert np.abs(whole - expected).mean() < 2  # two JPEG decoders, nearly lossless file
        window = source.read(5, 21, 9, 40).astype(int)
        assert np.array_equal(window, whole[:, 5:21, 9:40])
        small = source.read_decimated(header.height // 4, header.width // 4).astype(int)
        blocks = whole.reshape(3, header.height // 4, 4, header.width // 4, 4).mean(axis=(2, 4))
        assert np.abs(small - blocks).max() <= 2


def test_stored_window_inverts_every_orientation():
    stored = np.arange(6 * 10).reshape(1, 6, 10)
    from cracksurvey.io.raster import upright

    for orientation in range(1, 9):
        up = upright(stored, orientation)
        height, width = up.shape[1:]
        r0, r1, c0, c1 = stored_window(orientation, height, width, 1, 4, 2, 5)
        assert np.array_equal(upright(stored[:, r0:r1, c0:c1], orientation), up[:, 1:4, 2:5])


def test_a_world_file_keeps_the_stored_grid(tmp_path):
    """Georeferencing describes the stored grid: the EXIF tag is then ignored."""
    path = _save_jpeg(tmp_path / "ortho.jpg", _pattern(), 6)
    path.with_suffix(".jgw").write_text("0.01\n0\n0\n-0.01\n1000.005\n2000.005\n")
    header = describe_raster(path)
    assert header.orientation == 1 and (header.height, header.width) == (48, 80)


@pytest.mark.slow
def test_a_photo_stored_rotated_gives_the_upright_photos_crack_layer(tmp_path):
    """The example façade's crop stored rotated with its EXIF tag, and the same pixels turned
    upright by hand (numpy) and saved losslessly: the same crack layer, to the last digit, in
    the façade frame (x along the façade, y up)."""
    from cracksurvey.io.raster import open_quietly
    from cracksurvey.process import process_survey

    src = REPO / "examples" / "survey" / "images" / "B02_north_facade.jpg"
    with Image.open(src) as im:
        crop = im.crop((0, 0, 640, 448)).convert("RGB")
    for name in ("rotated", "upright"):
        (tmp_path / name / "images").mkdir(parents=True)
        (tmp_path / name / "images.csv").write_text(
            f"image,building_id,facade_id,gsd_mm\nnorth.{'jpg' if name == 'rotated' else 'png'}"
            ",B02,B02-north,3.0\n"
        )
    # stored turned 90° anticlockwise; EXIF orientation 6 says "turn it clockwise to view"
    rotated = _save_jpeg(
        tmp_path / "rotated" / "images" / "north.jpg",
        crop.transpose(Image.Transpose.ROTATE_90),
        6,
    )
    with open_quietly(rotated) as ds:  # the stored grid, as GDAL decodes it
        stored = ds.read()
    assert stored.shape == (3, 640, 448)
    upright = np.rot90(stored, k=-1, axes=(1, 2)).transpose(1, 2, 0)  # clockwise
    Image.fromarray(np.ascontiguousarray(upright)).save(
        tmp_path / "upright" / "images" / "north.png"
    )
    layers = {}
    for name in ("rotated", "upright"):
        out = tmp_path / f"out-{name}"
        process_survey(
            tmp_path / name,
            out_dir=out,
            overrides={"model": {"precision": "fp32"}},
            synchronous=True,
        )
        listed = gpd.list_layers(out / "cracks.gpkg")
        layer = next(n for n in listed["name"] if n.startswith("cracks") and "3d" not in n)
        layers[name] = gpd.read_file(out / "cracks.gpkg", layer=layer)
    got, want = layers["rotated"], layers["upright"]
    assert len(want) > 5 and len(got) == len(want)
    assert np.allclose(got["length_m"].sort_values(), want["length_m"].sort_values(), atol=1e-9)
    assert np.allclose(got.total_bounds, want.total_bounds, atol=1e-9)
    # the crack layer's frame is the upright façade: taller than wide here is wrong
    assert want.total_bounds[2] > want.total_bounds[3]


def test_training_reads_a_rotated_photo_upright_when_its_mask_is_drawn_upright(tmp_path):
    """Annotation tools show photos upright: a mask drawn there has the upright shape, which the
    stored grid cannot have. The training reader turns such an image to match its mask."""
    from cracksurvey.train.data import load_samples

    upright = np.full((48, 80, 3), 200, np.uint8)
    upright[20:23, 5:75] = 20  # a dark horizontal crack, upright
    mask = np.zeros((48, 80), np.uint8)
    mask[20:23, 5:75] = 255
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir()
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 80 x 48 stored
    _save_jpeg(tmp_path / "train" / "images" / "wall.jpg", stored, 6)
    Image.fromarray(mask).save(tmp_path / "train" / "masks" / "wall.png")
    (sample,) = load_samples(tmp_path, "train")
    assert sample.image.shape == (3, 48, 80)
    assert sample.image[:, 20:23, 10:70].mean() < 60 and sample.image[:, 30:40].mean() > 150
