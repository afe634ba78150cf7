"""Raster IO: raster headers and lazy windowed reads of input images.

The only place (with the rest of :mod:`cracksurvey.io`) that opens raster files; the outputs are
written by :mod:`cracksurvey.io.cog`.

Reading: :func:`describe_raster` opens an image once to check it and describe it
(:class:`RasterHeader`, picklable, sent to workers; survey discovery reads the same header
with :func:`read_header`); :class:`RasterSource` reads in-image windows,
which :func:`cracksurvey.tiling.read_window_reflect` turns into boundless reflect-padded reads.

**Camera orientation.** A photo whose EXIF orientation says it is stored rotated or mirrored (a
camera held upright stores a landscape grid and tags it "rotate 90°") is read upright, as every
photo viewer shows it: headers give the upright size and every read returns upright pixels, so
the façade semantics see storeys the right way up and the crack layer's "up" is the façade's.
Only where the image has no georeferencing of its own: a world file or GeoTIFF tags define the
stored grid, and the EXIF tag is then ignored (with a log line).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from ..errors import InputRasterError

log = logging.getLogger(__name__)

GDAL_CACHEMAX_BYTES = 64 * 2**20
"""GDAL block cache while reading and writing; GDAL's default is 5 % of RAM.

In bytes: rasterio passes an integer straight to ``GDALSetCacheMax64``, so ``64`` would mean
64 bytes (no cache: every partially written block is flushed and re-read). The COG copy at the
end holds about twice the cache on top, so a larger cache costs memory without saving time
(docs/performance.md); partially written blocks that leave the cache cost little because the
temporary file is uncompressed."""

TILE_READ_CACHE_BYTES = 16 * 2**20
"""GDAL block cache of a worker reading tile windows: a tile decodes each block once, and
neighbouring tiles (which share the halo) mostly run on other workers; the default cache
would fill to its cap in every worker of a large image and stay there."""

_SUPPORTED_KINDS = "uint8, uint16, int16, uint32, int32, float32, float64"


@dataclass(frozen=True)
class RasterHeader:
    """What a raster file says about itself, without its pixels (picklable, small).

    The one description of a raster's header in the package: survey discovery, the engine and
    the report read it.

    Attributes
    ----------
    path : str
    height, width : int
        Pixels.
    band_count : int
    dtype : str
        numpy dtype name of the first band.
    nodata : float or None
    alpha_band : int or None
        0-based index of the alpha band (colour interpretation ``alpha``), if any.
    transform : affine.Affine
        Pixel to map/façade coordinates (identity when the image has none).
    crs : rasterio.crs.CRS or None
    driver : str
        GDAL driver short name (``GTiff``, ``JPEG``, ``PNG`` ...).
    orientation : int
        The EXIF orientation (1-8) the reads apply: 1 reads the grid as stored; 5-8 swap
        ``height`` and ``width`` against the stored grid (module docstring).
    """

    path: str
    height: int
    width: int
    band_count: int
    dtype: str
    nodata: float | None
    alpha_band: int | None
    transform: Affine
    crs: CRS | None
    driver: str = ""
    orientation: int = 1

    @property
    def n_pixels(self) -> int:
        return self.height * self.width


#: EXIF orientation -> (transpose, flip rows, flip columns) that turn the stored grid upright:
#: the stored array is transposed first (its rows become columns), then flipped.
_ORIENTATIONS: dict[int, tuple[bool, bool, bool]] = {
    1: (False, False, False),
    2: (False, False, True),  # mirrored left-right
    3: (False, True, True),  # rotated 180 degrees
    4: (False, True, False),  # mirrored top-bottom
    5: (True, False, False),  # transposed
    6: (True, False, True),  # stored rotated 90 degrees anticlockwise: turn it clockwise
    7: (True, True, True),  # transversed
    8: (True, True, False),  # stored rotated 90 degrees clockwise: turn it anticlockwise
}


def exif_orientation(ds: rasterio.io.DatasetReader) -> int:
    """The EXIF orientation the reads of ``ds`` apply (1: the grid as stored).

    The tag counts only where the image has no georeferencing of its own (identity transform,
    no CRS, no GCPs): a world file or GeoTIFF tags describe the stored grid.
    """
    try:
        value = int(str(ds.tags().get("EXIF_Orientation", "1")).strip() or 1)
    except ValueError:
        return 1
    if value not in _ORIENTATIONS or value == 1:
        return 1
    if ds.transform != Affine.identity() or ds.crs is not None or ds.gcps[0]:
        log.info(
            "%s: EXIF orientation %d ignored: the image's georeferencing describes the stored grid",
            ds.name,
            value,
        )
        return 1
    return value


def upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """A stored ``(bands, rows, cols)`` array turned upright for ``orientation`` (a view)."""
    transpose, flip_rows, flip_cols = _ORIENTATIONS[orientation]
    if transpose:
        array = array.transpose(0, 2, 1)
    if flip_rows:
        array = array[:, ::-1, :]
    if flip_cols:
        array = array[:, :, ::-1]
    return array


def stored_window(
    orientation: int, height: int, width: int, row0: int, row1: int, col0: int, col1: int
) -> tuple[int, int, int, int]:
    """The stored grid's window ``(row0, row1, col0, col1)`` that holds an upright window.

    ``height`` and ``width`` are the upright image's. :func:`upright` of the stored window's
    pixels is the upright window.
    """
    transpose, flip_rows, flip_cols = _ORIENTATIONS[orientation]
    if flip_rows:
        row0, row1 = height - row1, height - row0
    if flip_cols:
        col0, col1 = width - col1, width - col0
    return (col0, col1, row0, row1) if transpose else (row0, row1, col0, col1)


def read_header(ds: rasterio.io.DatasetReader) -> RasterHeader:
    """The header of an open dataset (no check: see :func:`describe_raster`); its size is the
    upright image's (:func:`exif_orientation`)."""
    alpha = [i for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
    orientation = exif_orientation(ds)
    swap = _ORIENTATIONS[orientation][0]
    return RasterHeader(
        path=str(ds.name),
        height=ds.width if swap else ds.height,
        width=ds.height if swap else ds.width,
        band_count=ds.count,
        dtype=np.dtype(ds.dtypes[0]).name,
        nodata=ds.nodata,
        alpha_band=alpha[0] if alpha else None,
        transform=ds.transform,
        crs=ds.crs,
        driver=str(ds.driver),
        orientation=orientation,
    )


def _input_error(path: str | Path, what: str) -> InputRasterError:
    return InputRasterError(
        f"{path}: {what}; expected a readable GeoTIFF/JPEG/PNG raster with 1, 3 or 4 bands "
        f"({_SUPPORTED_KINDS}) - re-export the image or remove it from the survey"
    )


def _gdal_detail(exc: BaseException) -> str:
    """The most specific message in an exception chain (GDAL's, not rasterio's wrapper)."""
    messages = []
    while exc is not None:
        messages.append(str(exc).strip())
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    useful = [m for m in messages if m and "See previous exception" not in m]
    return useful[-1] if useful else "unknown GDAL error"


def open_quietly(path: str | Path, mode: str = "r") -> rasterio.io.DatasetReader:
    """rasterio.open; a JPEG/PNG without georeferencing is expected here (the survey supplies
    its georeferencing), so rasterio's NotGeoreferencedWarning is not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, mode)


def describe_raster(path: str | Path) -> RasterHeader:
    """Open an image, check it can be processed, and describe it.

    Raises
    ------
    InputRasterError
        The file is missing, not a raster, empty, or has an unsupported data type.
    """
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHEMAX_BYTES), open_quietly(path) as ds:
            if ds.count < 1 or ds.height < 1 or ds.width < 1:
                raise _input_error(path, f"{ds.count} band(s) of {ds.height}x{ds.width} pixels")
            dtype = np.dtype(ds.dtypes[0])
            if dtype.kind not in "uif" or len(set(ds.dtypes)) != 1:
                raise _input_error(path, f"band data types {ds.dtypes} are not supported")
            header = dataclasses.replace(read_header(ds), path=str(path))
            if ds.count > 4 or (ds.count == 4 and header.alpha_band is None):
                log.info("%s: %d bands without alpha; using bands 1-3 as RGB", path, ds.count)
            return header
    except RasterioError as exc:
        raise _input_error(path, f"cannot be opened ({exc})") from exc


class RasterSource:
    """An open input image that reads in-image windows (a context manager).

    Not thread-safe: open one per thread/task (opening a GeoTIFF costs about a millisecond).

    Parameters
    ----------
    path : str or Path
    cache_bytes : int
        GDAL block cache while open (process-wide in GDAL). A worker that only reads tile
        windows needs little (:data:`TILE_READ_CACHE_BYTES`).
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = GDAL_CACHEMAX_BYTES) -> None:
        self.path = str(path)
        self._env = rasterio.Env(GDAL_CACHEMAX=cache_bytes)
        self._env.__enter__()
        try:
            self._ds = open_quietly(self.path)
        except RasterioError as exc:
            self._env.__exit__(None, None, None)
            raise _input_error(path, f"cannot be opened ({exc})") from exc
        self.orientation = exif_orientation(self._ds)
        swap = _ORIENTATIONS[self.orientation][0]
        #: The upright image's size (the stored grid's, swapped for orientations 5-8).
        self.height = self._ds.width if swap else self._ds.height
        self.width = self._ds.height if swap else self._ds.width

    def _upright(self, stored: np.ndarray) -> np.ndarray:
        """Pixels read from the stored grid, turned upright (:func:`upright`)."""
        if self.orientation == 1:
            return stored
        return np.ascontiguousarray(upright(stored, self.orientation))

    @property
    def driver(self) -> str:
        """GDAL driver short name (``GTiff``, ``JPEG``, ``PNG`` ...)."""
        return str(self._ds.driver)

    def read(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """All bands of an in-image window, ``(bands, row1-row0, col1-col0)``.

        Raises
        ------
        InputRasterError
            The window cannot be decoded (a corrupt or truncated file).
        """
        if self.orientation != 1:
            r0, r1, c0, c1 = stored_window(
                self.orientation, self.height, self.width, row0, row1, col0, col1
            )
        else:
            r0, r1, c0, c1 = row0, row1, col0, col1
        try:
            stored = self._ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
            return self._upright(stored)
        except RasterioError as exc:
            error = _input_error(
                self.path,
                f"rows {row0}-{row1}, cols {col0}-{col1} cannot be decoded, the file is corrupt "
                f"or truncated ({_gdal_detail(exc)})",
            )
        # Raised without the GDAL exception chained: it does not survive pickling from a worker.
        raise error

    def read_overview(self, *, max_side_px: int = 1024) -> np.ndarray:
        """A decimated read of the whole image, longest side at most ``max_side_px``.

        Uses the file's overviews when it has them (nearest-neighbour decimation otherwise).
        """
        ds = self._ds
        factor = max(1, -(-max(ds.height, ds.width) // max_side_px))
        shape = (ds.count, max(1, ds.height // factor), max(1, ds.width // factor))
        try:
            stored = ds.read(out_shape=shape, resampling=Resampling.nearest)
            return self._upright(stored)
        except RasterioError as exc:
            error = _input_error(self.path, f"cannot be decoded ({_gdal_detail(exc)})")
        raise error

    def read_decimated(self, rows: int, cols: int) -> np.ndarray:
        """The whole image resampled to ``(bands, rows, cols)`` by block averaging.

        Uses the file's overviews when it has them; memory holds only the result.
        """
        swap = _ORIENTATIONS[self.orientation][0]
        shape = (self._ds.count, cols, rows) if swap else (self._ds.count, rows, cols)
        try:
            stored = self._ds.read(out_shape=shape, resampling=Resampling.average)
            return self._upright(stored)
        except RasterioError as exc:
            error = _input_error(self.path, f"cannot be decoded ({_gdal_detail(exc)})")
        raise error

    def close(self) -> None:
        self._ds.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_raster(path: str | Path) -> RasterSource:
    """Open an image for windowed reads (nothing is read until :meth:`RasterSource.read`)."""
    return RasterSource(path)
