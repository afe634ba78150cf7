"""The façade-semantics step of an image's prediction, and how it filters the skeleton.

Runs in the client process once per image, on a block-averaged copy of the image (a few
hundred pixels on a side: about half a second on one core): no data (GDAL nodata, alpha,
constant fill touching the border) and, where :func:`cracksurvey.semantics.applies`, wall /
opening / background from the semantics model. The class raster is written as a small COG beside
the distance map and cached with the prediction. The measure stage keeps the skeleton pixels on
the configured surfaces (:func:`keep_pixels`) and names each crack's surface.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from numpy.typing import NDArray

from cracksurvey.config import ProcessConfig
from cracksurvey.io.cog import TiledRasterWriter
from cracksurvey.io.raster import RasterSource, describe_raster
from cracksurvey.model import ModelCard, TernausNet, load_model
from cracksurvey.predict import percentile_scale, prepare_bands, valid_pixels
from cracksurvey.semantics import (
    CLASSES,
    NODATA,
    WALL,
    applies,
    classify,
    constant_fill,
    default_semantics_path,
    downscale_factor,
    near_nodata,
    wall_pixels,
)
from cracksurvey.survey import ImageRecord

__all__ = [
    "SemanticsModel",
    "SemanticsRaster",
    "keep_pixels",
    "predict_semantics",
    "read_semantics",
]

log = logging.getLogger(__name__)


class SemanticsModel:
    """The semantics network, loaded on first use (once per run)."""

    def __init__(self, weights: str | None) -> None:
        self.path = weights or default_semantics_path()
        self._loaded: tuple[TernausNet, ModelCard] | None = None

    def get(self) -> tuple[TernausNet, ModelCard]:
        if self._loaded is None:
            self._loaded = load_model(self.path)
        return self._loaded

    @property
    def sha256(self) -> str:
        from cracksurvey.model import read_card

        return read_card(self.path).sha256


@dataclass(frozen=True)
class SemanticsRaster:
    """An image's class raster and how its cells map to image pixels."""

    classes: NDArray[np.uint8]
    cell_rows: float  # image rows per cell
    cell_cols: float
    applied: str  # "model", or why not ("off", "map image", "close-up")

    def at(self, rows: NDArray[np.integer], cols: NDArray[np.integer]) -> NDArray[np.uint8]:
        """Class of the cells holding image pixels ``(rows, cols)``."""
        r = (np.asarray(rows, np.float64) / self.cell_rows).astype(np.int64)
        c = (np.asarray(cols, np.float64) / self.cell_cols).astype(np.int64)
        inside = (r >= 0) & (c >= 0) & (r < self.classes.shape[0]) & (c < self.classes.shape[1])
        out = np.full(r.shape, NODATA, np.uint8)
        out[inside] = self.classes[r[inside], c[inside]]
        return out

    def near_nodata_at(
        self, rows: NDArray[np.integer], cols: NDArray[np.integer]
    ) -> NDArray[np.bool_]:
        """Whether pixels lie in or next to a no-data cell (a crack there follows its border)."""
        near = near_nodata(self.classes)
        r = (np.asarray(rows, np.float64) / self.cell_rows).astype(np.int64)
        c = (np.asarray(cols, np.float64) / self.cell_cols).astype(np.int64)
        inside = (r >= 0) & (c >= 0) & (r < near.shape[0]) & (c < near.shape[1])
        out = np.ones(r.shape, bool)
        out[inside] = near[r[inside], c[inside]]
        return out

    def pixels(self, code: int, *, height: int, width: int) -> int:
        """Image pixels whose cell has class ``code`` (cells at the edges count partially)."""
        rows = np.diff(np.minimum(np.arange(self.classes.shape[0] + 1) * self.cell_rows, height))
        cols = np.diff(np.minimum(np.arange(self.classes.shape[1] + 1) * self.cell_cols, width))
        return int(round(float((np.outer(rows, cols) * (self.classes == code)).sum())))


