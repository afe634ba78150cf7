"""Shared fixtures: tiny synthetic survey inputs written to ``tmp_path``.

The helpers are plain functions so any test can import them::

    from conftest import make_geotiff, make_survey, UTM33

and build exactly the files it needs. All rasters are tiny (tens of pixels) to keep the suite fast.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from affine import Affine
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning

from cracksurvey.model import ModelCard, TernausNet, save_model


def pytest_sessionstart(session: pytest.Session) -> None:
    """The CPU kind and what runs on it, on the first line of every test run (also with ``-q``,
    so CI logs name the kind)."""
    import os

    from cracksurvey.predict import auto_precision, cpu_amx_supported, cpu_bf16_supported, cpu_kind

    capped = [
        f"{k}={os.environ[k]}"
        for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "NUMBA_CPU_NAME")
        if os.environ.get(k)
    ]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_line(
        f"cpu: {cpu_kind()}; torch kernels "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_bf16_supported()}, "
        f"AMX {cpu_amx_supported()}; precision auto -> {auto_precision('cpu')}"
        + (f"; capped: {' '.join(capped)}" if capped else "")
    )


#: A projected CRS in metres (WGS 84 / UTM 33N, central Italy) and an origin inside it.
UTM33 = "EPSG:32633"
UTM33_ORIGIN = (368_000.0, 4_685_000.0)

#: Default tiny image size (rows, cols).
SHAPE = (24, 32)


def crack_array(
    shape: tuple[int, int] = SHAPE,
    *,
    bands: int = 3,
    dtype: str = "uint8",
    polyline: Sequence[tuple[int, int]] | None = None,
    width_px: int = 1,
) -> np.ndarray:
    """A bright image of shape (bands, rows, cols) with a dark crack along ``polyline``.

    ``polyline`` is a list of (row, col) vertices; the default runs corner to corner. The crack
    is ``width_px`` wide (a square brush), value 0; the background is the dtype's 80 % level.
    """
    rows, cols = shape
    info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
    background = int(info.max * 0.8) if info else 0.8
    array = np.full((bands, rows, cols), background, dtype=dtype)
    if polyline is None:
        polyline = [(0, 0), (rows - 1, cols - 1)]
    half = width_px // 2
    for (r0, c0), (r1, c1) in zip(polyline, polyline[1:]):
        n = max(abs(r1 - r0), abs(c1 - c0)) + 1
        for r, c in zip(
            np.linspace(r0, r1, n).round().astype(int), np.linspace(c0, c1, n).round().astype(int)
        ):
            array[:, max(r - half, 0) : r + half + 1, max(c - half, 0) : c + half + 1] = 0
    return array


def make_geotiff(
    path: str | Path,
    array: np.ndarray,
    transform: Affine | None = None,
    crs: str | CRS | None = None,
    *,
    nodata: float | None = None,
    **profile: Any,
) -> Path:
    """Write ``array`` (bands, rows, cols) or (rows, cols) as a GeoTIFF; returns the path.

    ``transform=None`` and ``crs=None`` write an ungeoreferenced TIFF. ``crs`` may be any pyproj
    input or a WKT (e.g. ``facade_crs('F1').to_wkt()``). Extra ``profile`` keys go to rasterio
    (``tiled=True, blockxsize=16, ...``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    rio_crs = None
    if crs is not None:
        rio_crs = rasterio.crs.CRS.from_wkt(CRS.from_user_input(crs).to_wkt())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=array.shape[2],
            height=array.shape[1],
            count=array.shape[0],
            dtype=array.dtype,
            crs=rio_crs,
            transform=transform if transform is not None else Affine.identity(),
            nodata=nodata,
            **profile,
        ) as dst:
            dst.write(array)
    return path


def make_image(path: str | Path, array: np.ndarray) -> Path:
    """Write a plain PNG or JPEG (driver from the suffix), without any georeferencing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    driver = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[path.suffix.lower()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=array.shape[2],
            height=array.shape[1],
            count=array.shape[0],
            dtype=array.dtype,
        ) as dst:
            dst.write(array)
    for extra in path.parent.glob(path.name + ".aux.xml"):
        extra.unlink()
    return path


def write_world_file(
    image_path: str | Path, transform: Affine, *, suffix: str | None = None
) -> Path:
    """Write the world file of an image (centre-of-pixel convention); returns its path.

    ``suffix`` defaults to .pgw / .jgw / .tfw from the image suffix.
    """
    image_path = Path(image_path)
    if suffix is None:
        suffix = {".png": ".pgw", ".jpg": ".jgw", ".jpeg": ".jgw"}.get(
            image_path.suffix.lower(), ".tfw"
        )
    centre = transform @ Affine.translation(0.5, 0.5)
    values = (centre.a, centre.d, centre.b, centre.e, centre.c, centre.f)
    world = image_path.with_suffix(suffix)
    world.write_text("\n".join(repr(float(v)) for v in values) + "\n")
    return world


def write_prj(image_path: str | Path, crs: str | CRS) -> Path:
    """Write ``<image>.prj`` with the CRS as ESRI WKT (what GIS software writes)."""
    prj = Path(image_path).with_suffix(".prj")
    prj.write_text(CRS.from_user_input(crs).to_wkt("WKT1_ESRI"))
    return prj


def make_world_image(
    path: str | Path,
    array: np.ndarray,
    transform: Affine,
    crs: str | CRS | None = None,
    *,
    world_suffix: str | None = None,
) -> Path:
    """A PNG/JPEG with a world file and, if ``crs`` is given, a .prj."""
    path = make_image(path, array)
    write_world_file(path, transform, suffix=world_suffix)
    if crs is not None:
        write_prj(path, crs)
    return path


def write_images_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], *, columns: Sequence[str] | None = None
) -> Path:
    """Write images.csv; ``columns`` default to the keys of the rows in first-seen order.

    ``None`` values are written as empty cells.
    """
    path = Path(path)
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return path


def write_survey_yaml(path: str | Path, mapping: Mapping[str, Any]) -> Path:
    """Write a survey.yaml (or any config YAML) from a nested mapping."""
    path = Path(path)
    path.write_text(yaml.safe_dump(dict(mapping), sort_keys=False))
    return path


def make_buildings(
    path: str | Path,
    footprints: Mapping[str, Sequence[tuple[float, float]]],
    crs: str | CRS | None = UTM33,
    *,
    id_column: str = "building_id",
) -> Path:
    """Write a buildings layer (GeoPackage / GeoJSON / Shapefile from the suffix).

    ``footprints`` maps building id to a polygon ring of (x, y) vertices.
    """
    import geopandas as gpd
    from shapely.geometry import Polygon

    frame = gpd.GeoDataFrame(
        {id_column: list(footprints)},
        geometry=[Polygon(ring) for ring in footprints.values()],
        crs=crs,
    )
    frame.to_file(path, engine="pyogrio")
    return Path(path)


def box_ring(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """Rectangle ring for :func:`make_buildings`."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def make_survey(root: str | Path, *, pixel_image: bool = False) -> Path:
    """A complete tiny survey directory exercising the georeferencing cases.

    ``images/``:

    - ``ortho.tif``: map, GeoTIFF in EPSG:32633, 5 cm pixels, inside building ``B1``;
    - ``drone.png``: map, PNG + .pgw + .prj (EPSG:32633), 5 cm pixels;
    - ``facade_gsd.jpg``: façade frame from gsd_mm=2 in images.csv (building B1, façade B1-N);
    - ``facade_plane.png``: façade placed in the world: gsd_mm=4 and a plane (B2-E);
    - ``facade_world.png``: façade frame from a world file without .prj (façade B2-S);
    - ``nothing.png`` (only if ``pixel_image``): no georeferencing -> pixel units + warning.

    Also ``survey.yaml`` (survey.crs = EPSG:32633), ``images.csv`` and ``buildings.gpkg``
    (B1, B2).
    """
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True)
    x0, y0 = UTM33_ORIGIN
    map_transform = Affine(0.05, 0, x0, 0, -0.05, y0)
    make_geotiff(images / "ortho.tif", crack_array(), map_transform, UTM33)
    make_world_image(images / "drone.png", crack_array(), map_transform, UTM33)
    make_image(images / "facade_gsd.jpg", crack_array())
    make_image(images / "facade_plane.png", crack_array())
    make_world_image(
        images / "facade_world.png", crack_array(), Affine(0.003, 0, 0, 0, -0.003, SHAPE[0] * 0.003)
    )
    if pixel_image:
        make_image(images / "nothing.png", crack_array())
    write_survey_yaml(root / "survey.yaml", {"survey": {"crs": UTM33}})
    write_images_csv(
        root / "images.csv",
        [
            {"image": "ortho.tif", "building_id": "B1"},
            {"image": "facade_gsd.jpg", "building_id": "B1", "facade_id": "B1-N", "gsd_mm": 2},
            {
                "image": "facade_plane.png",
                "building_id": "B2",
                "facade_id": "B2-E",
                "gsd_mm": 4,
                "base_x0": x0 + 10,
                "base_y0": y0 - 5,
                "base_x1": x0 + 10.128,
                "base_y1": y0 - 5,
                "base_z": 412.5,
            },
            {"image": "facade_world.png", "building_id": "B2", "facade_id": "B2-S"},
        ],
        columns=[
            "image",
            "building_id",
            "facade_id",
            "gsd_mm",
            "base_x0",
            "base_y0",
            "base_x1",
            "base_y1",
            "base_z",
        ],
    )
    make_buildings(
        root / "buildings.gpkg",
        {"B1": box_ring(x0, y0 - 2, x0 + 2, y0), "B2": box_ring(x0 + 9, y0 - 8, x0 + 12, y0 - 5)},
    )
    return root