def predict_semantics(
    record: ImageRecord, config: ProcessConfig, model: SemanticsModel, out_path: Path
) -> SemanticsRaster:
    """Classify an image's cells and write them as a COG at ``out_path``."""
    georef = record.georef
    assert georef is not None
    header = describe_raster(record.path)
    gsd_mm = georef.pixel_size_m * 1000.0 if georef.pixel_size_m else None
    factor = downscale_factor(header.height, header.width, gsd_mm)
    rows, cols = max(1, math.ceil(header.height / factor)), max(1, math.ceil(header.width / factor))
    with RasterSource(header.path) as source:
        small = source.read_decimated(rows, cols)
    valid = valid_pixels(small, nodata=header.nodata, alpha_band=header.alpha_band)
    scale = None if small.dtype == np.uint8 else percentile_scale(small, valid=valid)
    rgb, valid = prepare_bands(
        small, nodata=header.nodata, alpha_band=header.alpha_band, scale=scale
    )
    invalid = ~valid
    scfg = config.semantics
    if scfg.fill == "auto":
        invalid |= constant_fill(rgb, tolerance=scfg.fill_tolerance)
    if scfg.mode == "off":
        applied = "off"
    elif scfg.mode == "auto" and georef.kind == "map":
        applied = "map image"
    elif not applies(header.height, header.width, gsd_mm):
        applied = "close-up"
    else:
        applied = "model"
    if applied == "model":
        net, card = model.get()
        # the crack model's precision, as it resolves on this CPU (the semantics run here)
        classes = classify(net, card, rgb, invalid=invalid, precision=config.model.precision)
    else:
        classes = np.where(invalid, NODATA, WALL).astype(np.uint8)
    raster = SemanticsRaster(classes, header.height / rows, header.width / cols, applied)
    transform = georef.transform @ Affine.scale(raster.cell_cols, raster.cell_rows)
    with TiledRasterWriter(
        out_path,
        height=rows,
        width=cols,
        transform=transform,
        crs=georef.crs,
        dtype="uint8",
        nodata=NODATA,
        overview_resampling="nearest",
    ) as out:
        out.write((0, rows, 0, cols), classes)
    log.info(
        "%s: semantics %s at 1/%d (%d x %d cells): %s",
        record.name,
        applied,
        factor,
        rows,
        cols,
        {name: round(float((classes == k).mean()), 3) for k, name in enumerate(CLASSES)},
    )
    return raster


def read_semantics(path: Path, *, height: int, width: int, applied: str) -> SemanticsRaster:
    """The class raster written by :func:`predict_semantics`."""
    with rasterio.open(path) as ds:
        classes = ds.read(1)
    return SemanticsRaster(classes, height / classes.shape[0], width / classes.shape[1], applied)


def keep_pixels(
    raster: SemanticsRaster,
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
    keep_on: tuple[str, ...],
) -> NDArray[np.bool_]:
    """Skeleton pixels on the kept surfaces and away from no data."""
    codes = [CLASSES.index(name) for name in keep_on]
    cls = raster.at(rows, cols)
    return np.isin(cls, codes) & ~raster.near_nodata_at(rows, cols)


def surface_of(
    raster: SemanticsRaster, vertex_rows: Any, vertex_cols: Any, crack: Any, n: int
) -> list[str]:
    """Majority surface of each crack from its vertices (pixel coordinates)."""
    cls = raster.at(np.asarray(vertex_rows), np.asarray(vertex_cols))
    crack = np.asarray(crack, np.int64)
    votes = np.stack(
        [np.bincount(crack, weights=(cls == k).astype(float), minlength=n) for k in range(3)]
    )
    names = np.array(CLASSES, dtype=object)
    out = names[votes.argmax(0)] if n else np.zeros(0, dtype=object)
    out[votes.sum(0) == 0] = "nodata"
    return list(out)


__all__ += ["surface_of", "wall_pixels"]