@pytest.fixture
def survey_dir(tmp_path: Path) -> Path:
    """A tiny survey with map, façade (gsd, world file) and façade-in-the-world images."""
    return make_survey(tmp_path / "survey")


# ---------------------------------------------------------------------------------------------
# The oracle stand-in model and shared fixtures of the process / CLI / cluster / resume tests.
#
# The oracle is a real TernausNet (unet16, width 1/16, body head) saved with ``save_model``,
# whose weights make it compute, per pixel, ``distance = relu(20 - 20 * relu(-mean of the
# normalised RGB))``: a dark pixel (a drawn crack) gets distance 0, a bright one 20, so the mask
# is exactly the drawn crack and the whole chain runs for real.

#: Small tiles (core 32 px, halo 64 px), fp32, small CPP patches: fast and deterministic.
FAST = {
    "model": {"precision": "fp32"},
    "tiling": {"tile_px": 160, "halo_px": 64},
    "cpp": {"patch_px": 16, "min_area_px": 3},
}


def oracle_model() -> TernausNet:
    """TernausNet whose output is a fixed function of the pixel darkness (module docstring)."""
    model = TernausNet("unet16", width=1 / 16, body_head=True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.encoder[0].weight[0, :, 1, 1] = -1.0 / 3.0  # darkness = -mean(normalised RGB)
        model.encoder[2].weight[0, 0, 1, 1] = 1.0  # passed on by the second conv of stage 1
        nf = model.final.in_channels  # dec1 sees cat([dec2 (nf channels, all 0), conv1])
        model.dec1[0].weight[0, nf, 1, 1] = 1.0
        model.final.weight[0, 0] = -20.0
        model.final.bias[0] = 20.0
        model.body.weight[0, 0] = 20.0  # crack body logit: +20 * darkness - 10
        model.body.bias[0] = -10.0
    return model.eval()


def save_oracle(directory: Path) -> Path:
    """Save the oracle with its card (threshold 4 px); returns the .safetensors path."""
    path = directory / "oracle.safetensors"
    card = ModelCard("oracle-dark-pixels", "unet16", 1 / 16, True, threshold_px=4.0)
    save_model(oracle_model(), card, path)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: the machine is shared and the tiny models run faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def oracle_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_oracle(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def weights(oracle_weights: Path) -> Path:
    """The oracle's weights (test modules with their own stand-in override this fixture)."""
    return oracle_weights


def run_cli(*args: str | Path) -> Any:
    """``cracksurvey ARGS`` through click's runner (a click Result)."""
    from click.testing import CliRunner

    from cracksurvey.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
